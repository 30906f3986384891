"""FrameEngine: the real-time loop of the world model, batched over B worlds.

reset(context frames and their scene states) encodes the frames and writes them
into the ring KV cache; step(actions) moves every world's state on by the learned
transition, then denoises the next frame's latents from that state in S Euler
steps of the flow (attending to the cache) and decodes pixels only when asked.
The state is the world model's own: after the reset nothing outside the model
touches it. Each frame enters
the cache once, in the same forward pass as the next frame's first Euler step,
so S = 1 costs one transformer pass per frame. Per-world reset masks serve
vector environments.

With a reasoner, every frame's scene estimate is computed on a worker thread
while the next frame is denoised: `StepOutput.scene` is a future, so the frame
loop never waits for it (each estimate needs the one before, which is done by
then). The worker runs its torch ops on one thread: with torch's default it
started a second OpenMP team, and on 2 cores the two teams throttled each
other's spin-waits, doubling the B=1 step time of every engine in the process.
With `reasoner_process=True` the reads go to a child process instead
(worldsim.reasoner_process) and the step runs on one intra-op thread fewer: for a
reader of many small ops (the encoder reader) two Python threads pass the GIL back
and forth around every op. The MLP reader's five ops cost less on the thread.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from worldsim.checkpoint import CheckpointError
from worldsim.model.dynamics import Dynamics, KVCache
from worldsim.model.reasoner import Reasoner
from worldsim.model.tokenizer import Tokenizer
from worldsim.neuron import torch_device
from worldsim.scene import SceneLayout


@dataclass
class EngineConfig:
    steps: int = 1
    """S: Euler steps of the flow per frame."""
    tau_ctx: float = 0.9
    """Flow time of frames in the cache: context is slightly noised so errors do not compound."""
    seed: int = 0
    """Seed of the sampling noise."""
    reasoner_process: bool = False
    """Read frames in a child process (worldsim.reasoner_process), the step running on one
    intra-op thread fewer meanwhile. For the encoder reader at B=1 on 2 cores: ~10% of a
    step instead of 22-28% on the thread; the MLP reader costs less on the thread (~6%)
    than here (~15%), and larger batches need every core for the step: leave it off."""
    compile: bool = False
    """torch.compile the transformer pass and the decoder (inductor): the first steps of
    each batch size compile for some seconds, then a B=1 step runs fewer, fused ops."""
    graph: bool = False
    """Serve each step as one CUDA graph replay (per batch size and decode flag, captured on
    the first such step): the transformer pass, the Euler steps and the decoder are one
    launch, which is what a GPU needs at small batches (B=1 eager on an H200: 22 ms, all
    kernel launches). On other devices the same static-buffer path runs eagerly (what the
    CPU tests check). Not with compile."""
    dtype: str = "float32"
    """float32 | bfloat16: the transformer pass and the decoder under autocast (the state
    transition stays float32). bfloat16 is for GPUs: on a CPU without AVX512-BF16/AMX
    (lscpu) bf16 matmuls ran ~10x slower than fp32."""
    noise: str = "per_world"
    """per_world: world i draws from its own generator (seed + i), so a world's dream does
    not depend on its batch, at one draw per world per step; batched: one generator for the
    whole batch, one draw per step (for large batches on a GPU, where per-world draws are
    one launch each)."""
    threads: int = 0
    """torch intra-op threads where the user-facing entry points (envs, play, dream) make
    an engine; 0: the cores other processes leave idle then, unless OMP_NUM_THREADS or
    torch.set_num_threads chose a count (worldsim.threads: on 2 cores beside one busy
    process, 2 threads made a B=1 step 2x slower than 1). The engine itself never changes
    the process's threads (a training run's evaluation engines leave them alone)."""


class NonFiniteOutput(CheckpointError):
    """A step produced NaN or inf (checked once per step, before anything is returned): in
    practice corrupted weights, so a checkpoint error (the CLI reports it without a trace)."""


@dataclass
class StepOutput:
    latents: torch.Tensor | None  # (B, N, C); None from the state-only steps
    state: torch.Tensor  # (B, dim) the model's scene state of this frame (host)
    reward: torch.Tensor  # (B,)
    terminated: torch.Tensor  # (B,) bool
    frames: torch.Tensor | None  # (B, H, W, 3) uint8 when decoded
    scene: Future | None = None  # -> (B, F) reasoner state features of this frame


def _one_intra_op_thread() -> None:
    torch.set_num_threads(1)
    torch.get_num_threads()  # fixes this thread's count before the process default returns


def _single_threaded_worker() -> ThreadPoolExecutor:
    """A one-thread executor whose torch ops use one intra-op thread; the caller's own
    thread count, and the default new threads start from, are left as they were."""
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(1, initializer=_one_intra_op_thread)
    pool.submit(int).result()  # start the worker (and run its initializer) now
    torch.set_num_threads(threads)
    return pool


class FrameEngine:
    def __init__(
        self,
        tokenizer: Tokenizer,
        dynamics: Dynamics,
        batch: int,
        cfg: EngineConfig | None = None,
        device: str = "cpu",
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        reasoner: Reasoner | None = None,
    ) -> None:
        # "neuron" resolves to the NeuronCore's XLA device (torch-neuronx, imported lazily);
        # the dynamics model's ops then run as NKI kernels (worldsim.kernels)
        device = torch_device(device)
        self.tok = tokenizer.to(device).eval()
        self.reasoner = reasoner.to(device).eval() if reasoner is not None else None
        self.dyn = dynamics.to(device).eval()
        self.cfg = cfg or EngineConfig()
        self._scene: Future | None = None
        self._scene_pool = self._scene_process = None
        if reasoner is not None and self.cfg.reasoner_process:
            if device.type != "cpu":
                raise ValueError(f"reasoner_process=True runs on the CPU only, not {device}")
            from worldsim.reasoner_process import ReasonerProcess

            self._scene_process = ReasonerProcess(self.reasoner)
        elif reasoner is not None:
            self._scene_pool = _single_threaded_worker()
        self.batch, self.device = batch, device
        if self.cfg.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"engine dtype must be float32 or bfloat16, got {self.cfg.dtype!r}")
        if self.cfg.noise not in ("per_world", "batched"):
            raise ValueError(f"engine noise must be per_world or batched, got {self.cfg.noise!r}")
        if self.cfg.graph and self.cfg.compile:
            raise ValueError("engine graph and compile are two ways to the same end: pick one")
        self._graphs: dict[bool, tuple] = {}  # decode flag -> (run, static inputs)
        # the step's two model calls; compiled once per input shape when cfg.compile
        self._transformer_pass, self._decode = self.dyn.step, self.tok.decode_uint8
        if self.cfg.compile:
            self._transformer_pass = torch.compile(self.dyn.step, dynamic=False)
            self._decode = torch.compile(self.tok.decode_uint8, dynamic=False)
        self.cache = KVCache(dynamics.cfg, batch, device)
        # one noise stream per world, so a world's dream does not depend on its batch;
        # drawn on the host where the device has no torch generator (XLA)
        self._gen_device = device if device.type in ("cpu", "cuda") else torch.device("cpu")
        self.gens = [torch.Generator(self._gen_device) for _ in range(batch)]
        self._batch_gen = torch.Generator(self._gen_device)
        self.seed(self.cfg.seed)
        a = dynamics.cfg.action_dim
        self.low = torch.as_tensor(action_low if action_low is not None else -np.inf * np.ones(a))
        self.high = torch.as_tensor(action_high if action_high is not None else np.inf * np.ones(a))
        self.prev_action = torch.zeros(batch, a, device=device)
        self.has_action = torch.zeros(batch, dtype=torch.bool, device=device)
        self.latents = torch.zeros(
            batch, dynamics.cfg.grid**2, dynamics.cfg.latent_dim, device=device
        )
        self.layout = SceneLayout.from_dict(dynamics.cfg.scene)
        self.state = torch.zeros(batch, self.layout.dim, device=device)
        # worlds whose frames were not generated (`step_state`): `step` refuses them
        self.frameless = torch.zeros(batch, dtype=torch.bool)
        # flow times of a step's first pass: [pending frame, new frame from noise]
        self._first_taus = torch.tensor([[self.cfg.tau_ctx, 0.0]], device=device).expand(batch, 2)

    def seed(self, seed: int | list[int]) -> None:
        """World i draws its sampling noise from a generator seeded with seed + i, or with
        seed[i] for a list of one seed per world."""
        seeds = [seed + i for i in range(self.batch)] if isinstance(seed, int) else list(seed)
        for g, s in zip(self.gens, seeds, strict=True):
            g.manual_seed(int(s))
        self._batch_gen.manual_seed(int(seeds[0]))

    def _randn(self, shape: tuple[int, ...], mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *shape[1:]) standard normal noise, row i from world i's generator; worlds
        outside mask get zeros and leave their generator untouched. With noise=batched, one
        draw for the whole batch (masked rows zeroed)."""
        if self.cfg.noise == "batched":
            z = torch.randn(shape, generator=self._batch_gen, device=self._gen_device)
            if mask is not None:
                z[~torch.as_tensor(mask, device=z.device)] = 0
            return z.to(self.device)
        rows = [
            torch.randn(shape[1:], generator=g, device=self._gen_device)
            if mask is None or mask[i]
            else torch.zeros(shape[1:], device=self._gen_device)
            for i, g in enumerate(self.gens)
        ]
        return torch.stack(rows).to(self.device)

    def check_actions(self, actions) -> torch.Tensor:
        # a copy: the engine keeps the action (prev_action) and writes into it on a reset,
        # which must never reach the caller's array
        a = torch.tensor(np.asarray(actions, dtype=np.float32), device=self.device)
        want = (self.batch, self.dyn.cfg.action_dim)
        if a.shape != want:
            raise ValueError(f"actions must have shape {want}, got {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        if (a.cpu() < self.low - 1e-6).any() or (a.cpu() > self.high + 1e-6).any():
            raise ValueError(f"actions outside bounds [{self.low.tolist()}, {self.high.tolist()}]")
        return a

    def _noised(self, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Clean latents moved to flow time tau_ctx, as context frames were in training."""
        return self.cfg.tau_ctx * z + (1 - self.cfg.tau_ctx) * noise

    @torch.no_grad()
    def _write(self, z: torch.Tensor, state, prev_action, has_action, mask: torch.Tensor) -> None:
        """Write clean latents z (B, N, C) and states (B, dim) into the cache for the worlds
        in mask (nothing to write when the model attends to no past frames)."""
        if self.dyn.cfg.window == 0:
            return
        b = z.shape[0]
        tau = torch.full((b, 1), self.cfg.tau_ctx, device=self.device)
        args = (
            self._noised(z, self._randn(z.shape, mask))[:, None],
            tau,
            prev_action[:, None],
            has_action[:, None],
            state[:, None],
        )
        if mask.all():
            self._transformer_pass(*args, self.cache, write_first=True)
            return
        # worlds outside the mask keep their cache: write into a copy and merge back
        k, v = self.cache.k.clone(), self.cache.v.clone()
        age, nxt = self.cache.age.clone(), self.cache.next_slot.clone()
        self._transformer_pass(*args, self.cache, write_first=True)
        keep = ~mask
        self.cache.k[:, keep], self.cache.v[:, keep] = k[:, keep], v[:, keep]
        self.cache.age[keep], self.cache.next_slot[keep] = age[keep], nxt[keep]

    def check_states(self, states, frames_shape) -> torch.Tensor:
        want = (*frames_shape[:2], self.layout.dim)
        if states is None:
            raise ValueError(
                f"the world model is state-grounded: reset needs the context frames' scene "
                f"states, states= of shape {want} ({[q.name for q in self.layout.quantities]};"
                " worldsim.scene.SceneLayout.values of a store window or MujocoSim.state())"
            )
        s = torch.as_tensor(np.asarray(states, dtype=np.float32), device=self.device)
        if s.shape != want:
            raise ValueError(f"states must have shape {want}, got {tuple(s.shape)}")
        if not torch.isfinite(s).all():
            raise ValueError("states contain NaN or inf")
        return s

    @torch.no_grad()
    def reset(
        self, frames, actions=None, mask=None, decode: bool = False, states=None
    ) -> StepOutput:
        """Start worlds from real context frames (B, K, H, W, 3) uint8, the K-1 actions
        between them and the frames' scene states (B, K, dim); only worlds where mask is
        True are reset.

        The first K-1 frames go into the cache now; the last one is kept pending and is
        written by the next `step`, in the same pass as the first denoising step."""
        frames = torch.as_tensor(frames, device=self.device)
        b, k = frames.shape[:2]
        if b != self.batch:
            raise ValueError(f"context frames must have batch {self.batch}, got {b}")
        states = self.check_states(states, frames.shape)
        mask = torch.ones(b, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
        self.cache.reset(mask)
        z = self.tok.encode(frames.flatten(0, 1)).view(b, k, *self.latents.shape[1:])
        prev = torch.zeros(b, self.dyn.cfg.action_dim, device=self.device)
        has = torch.zeros(b, dtype=torch.bool, device=self.device)
        if actions is not None:  # (K-1, B, A), so each step's actions are laid out as prev's
            actions = torch.as_tensor(actions, device=self.device).float().transpose(0, 1)
            actions = actions.clone(memory_format=torch.contiguous_format)
        for t in range(k):
            if t > 0 and actions is not None:
                prev = actions[t - 1]
                has = torch.ones(b, dtype=torch.bool, device=self.device)
            if t < k - 1:
                self._write(z[:, t], states[:, t], prev, has, mask)
        self.latents[mask] = z[mask, -1]
        self.state[mask] = states[mask, -1]
        self.frameless[mask.cpu()] = False
        self.prev_action[mask] = prev[mask]
        self.has_action[mask] = has[mask]
        out = StepOutput(
            self.latents.clone(),
            self.state.to("cpu", copy=True),  # the engine updates its own in place
            torch.zeros(b),
            torch.zeros(b, dtype=torch.bool),
            None,
        )
        if self.reasoner is not None:
            out.scene = self._reset_scene(z, mask)
        if decode:
            out.frames = self._decode(self.latents, self.state).cpu()
        return out

    def step(self, actions, decode: bool = True, active=None) -> StepOutput:
        """Generate the next frame of every world under actions (B, A).

        active (B,) bool: worlds whose output will be used; the others (about to be
        reset) draw no sampling noise, so every world's noise stream depends on its own
        history only."""
        if self._scene_process is None:
            return self._step(actions, decode, active)
        threads = torch.get_num_threads()  # leave a core to the reasoner's process
        torch.set_num_threads(max(1, threads - 1))
        try:
            return self._step(actions, decode, active)
        finally:
            torch.set_num_threads(threads)

    def reset_state(self, states, mask=None) -> StepOutput:
        """Start worlds from a scene state (B, dim) alone, for `step_state`: no frame is
        encoded, and `step` refuses these worlds until `reset` gives them frames."""
        s = self.check_states(np.asarray(states)[:, None], (self.batch, 1))[:, 0]
        mask = torch.ones(self.batch, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
        self.state[mask] = s[mask]
        self.prev_action[mask] = 0.0
        self.has_action[mask] = False
        self.frameless[mask] = True
        b = self.batch
        return StepOutput(None, self.state.to("cpu", copy=True), torch.zeros(b),
                          torch.zeros(b, dtype=torch.bool), None)  # fmt: skip

    @torch.no_grad()
    def step_state(self, actions) -> StepOutput:
        """The learned state transition alone: the `state` that `step` gives, bit for bit
        (the transition reads the state and the action, never a frame's latents), without
        the frame transformer, the decoder or the reasoner. For callers that read nothing
        but the state, e.g. a state-observation policy rewarded by the task's formula:
        it trains on the states the full dream gives, at the transition's cost
        (bench/state_dream.py). Frames are not generated: `step` refuses these worlds
        until `reset` gives them frames again. Returns latents=None, zero reward."""
        a = self.check_actions(actions)
        state = self.dyn.transition(self.state, a)
        state_h = state.cpu()
        if not torch.isfinite(state_h).all():
            raise self._non_finite()
        self.state.copy_(state)
        self.prev_action.copy_(a)
        self.has_action.fill_(True)
        self.frameless[:] = True
        b = self.batch
        return StepOutput(None, state_h, torch.zeros(b), torch.zeros(b, dtype=torch.bool), None)

    def _non_finite(self) -> NonFiniteOutput:
        return NonFiniteOutput(
            f"the world model ({getattr(self.dyn, 'source', 'dynamics')}) produced NaN or "
            "inf: its weights are corrupted, its inputs (state, actions) were not finite, or "
            f"its state diverged (last finite state {self.state[0].tolist()} of world 0)"
        )

    @torch.no_grad()
    def _step(self, actions, decode: bool, active) -> StepOutput:
        if self.frameless.any():
            raise RuntimeError(
                f"worlds {self.frameless.nonzero().flatten().tolist()} have no frames (they "
                "took state-only steps or a state-only reset): reset them from frames first"
            )
        a = self.check_actions(actions)
        active = None if active is None else torch.as_tensor(active)
        noise = self._randn(self.latents.shape, active)  # the new frame starts from it
        ctx_noise = self._randn(self.latents.shape, active)  # the pending frame's tau_ctx
        z, state, reward, term, finite, frames = self._run(a, noise, ctx_noise, decode)
        state_h, reward_h, term_h, finite_h, frames_h = self._to_host(
            state, reward, term, finite, frames
        )
        if not finite_h:
            raise self._non_finite()
        self.latents.copy_(z)
        self.state.copy_(state)
        self.prev_action.copy_(a)
        self.has_action.fill_(True)
        if self._graphs:  # a replay's outputs are its static buffers: the caller gets a copy
            z = z.clone()
        scene = self._submit_scene(z) if self.reasoner is not None else None
        # latents stay on the device for the next step; what callers read comes to the host
        return StepOutput(z, state_h, reward_h, term_h, frames_h, scene)

    def _advance(self, a, noise, ctx_noise, decode: bool):
        """The step's device work, read from the engine's buffers (latents, state, previous
        action, cache) and written only to the cache: the transition, the transformer pass
        that stores the pending frame and takes the first Euler step, the other S - 1 steps
        and the decoder. No host sync and no value-dependent shapes, so a CUDA graph
        captures it whole. Returns (latents, state, reward, terminated, finite, frames)."""
        b = self.batch
        taus = torch.linspace(0, 1, self.cfg.steps + 1).tolist()
        ones = torch.ones(b, dtype=torch.bool, device=self.device)
        state = self.dyn.transition(self.state, a)  # the next frame's state comes first
        with self._autocast():
            # pass 1: write the pending frame into the cache and take the first Euler step
            # (a model that attends to no past frames has nothing to write: the new frame)
            pending = (
                self._noised(self.latents, ctx_noise),
                self.prev_action,
                self.has_action,
                self.state,
            )
            passes = [pending, (noise, a, ones, state)]
            if not self.dyn.cfg.window:
                passes = passes[1:]
            zs, acts, has, states = zip(*passes, strict=True)
            clean, reward, term = self._transformer_pass(
                torch.stack(zs, 1),
                self._first_taus[:, -len(passes) :],
                torch.stack(acts, 1),
                torch.stack(has, 1),
                torch.stack(states, 1),
                self.cache,
                write_first=len(passes) == 2,
            )
            clean, reward, term = clean[:, -1].float(), reward[:, -1], term[:, -1]
            z = noise
            for s in range(1, self.cfg.steps):
                # Euler step of the flow: velocity (clean - z) / (1 - tau)
                z = z + (taus[s] - taus[s - 1]) / (1 - taus[s - 1]) * (clean - z)
                tau = torch.full((b, 1), taus[s], device=self.device)
                clean, reward, term = self._transformer_pass(
                    z[:, None], tau, a[:, None], ones[:, None], state[:, None], self.cache
                )
                clean, reward, term = clean[:, 0].float(), reward[:, 0], term[:, 0]
            # the last Euler step lands on the predicted clean latents, kept inside the
            # tokenizer's (tanh) range: unbounded, they grew past 100 over long rollouts
            z = clean.clamp(-1, 1)
            frames = self._decode(z, state) if decode else None
        reward = reward.float()
        finite = torch.isfinite(clean.sum() + state.sum() + reward.sum())  # one reduction
        return z, state, reward, torch.sigmoid(term.float()) > 0.5, finite, frames

    def _autocast(self):
        if self.cfg.dtype == "float32":
            return contextlib.nullcontext()
        # no cache of cast weights under graph capture (CUDA graphs' documented rule)
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cfg.graph
        )

    def _run(self, a, noise, ctx_noise, decode: bool):
        """`_advance`, eagerly or (engine graph=True) as a replay of its captured graph."""
        if not self.cfg.graph:
            return self._advance(a, noise, ctx_noise, decode)
        if decode not in self._graphs:
            self._graphs[decode] = self._capture(decode)
        run, inputs = self._graphs[decode]
        for buffer, x in zip(inputs, (a, noise, ctx_noise), strict=True):
            buffer.copy_(x)
        return run()

    def _capture(self, decode: bool):
        """(run, static inputs): on CUDA, `run` replays a graph of `_advance` over the static
        inputs and returns its static outputs; elsewhere it calls `_advance` on them."""
        inputs = (
            torch.zeros_like(self.prev_action),
            torch.zeros_like(self.latents),
            torch.zeros_like(self.latents),
        )
        if self.device.type != "cuda":
            return (lambda: self._advance(*inputs, decode)), inputs
        cache = (self.cache.k, self.cache.v, self.cache.age, self.cache.next_slot)
        kept = [t.clone() for t in cache]
        side = torch.cuda.Stream(self.device)  # warm-up off the capture stream, as CUDA asks
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._advance(*inputs, decode)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self._advance(*inputs, decode)
        for t, k in zip(cache, kept, strict=True):  # the warm-up wrote into the cache
            t.copy_(k)

        def run():
            graph.replay()
            return outputs

        return run, inputs

    def _to_host(self, *tensors):
        """The step's outputs on the host; from a GPU through pinned buffers, all copies
        queued at once and one stream sync."""
        if self.device.type != "cuda":
            return [t if t is None else t.cpu() for t in tensors]
        host = [
            t if t is None else torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            for t in tensors
        ]
        for h, t in zip(host, tensors, strict=True):
            if t is not None:
                h.copy_(t, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return host

    # -- reasoner ---------------------------------------------------------------------
    @torch.no_grad()
    def _read_scene(self, z: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        if self._scene_process is not None:
            return self._scene_process.submit(z, prev).result()
        return self.reasoner.read(z, prev)

    def _submit_scene(self, z: torch.Tensor) -> Future:
        """Queue this frame's estimate; it chains on the previous frame's."""
        prev = self._scene.result() if self._scene is not None else None
        if self._scene_process is not None:
            self._scene = self._scene_process.submit(z, prev)
        else:
            self._scene = self._scene_pool.submit(self._read_scene, z, prev)
        return self._scene

    @torch.no_grad()
    def _reset_scene(self, context: torch.Tensor, mask: torch.Tensor) -> Future:
        """Read the context frames (B, K, N, C) of reset worlds from scratch, in order."""
        kept = self._scene.result() if self._scene is not None else None
        est = None
        for t in range(context.shape[1]):
            est = self._read_scene(context[:, t], est)
        if kept is not None:
            est = torch.where(mask[:, None].to(est.device), est, kept)
        self._scene = Future()
        self._scene.set_result(est)
        return self._scene

    def close(self) -> None:
        if self._scene_pool is not None:
            self._scene_pool.shutdown(wait=True)
        if self._scene_process is not None:
            self._scene_process.close()
