"""FrameEngine: batched stepping, action validation, seeding, per-world resets, flat memory."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from worldsim.engine import EngineConfig, FrameEngine
from worldsim.model.dynamics import Dynamics, DynamicsConfig
from worldsim.model.tokenizer import Tokenizer, TokenizerConfig


def _engine(
    batch: int = 2,
    seed: int = 0,
    reasoner=None,
    reasoner_process: bool = False,
    compile: bool = False,
    steps: int = 2,
    window: int = 3,
    device: str = "cpu",
    **engine,
) -> FrameEngine:
    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig(width=32, layers=1, heads=2, latent_dim=4))
    dyn = Dynamics(DynamicsConfig(latent_dim=4, width=32, layers=1, heads=2, window=window))
    with torch.no_grad():
        for p in dyn.parameters():
            p.normal_(0, 0.05)
    return FrameEngine(
        tok,
        dyn,
        batch,
        EngineConfig(
            steps, seed=seed, reasoner_process=reasoner_process, compile=compile, **engine
        ),
        device,
        action_low=-np.ones(2),
        action_high=np.ones(2),
        reasoner=reasoner,
    )


def _context(batch: int = 2, k: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (batch, k, 64, 64, 3), dtype=np.uint8)


def _states(batch: int = 2, k: int = 3) -> np.ndarray:
    """Reacher-like scene states (angles, velocities, fingertip, target) of the context."""
    return np.random.default_rng(1).uniform(-0.2, 0.2, (batch, k, 8)).astype(np.float32)


def test_step_returns_frames_latents_state_reward_termination():
    eng = _engine()
    first = eng.reset(_context(), states=_states())
    np.testing.assert_array_equal(first.state.numpy(), _states()[:, -1])
    out = eng.step(np.zeros((2, 2), np.float32))
    assert out.frames.shape == (2, 64, 64, 3) and out.frames.dtype == torch.uint8
    assert out.latents.shape == (2, 64, 4) and out.state.shape == (2, 8)
    assert out.reward.shape == (2,) and out.terminated.dtype == torch.bool
    assert eng.step(np.zeros((2, 2)), decode=False).frames is None


def test_the_state_moves_by_the_models_transition_and_conditions_the_frame():
    eng = _engine()
    start = eng.reset(_context(), states=_states()).state
    out = eng.step(np.ones((2, 2)), decode=False)
    with torch.no_grad():
        want = eng.dyn.transition(start, torch.ones(2, 2))
    torch.testing.assert_close(out.state, want)
    other = _engine()
    shifted = _states()
    shifted[:, -1, :2] += 1.0  # another joint angle in the last context frame
    other.reset(_context(), states=shifted)
    assert (other.step(np.ones((2, 2)), decode=False).latents - out.latents).abs().max() > 1e-3


def test_a_state_conditioned_decoder_draws_the_frame_from_the_new_state():
    """The engine decodes each frame with the state it steps to (reset: the context's)."""
    eng = _engine()
    cfg = TokenizerConfig(**{**eng.tok.cfg.__dict__, "scene": eng.dyn.cfg.scene})
    tok = Tokenizer(cfg)
    tok.load_state_dict(eng.tok.state_dict(), strict=False)
    with torch.no_grad():
        tok.state_in[-1].weight.normal_(0, 0.5)
    eng = FrameEngine(tok, eng.dyn, 2, eng.cfg, action_low=-np.ones(2), action_high=np.ones(2))
    first = eng.reset(_context(), states=_states(), decode=True)
    out = eng.step(np.ones((2, 2)))
    with torch.no_grad():
        for o in (first, out):
            assert torch.equal(o.frames, tok.decode_uint8(o.latents, o.state))
            assert not torch.equal(o.frames, tok.decode_uint8(o.latents))


def test_a_model_without_a_cache_draws_each_frame_from_its_state_alone():
    """window=0: the context frames only start the state; the frames do not depend on them."""
    frames = []
    for ctx in (_context(), 255 - _context()):
        eng = _engine(window=0)
        eng.reset(ctx, states=_states())
        assert eng.cache.k.shape[3] == 0  # no ring to write
        frames.append(torch.stack([eng.step(np.ones((2, 2))).latents for _ in range(3)]))
    torch.testing.assert_close(frames[0], frames[1])
    assert (frames[0][1] - frames[0][0]).abs().max() > 1e-4  # the state moves the frame


@pytest.mark.parametrize(
    "states, match",
    [
        (None, r"state-grounded.*\(2, 3, 8\)"),
        (np.zeros((2, 3, 5)), r"shape \(2, 3, 8\)"),
        (np.full((2, 3, 8), np.inf), "NaN or inf"),
    ],
)
def test_reset_needs_the_context_states(states, match):
    with pytest.raises(ValueError, match=match):
        _engine().reset(_context(), states=states)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 3)), r"shape \(2, 2\)"),
        (np.full((2, 2), np.nan), "NaN"),
        (np.full((2, 2), 2.0), "outside bounds"),
    ],
)
def test_bad_actions_raise_value_error(bad, match):
    eng = _engine()
    eng.reset(_context(), states=_states())
    with pytest.raises(ValueError, match=match):
        eng.step(bad)


