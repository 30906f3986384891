"""Ask a larger language model, chosen by the user, questions about a generated scene.

The world model must produce frames at a steady rate, and a big model answers in
seconds (or not at all, if its server is down), so the frame loop never waits on
one: `BackgroundLLM` runs every call on its own worker thread and every network
call has a timeout. The big model never sees pixels, only the structured facts
that the small reasoner extracted from the frames (`format_prompt`), so it can
answer only from what the reasoner saw, and any model — a local Hugging Face
folder or an OpenAI-compatible server — can be plugged in (`make_llm`).
"""

from __future__ import annotations

import concurrent.futures
import copy
import http.client
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

API_KEY_ENV = "WORLDSIM_LLM_API_KEY"
INSTRUCTION = (
    "Answer the question about a simulated robot scene using only the facts given; "
    "if they do not say, answer that you do not know."
)
SYSTEM_MESSAGE = "You answer questions about a simulated robot scene briefly, from the facts given."
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64
"""Deepest JSON nesting read from a server (json.loads recurses: 200k levels raise
RecursionError)."""


def _json_depth(raw: bytes) -> int:
    """Deepest [ / { nesting of a JSON text, counted without parsing it (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


class LLMError(RuntimeError):
    """A language model could not be loaded, reached, or gave no usable answer."""


class Answerer(Protocol):
    def answer(self, scene: Mapping[str, Any], question: str) -> str: ...


def _plain(value: Any) -> Any:
    """numpy / torch values as Python ones; dicts inside lists with sorted keys."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _flatten(scene: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    facts = []
    for key, value in scene.items():
        name = prefix + _one_line(str(key))
        if isinstance(value, Mapping) and value:
            facts += _flatten(value, name + ".")
        else:
            value = _plain(value)
            facts.append((name, _one_line(value if isinstance(value, str) else repr(value))))
    return facts


def format_prompt(scene: Mapping[str, Any], question: str) -> str:
    """The prompt for `question` about `scene`: instruction, sorted facts, question.

    Nested dicts become dotted keys (`state.fingertip_cm: [3.1, 5.0]`); the text
    does not depend on the order in which keys were inserted.
    """
    if not question or not question.strip():
        raise ValueError("the question is empty")
    facts = sorted(_flatten(scene))
    lines = [INSTRUCTION, "Facts:"]
    lines += [f"{key}: {value}" for key, value in facts] or ["(none)"]
    lines += [f"Question: {question.strip()}", "Answer:"]
    return "\n".join(lines)


def _snippet(text: str | bytes, limit: int = 200) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


class LocalTransformersLLM:
    """A causal language model from a local Hugging Face folder; nothing is downloaded."""

    def __init__(self, path: str | Path, max_new_tokens: int = 64, device: str = "cpu") -> None:
        self.path = Path(path).expanduser()
        self.max_new_tokens = max_new_tokens
        self.device = device
        if not self.path.is_dir():
            raise LLMError(
                f"no model folder at {self.path}: pass a local folder saved with "
                "save_pretrained (config, weights, tokenizer); models are never downloaded"
            )
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise LLMError(
                f"a local model needs the optional dependency transformers ({e}): "
                "pip install 'worldsim[llm]'"
            ) from e
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(str(self.path), local_files_only=True)
            self.model.to(device).eval()
        except Exception as e:  # transformers raises OSError, ValueError, ... for bad folders
            raise LLMError(f"could not load a causal language model from {self.path}: {e}") from e
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = self.tokenizer.eos_token_id if pad is None else pad

    def answer(self, scene: Mapping[str, Any], question: str) -> str:
        """Greedy continuation of `format_prompt(scene, question)`, without the prompt."""
        import torch

        prompt = format_prompt(scene, question)
        try:
            inputs = self.tokenizer(prompt, return_tensors="pt").to(self.device)
            with torch.no_grad():
                out = self.model.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=self.pad_token_id,
                )
        except Exception as e:
            raise LLMError(f"{self.path}: generation failed: {e}") from e
        new = out[0, inputs["input_ids"].shape[1] :]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()


