"""The reasoner in a child process, for the engine's per-frame reads at B=1.

On a worker thread the reasoner's ~60 small ops and the engine's ~300 hand the GIL
back and forth, and each handoff costs a context switch: at B=1 on 2 cores that,
not arithmetic, made the reasoner add 22-28% to a step (~10% from a child
process). A child process has its own interpreter; a frame's latents (4 KB) and
the estimate go through a pipe.

The child is started with the "spawn" method, which imports the parent's main
module: scripts that build such an engine need the usual
`if __name__ == "__main__":` guard, and cannot run inside a daemonic process (such as
a multiprocessing vector env's workers), which may not start children.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Future

import numpy as np
import torch

from worldsim.model.reasoner import Reasoner, build_reasoner


def _serve(conn, config: dict, state: dict[str, np.ndarray]) -> None:
    torch.set_num_threads(1)  # the parent's engine keeps the other cores
    reasoner = build_reasoner(config)
    reasoner.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    reasoner.eval()
    with torch.no_grad():
        while (msg := conn.recv()) is not None:
            z, prev = msg
            prev = None if prev is None else torch.from_numpy(prev)
            conn.send(reasoner.read(torch.from_numpy(z), prev).numpy())


class _Reply(Future):
    """The estimate of one request, received from the pipe when first asked for."""

    def __init__(self, owner: ReasonerProcess) -> None:
        super().__init__()
        self._owner = owner

    def result(self, timeout: float | None = None):
        if not self.done():
            self._owner._receive(self)
        return super().result(timeout)


class ReasonerProcess:
    """`submit(z, prev)`: a future of `reasoner.read(z, prev)`, computed in a child
    process. The request goes out at once, from the caller's thread (no worker thread
    that would take the GIL while the engine steps); the reply is read on `result()`."""

    def __init__(self, reasoner: Reasoner) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        state = {k: v.detach().cpu().numpy() for k, v in reasoner.state_dict().items()}
        self._proc = ctx.Process(
            target=_serve, args=(child, reasoner.config_dict(), state), daemon=True
        )
        self._proc.start()
        child.close()
        self._pending: _Reply | None = None

    def submit(self, z: torch.Tensor, prev: torch.Tensor | None) -> Future:
        if self._pending is not None:  # replies come back in order
            self._pending.result()
        self._conn.send((z.cpu().numpy(), None if prev is None else prev.cpu().numpy()))
        self._pending = _Reply(self)
        return self._pending

    def _receive(self, reply: _Reply) -> None:
        try:
            reply.set_result(torch.from_numpy(self._conn.recv()))
        except EOFError:
            code = self._proc.exitcode
            reply.set_exception(RuntimeError(f"the reasoner process exited (code {code})"))
        if self._pending is reply:
            self._pending = None

    def close(self) -> None:
        if self._pending is not None:
            self._pending.result()
        if self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.terminate()
        self._conn.close()