def test_same_seed_same_rollout_other_seed_differs():
    def roll(seed):
        eng = _engine(seed=seed)
        eng.reset(_context(), states=_states())
        return torch.stack([eng.step(np.full((2, 2), 0.5)).latents for _ in range(3)])

    assert torch.equal(roll(1), roll(1))
    assert not torch.equal(roll(1), roll(2))


def test_reset_mask_restarts_only_selected_worlds():
    eng = _engine()
    ctx = _context()
    eng.reset(ctx, states=_states())
    eng.step(np.zeros((2, 2)))
    before, pending = eng.cache.age.clone(), eng.latents.clone()
    eng.reset(ctx, mask=np.array([True, False]), states=_states())
    assert torch.equal(eng.cache.age[1], before[1])  # world 1 untouched
    assert torch.equal(eng.latents[1], pending[1])
    # world 0 holds its first 2 context frames; the 3rd is pending for the next step
    assert (eng.cache.age[0] >= 0).sum() == 2
    assert not torch.equal(eng.latents[0], pending[0])


def test_compiled_engine_dreams_what_the_eager_one_does():
    """engine.compile: the same latents and frames through resets (all worlds, then one)
    and steps."""
    eager, compiled = _engine(steps=1), _engine(steps=1, compile=True)
    actions = np.random.default_rng(1).uniform(-1, 1, (6, 2, 2)).astype(np.float32)
    for eng in (eager, compiled):
        eng.reset(_context(), actions[:2, :, :].transpose(1, 0, 2), states=_states())
    for t in range(4):
        if t == 2:  # world 1 restarts from its context; world 0 goes on
            for eng in (eager, compiled):
                eng.reset(
                    _context(), actions[:2].transpose(1, 0, 2), mask=[False, True], states=_states()
                )
        a, b = eager.step(actions[t + 2]), compiled.step(actions[t + 2])
        torch.testing.assert_close(b.latents, a.latents, atol=1e-4, rtol=1e-4)
        assert (b.frames.int() - a.frames.int()).abs().max() <= 1


def _rollout_with_a_reset(engines, frames: int = 6) -> list[list]:
    """Each engine's step outputs (decoded and not, alternating) through a reset of all
    worlds and then of world 1 alone; every output read only after the next step, so an
    output a later step overwrote would show."""
    actions = np.random.default_rng(1).uniform(-1, 1, (frames + 2, 2, 2)).astype(np.float32)
    outs = [[] for _ in engines]
    for eng in engines:
        eng.reset(_context(), actions[:2].transpose(1, 0, 2), states=_states())
    for t in range(frames):
        if t == 3:  # world 1 restarts from its context; world 0 goes on
            for eng in engines:
                eng.reset(
                    _context(), actions[:2].transpose(1, 0, 2), mask=[False, True], states=_states()
                )
        for eng, out in zip(engines, outs, strict=True):
            out.append(eng.step(actions[t + 2], decode=t % 2 == 0))
    return outs


GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=GPU)])
def test_graph_replay_dreams_what_the_eager_step_does(device):
    """engine.graph: on CUDA one captured graph per decode flag, replayed every step; on
    the CPU the same static-buffer path run eagerly. Equal outputs, bit for bit, and
    none of them overwritten by the next replay."""
    eager, graphed = _engine(device=device), _engine(device=device, graph=True)
    for a, b in zip(*_rollout_with_a_reset([eager, graphed]), strict=True):
        assert torch.equal(a.latents, b.latents) and torch.equal(a.state, b.state)
        assert torch.equal(a.reward, b.reward) and torch.equal(a.terminated, b.terminated)
        assert (a.frames is None) == (b.frames is None)
        assert a.frames is None or torch.equal(a.frames, b.frames)
    assert set(graphed._graphs) == {False, True}


def test_bfloat16_engine_keeps_the_state_in_float32_and_the_frames_close():
    full, half = _engine(), _engine(dtype="bfloat16")
    for a, b in zip(*_rollout_with_a_reset([full, half]), strict=True):
        assert torch.equal(a.state, b.state)  # the transition runs outside autocast
        assert b.latents.dtype == torch.float32
        err = (a.latents - b.latents).abs().max().item()
        assert 0 < err < 0.05, err  # bf16 did run, and stayed near fp32


def test_batched_noise_is_one_stream_for_the_whole_batch():
    one, same, per_world = _engine(noise="batched"), _engine(noise="batched"), _engine()
    a, b, c = _rollout_with_a_reset([one, same, per_world])
    assert all(torch.equal(x.latents, y.latents) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0].latents, c[0].latents)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"dtype": "float16"}, "float16"),
        ({"noise": "shared"}, "shared"),
        ({"graph": True, "compile": True}, "graph and compile"),
    ],
)
def test_engine_options_out_of_their_choices_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        _engine(**bad)


def test_long_rollout_keeps_cache_memory_constant():
    eng = _engine(batch=1)
    eng.reset(_context(batch=1), states=_states(1))
    ptrs = (eng.cache.k.data_ptr(), eng.cache.v.data_ptr())
    for _ in range(12):  # four times the window
        out = eng.step(np.zeros((1, 2)), decode=False)
    assert (eng.cache.k.data_ptr(), eng.cache.v.data_ptr()) == ptrs
    assert torch.isfinite(out.latents).all()


@pytest.mark.parametrize("reader", ["mlp", "encoder"])
def test_reasoner_reads_every_frame_in_order_without_blocking_the_loop(reader):
    from worldsim.model.reasoner import Reasoner, ReasonerConfig

    torch.manual_seed(1)
    reasoner = Reasoner(ReasonerConfig(latent_dim=4, feature_dim=5, width=32, layers=1,
                                       lm_layers=1, heads=2, state_reader=reader))  # fmt: skip
    eng = _engine(reasoner=reasoner)
    ctx = _context()
    first = eng.reset(ctx, states=_states())
    outs = [eng.step(np.zeros((2, 2))) for _ in range(3)]
    assert all(o.scene is not None for o in outs)
    # the same chain read one frame at a time, synchronously
    with torch.no_grad():
        z_ctx = eng.tok.encode(torch.from_numpy(ctx).flatten(0, 1)).view(2, 3, 64, 4)
        est = None
        for t in range(3):
            est = reasoner.encode(z_ctx[:, t], est)[1]
        torch.testing.assert_close(first.scene.result(), est)
        for o in outs:
            est = reasoner.encode(o.latents, est)[1]
            torch.testing.assert_close(o.scene.result(), est)
    # a reset of world 0 restarts its estimate only
    before = outs[-1].scene.result()
    again = eng.reset(ctx, mask=np.array([True, False]), states=_states()).scene.result()
    torch.testing.assert_close(again[1], before[1])
    torch.testing.assert_close(again[0], first.scene.result()[0])
    eng.close()


