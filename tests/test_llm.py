"""worldsim.llm: prompt, local model, OpenAI-compatible client, background worker.

Nothing here touches the network: the local model is a tiny random GPT-2 with a
word-level tokenizer built in the test, the server is an http.server on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from worldsim.llm import (
    BackgroundLLM,
    LLMError,
    LocalTransformersLLM,
    OpenAICompatibleLLM,
    format_prompt,
    make_llm,
)

SCENE = {
    "task": "reacher",
    "state": {
        "joint_angle_deg": [12.0, -40.0],
        "fingertip_cm": [3.1, 5.0],
        "target_cm": [-4.0, 6.2],
    },
    "distance_to_goal_cm": 7.3,
    "success": False,
}
QUESTION = "How far is the fingertip from the target?"


# --- format_prompt -------------------------------------------------------------------------------


def test_prompt_holds_question_and_every_flattened_fact():
    prompt = format_prompt(SCENE, QUESTION)
    lines = prompt.splitlines()
    facts = [
        "distance_to_goal_cm: 7.3",
        "state.fingertip_cm: [3.1, 5.0]",
        "state.joint_angle_deg: [12.0, -40.0]",
        "state.target_cm: [-4.0, 6.2]",
        "success: False",
        "task: reacher",
    ]
    for fact in facts:
        assert fact in lines
    assert [line for line in lines if line in facts] == facts  # sorted
    assert "only the facts" in lines[0]
    assert lines[-2:] == [f"Question: {QUESTION}", "Answer:"]


def test_prompt_is_independent_of_key_order():
    reordered = {
        "success": False,
        "distance_to_goal_cm": 7.3,
        "state": dict(reversed(list(SCENE["state"].items()))),
        "task": "reacher",
    }
    assert format_prompt(reordered, QUESTION) == format_prompt(SCENE, QUESTION)


@pytest.mark.parametrize("question", ["", "   \n"])
def test_prompt_rejects_an_empty_question(question):
    with pytest.raises(ValueError, match="empty"):
        format_prompt(SCENE, question)


# --- LocalTransformersLLM ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 1-layer random GPT-2 and a word-level tokenizer, saved like any HF model folder."""
    pytest.importorskip("transformers")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["[UNK]", "[EOS]"] + sorted(
        set(format_prompt(SCENE, QUESTION).replace(":", " : ").split())
    )
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]")
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=32, n_positions=256, vocab_size=len(vocab),
        bos_token_id=1, eos_token_id=1,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny_llm")
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_dir) -> LocalTransformersLLM:
    return LocalTransformersLLM(tiny_model_dir, max_new_tokens=6)


def test_local_model_answers_greedily(tiny_llm):
    first = tiny_llm.answer(SCENE, QUESTION)
    assert isinstance(first, str)
    assert first == first.strip()
    assert tiny_llm.answer(SCENE, QUESTION) == first


def test_local_model_missing_folder(tmp_path):
    with pytest.raises(LLMError, match="local folder") as err:
        LocalTransformersLLM(tmp_path / "no_such_model")
    assert "no_such_model" in str(err.value)