class OpenAICompatibleLLM:
    """A model behind an OpenAI-compatible `/chat/completions` endpoint (standard library only).

    One wall-clock deadline of `timeout_s` covers the whole exchange (connecting,
    sending, the status line and headers, the body): a watchdog shuts the socket down
    when it passes, so a server that is down, refuses, never answers or trickles its
    answer a byte at a time costs at most `timeout_s` (name resolution is not covered).
    Redirects are errors (they would resend the API key to wherever they point); the
    body is bounded by MAX_RESPONSE_BYTES and its JSON nesting by MAX_JSON_DEPTH.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_tokens: int = 64,
    ) -> None:
        if urllib.parse.urlsplit(base_url).scheme.lower() not in ("http", "https"):
            raise ValueError(f"base_url {base_url!r} is not an http:// or https:// URL")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key or os.environ.get(API_KEY_ENV) or None
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens

    def _post(self, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = urllib.parse.urlsplit(self.url)
        https = url.scheme.lower() == "https"
        conn = (http.client.HTTPSConnection if https else http.client.HTTPConnection)(
            url.hostname, url.port, timeout=self.timeout_s
        )
        expired = threading.Event()

        def expire() -> None:  # wakes any blocked recv: it returns EOF or raises OSError
            expired.set()
            if conn.sock is not None:
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.timeout_s, expire)
        watchdog.daemon = True
        watchdog.start()
        timed_out = LLMError(f"{self.url}: no answer within timeout_s={self.timeout_s} s")
        try:
            path = url.path + (f"?{url.query}" if url.query else "")
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                detail = _snippet(response.read(200))
                raise LLMError(
                    f"{self.url} answered HTTP {response.status} {response.reason}, expected "
                    f"200: {detail}"
                )
            chunks, size = [], 0
            while chunk := response.read1(65536):  # returns what one recv brought
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise LLMError(f"{self.url}: response larger than {MAX_RESPONSE_BYTES} B")
            if expired.is_set():  # the shutdown read as the end of the body
                raise timed_out
            return b"".join(chunks)
        except LLMError:
            if expired.is_set():
                raise timed_out from None
            raise
        except (TimeoutError, http.client.HTTPException, OSError) as e:
            if expired.is_set() or isinstance(e, TimeoutError):
                raise timed_out from e
            if isinstance(e, ConnectionRefusedError | socket.gaierror):
                raise LLMError(f"could not reach {self.url}: {e}") from e
            raise LLMError(f"{self.url}: request failed: {type(e).__name__}: {e}") from e
        finally:
            watchdog.cancel()
            conn.close()

    def answer(self, scene: Mapping[str, Any], question: str) -> str:
        """POST the prompt to `<base_url>/chat/completions`; `choices[0].message.content`."""
        payload = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_MESSAGE},
                {"role": "user", "content": format_prompt(scene, question)},
            ],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        raw = self._post(json.dumps(payload).encode("utf-8"))
        try:
            if _json_depth(raw) > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH}")
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise LLMError(
                f"{self.url}: response is not JSON with choices[0].message.content: {_snippet(raw)}"
            ) from e
        if not isinstance(content, str):
            raise LLMError(f"{self.url}: choices[0].message.content is not text: {_snippet(raw)}")
        return content.strip()


def make_llm(
    spec: str, timeout_s: float = 10.0, model: str = "default"
) -> LocalTransformersLLM | OpenAICompatibleLLM:
    """A local model folder or an `http(s)://` base URL (e.g. `http://localhost:8000/v1`).

    `model` and `timeout_s` apply to a server only.
    """
    scheme = urllib.parse.urlsplit(spec).scheme.lower() if "://" in spec else ""
    if scheme in ("http", "https"):
        return OpenAICompatibleLLM(spec, model=model, timeout_s=timeout_s)
    if not scheme and spec and Path(spec).expanduser().is_dir():
        return LocalTransformersLLM(spec)
    raise ValueError(
        f"LLM spec {spec!r} is neither an existing local model folder nor an "
        "http:// or https:// base URL of an OpenAI-compatible server"
    )


class BackgroundLLM:
    """Runs a model's `answer` on one worker thread so the caller never blocks.

    Calls run one at a time, in order; a call that `ask` gave up on still holds
    the worker until the model returns (or its own timeout fires).
    """

    def __init__(self, llm: Answerer) -> None:
        self.llm = llm
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="worldsim-llm"
        )

    def submit(self, scene: Mapping[str, Any], question: str) -> concurrent.futures.Future[str]:
        """Queue a question; returns at once. The scene is copied, so it may change afterwards."""
        return self._pool.submit(self.llm.answer, copy.deepcopy(scene), question)

    def ask(self, scene: Mapping[str, Any], question: str, timeout_s: float) -> str:
        """The answer, or LLMError if none came within `timeout_s`."""
        future = self.submit(scene, question)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.TimeoutError:
            if future.done() and not future.cancelled():
                return future.result()  # finished just now, or raised a TimeoutError itself
            future.cancel()  # still queued behind another call: drop it
            raise LLMError(f"the language model gave no answer within {timeout_s} s") from None

    def close(self, wait: bool = False) -> None:
        """Drop queued calls and stop the worker (after the running call, if `wait`)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> BackgroundLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