def test_reasoner_worker_leaves_the_engines_threads_alone():
    """The worker reads frames on one intra-op thread; the caller's count and the default
    new threads start from are unchanged (a second OpenMP team slowed B=1 steps 2x)."""
    import threading

    from worldsim.model.reasoner import Reasoner, ReasonerConfig

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        reasoner = Reasoner(ReasonerConfig(latent_dim=4, width=32, layers=1, lm_layers=1, heads=2))
        eng = _engine(reasoner=reasoner)
        assert eng._scene_pool.submit(torch.get_num_threads).result() == 1
        assert torch.get_num_threads() == 2
        seen = []
        t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert seen == [2]
        eng.close()
    finally:
        torch.set_num_threads(before)


def test_reasoner_in_a_child_process_reads_the_same_chain():
    """engine.reasoner_process: the same estimates as the worker thread, and the caller's
    thread count back as it was after every step."""
    from worldsim.model.reasoner import Reasoner, ReasonerConfig

    torch.manual_seed(1)
    reasoner = Reasoner(ReasonerConfig(latent_dim=4, feature_dim=5, width=32, layers=1,
                                       lm_layers=1, heads=2))  # fmt: skip
    threaded = _engine(reasoner=reasoner)
    eng = _engine(reasoner=reasoner, reasoner_process=True)
    threads = torch.get_num_threads()
    outs = []
    for e in (threaded, eng):
        first = e.reset(_context(), states=_states())
        outs.append([first] + [e.step(np.zeros((2, 2))) for _ in range(3)])
        assert torch.get_num_threads() == threads
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(b.scene.result(), a.scene.result())
    threaded.close()
    eng.close()
    assert not eng._scene_process._proc.is_alive()


def test_threads_default_leaves_cores_that_other_processes_use(monkeypatch):
    """Issue 27 item 5: beside a busy process, 2 threads made a B=1 step 2x slower than 1
    (bench/threads.py), so by default the entry points (envs, play, dream) take only the
    idle cores; an explicit count, OMP_NUM_THREADS or the user's own torch.set_num_threads
    win. A bare FrameEngine (as training's evaluation makes) leaves the count alone."""
    import subprocess
    import sys

    from worldsim import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    cores = threads.usable_cores()
    try:
        # the probe sees a busy process (a pure-Python loop keeps one core busy)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.3)
            seen = threads.busy_cores_of_others(0.3)
        finally:
            busy.kill()
            busy.wait()
        assert seen is not None and seen > 0.5
        # the choice follows the probe (probed again at every engine here)
        monkeypatch.setattr(threads, "PROBE_REUSE_S", -1.0)
        torch.set_num_threads(cores)
        monkeypatch.setattr(threads, "busy_cores_of_others", lambda *a: 1.0)
        assert threads.apply(0) == max(1, cores - 1)
        monkeypatch.setattr(threads, "busy_cores_of_others", lambda *a: 0.0)
        assert threads.apply(0) == cores  # raised again once the others are gone
        monkeypatch.setattr(threads, "busy_cores_of_others", lambda *a: 5.0 * cores)
        assert threads.apply(0) == 1
        # an explicit count wins; a count the user set is left alone
        assert threads.apply(cores + 1) == cores + 1
        assert threads.apply(0) == cores + 1
        # a bare engine (training's evaluation makes them) never changes the count
        torch.set_num_threads(cores)
        FrameEngine(Tokenizer(TokenizerConfig()), Dynamics(DynamicsConfig()), 1, EngineConfig())
        assert torch.get_num_threads() == cores
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(cores)
        assert threads.apply(0) == cores
    finally:
        torch.set_num_threads(before)