def test_local_model_folder_without_a_model(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(LLMError, match="could not load"):
        LocalTransformersLLM(tmp_path)


def test_local_model_without_transformers_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(LLMError, match=r"pip install 'worldsim\[llm\]'"):
        LocalTransformersLLM(tmp_path)


# --- OpenAICompatibleLLM -------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        mode = server.mode
        if mode == "slow":
            server.release.wait(2.0)
        status, payload = 200, b""
        if mode in ("ok", "slow"):
            reply = {"choices": [{"message": {"role": "assistant", "content": " 7.3 cm \n"}}]}
            payload = json.dumps(reply).encode()
        elif mode == "error":
            status, payload = 500, b'{"error": {"message": "model crashed"}}'
        elif mode == "garbage":
            payload = b"<html>not json</html>"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (timeout test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.mode, srv.release = [], "ok", threading.Event()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    srv.base_url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def test_server_gets_the_request_and_answer_is_returned(server):
    llm = OpenAICompatibleLLM(server.base_url + "/", model="big-model", timeout_s=5)
    assert llm.answer(SCENE, QUESTION) == "7.3 cm"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert "Authorization" not in request["headers"]
    body = json.loads(request["body"])
    assert body["model"] == "big-model"
    assert body["temperature"] == 0
    assert body["max_tokens"] == 64
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    user = body["messages"][1]["content"]
    assert QUESTION in user and "state.fingertip_cm: [3.1, 5.0]" in user


def test_api_key_is_sent(server, monkeypatch):
    monkeypatch.delenv("WORLDSIM_LLM_API_KEY", raising=False)
    OpenAICompatibleLLM(server.base_url, model="m", api_key="sk-test").answer(SCENE, QUESTION)
    monkeypatch.setenv("WORLDSIM_LLM_API_KEY", "sk-env")
    OpenAICompatibleLLM(server.base_url, model="m").answer(SCENE, QUESTION)
    auth = [r["headers"].get("Authorization") for r in server.requests]
    assert auth == ["Bearer sk-test", "Bearer sk-env"]


def test_server_error_status(server):
    server.mode = "error"
    with pytest.raises(LLMError, match="500") as err:
        OpenAICompatibleLLM(server.base_url, model="m").answer(SCENE, QUESTION)
    assert server.base_url in str(err.value) and "model crashed" in str(err.value)


def test_server_answer_not_json(server):
    server.mode = "garbage"
    with pytest.raises(LLMError, match="not JSON") as err:
        OpenAICompatibleLLM(server.base_url, model="m").answer(SCENE, QUESTION)
    assert "not json</html>" in str(err.value)


def test_slow_server_times_out(server):
    server.mode = "slow"
    llm = OpenAICompatibleLLM(server.base_url, model="m", timeout_s=0.3)
    start = time.monotonic()
    with pytest.raises(LLMError, match="0.3 s"):
        llm.answer(SCENE, QUESTION)
    assert time.monotonic() - start < 1.5


def test_closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(LLMError, match=f"127.0.0.1:{port}"):
        OpenAICompatibleLLM(f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2).answer(
            SCENE, QUESTION
        )


def test_only_http_urls():
    with pytest.raises(ValueError, match="file:///etc"):
        OpenAICompatibleLLM("file:///etc", model="m")


# --- BackgroundLLM -------------------------------------------------------------------------------


class _Fake:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.release, self.seen = delay_s, threading.Event(), []

    def answer(self, scene, question):
        self.seen.append(dict(scene))
        self.release.wait(self.delay_s)  # a 1 s model that the test can cut short
        return f"{scene['task']}: {question}"


def test_background_never_blocks_the_caller():
    fake = _Fake(delay_s=1.0)
    with BackgroundLLM(fake) as bg:
        start = time.monotonic()
        future = bg.submit(SCENE, QUESTION)
        assert time.monotonic() - start < 0.1
        assert not future.done()
        start = time.monotonic()
        with pytest.raises(LLMError, match="0.2 s"):
            bg.ask(SCENE, QUESTION, timeout_s=0.2)
        assert time.monotonic() - start < 0.6
        fake.release.set()
        assert future.result(timeout=2) == f"reacher: {QUESTION}"


def test_background_fast_answer_and_scene_snapshot():
    fake = _Fake()
    scene = {"task": "reacher"}
    with BackgroundLLM(fake) as bg:
        assert bg.ask(scene, "hi", timeout_s=2) == "reacher: hi"
        future = bg.submit(scene, "again")
        scene["task"] = "pusher"  # the caller's loop moves on
        assert future.result(timeout=2) == "reacher: again"


# --- make_llm ------------------------------------------------------------------------------------


def test_make_llm_picks_the_backend(tiny_model_dir):
    assert isinstance(make_llm(str(tiny_model_dir)), LocalTransformersLLM)
    server = make_llm("http://127.0.0.1:1/v1", timeout_s=3, model="x")
    assert isinstance(server, OpenAICompatibleLLM)
    assert server.url == "http://127.0.0.1:1/v1/chat/completions"
    assert (server.timeout_s, server.model) == (3, "x")


@pytest.mark.parametrize("spec", ["ftp://x", "no/such/folder", ""])
def test_make_llm_rejects_other_specs(spec):
    with pytest.raises(ValueError, match="local model folder") as err:
        make_llm(spec)
    assert repr(spec) in str(err.value) and "http://" in str(err.value)
