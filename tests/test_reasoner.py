"""Reasoner: scene layout, question forms and answers, model masks, training entry point."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worldsim.cli import compose_config, main
from worldsim.model.reasoner import Reasoner, ReasonerConfig
from worldsim.reasoner_text import (
    CANNOT_ANSWER,
    SECTORS,
    TaskText,
    decode,
    direction,
    encode,
)
from worldsim.scene import SceneLayout
from worldsim.train.reasoner import load_reasoner

TINY = ["model.width=32", "model.layers=1", "model.lm_layers=1", "model.heads=2"]


def _task(name: str = "reacher"):
    return compose_config("generate", [f"task={name}"]).task


@pytest.mark.parametrize("name", ["reacher", "inverted_pendulum", "pusher"])
def test_every_task_has_a_scene_layout(name):
    layout = SceneLayout.from_task(_task(name))
    angles = sum(q.size for q in layout.quantities if q.angle)
    assert layout.feature_dim == layout.dim + angles


def test_features_roundtrip_and_angle_errors_wrap():
    layout = SceneLayout.from_task(_task())
    v = np.random.default_rng(0).uniform(-3, 3, (5, layout.dim)).astype(np.float32)
    np.testing.assert_allclose(layout.from_features(layout.to_features(v)), v, atol=1e-5)
    a, b = v.copy(), v.copy()
    a[:, 0], b[:, 0] = 3.1, -3.1  # 0.083 rad apart across the wrap, not 6.2
    err = layout.abs_error(a, b)["joint_angle"][:, 0]
    np.testing.assert_allclose(err, 2 * math.pi - 6.2, atol=1e-5)


def test_directions_follow_the_image():
    assert direction(1, 0) == "right"
    assert direction(-1, 1) == "up and left"
    assert direction(0, -1) == "down"
    assert direction(0.3, -1) == "down"  # 73 degrees below: nearer down than down-right


def _state(text: TaskText, tip, target, speed=0.0, angles=(0.0, 0.0)) -> np.ndarray:
    s = np.zeros(text.layout.dim, np.float32)
    s[text.layout.slices["fingertip"]] = tip
    s[text.layout.slices["target"]] = target
    s[text.layout.slices["joint_velocity"]] = speed
    s[text.layout.slices["joint_angle"]] = angles
    return s


def test_answers_from_state():
    text = TaskText.from_task(_task())
    s = _state(text, (0.0, 0.0), (-0.04, 0.04), speed=1.0, angles=(math.radians(34), 0))
    assert text.answer("Where is the target relative to the fingertip?", s) == "up and left, 6 cm"
    assert text.answer("how far is the fingertip from the target", s) == "6 cm"
    assert text.answer("has the fingertip reached the target?", s) == "no"
    assert text.answer("is the arm moving?", s) == "yes"
    assert text.answer("what is the angle of joint 0?", s) == "30 degrees"
    assert text.describe(s) == "the target is up and left of the fingertip, 6 cm away. " + (
        "the arm is moving."
    )
    near = _state(text, (0.0, 0.0), (0.01, 0.0))
    assert text.answer("has the fingertip reached the target?", near) == "yes"
    assert text.answer("where is the target relative to the fingertip?", near) == "here"


@pytest.mark.parametrize(
    "question", ["what colour is the sky?", "where is the moon?", "is the arm", ""]
)
def test_unknown_question_forms_cannot_be_answered(question):
    text = TaskText.from_task(_task())
    assert text.answer(question, _state(text, (0, 0), (0.1, 0))) == CANNOT_ANSWER


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-4, 4, allow_nan=False), min_size=8, max_size=8))
def test_every_question_and_answer_fits_the_vocabulary(values):
    text = TaskText.from_task(_task())
    s = np.asarray(values, np.float32) * np.array([1, 1, 5, 5, 0.05, 0.05, 0.05, 0.05])
    for q in text.questions():
        seq = q + " " + text.answer(q, s) + "\n"
        assert decode(encode(seq)) == seq and len(seq) <= ReasonerConfig().text_len


def _pendulum(cart_m: float, pole_rad: float, cart_m_s: float = 0.0) -> np.ndarray:
    return np.array([cart_m, pole_rad, cart_m_s, 0.0])


def test_inverted_pendulum_has_its_own_forms_read_as_drawn():
    """A cart-pole's forms replace the generic 'angle of joint 0' (10-degree steps, coarser
    than the pole's +-11-degree range); sides are as the frame shows them."""
    text = TaskText.from_task(_task("inverted_pendulum"))
    qs = text.questions()
    assert "what is the angle of joint 0?" not in qs and "is the arm moving?" not in qs
    s = _pendulum(0.12, math.radians(5.2), 0.5)
    assert text.answer("Which way is the pole leaning", s) == "leaning right, 6 degrees"
    assert text.answer("where is the cart?", s) == "right of centre, 10 cm"
    assert text.answer("has the pole fallen?", s) == "no"
    assert text.answer("is the cart moving?", s) == "yes"
    s = _pendulum(-0.01, -0.5)
    assert text.answer("which way is the pole leaning?", s) == "leaning left, 28 degrees"
    assert text.answer("where is the cart?", s) == "at the centre"
    assert text.answer("has the pole fallen?", s) == "yes"
    assert text.describe(s) == (
        "the pole is leaning left, 28 degrees. the cart is at the centre. the pole has fallen."
    )
    assert text.answer("what is the angle of joint 0?", s) == CANNOT_ANSWER


def test_pendulum_sides_match_the_rendered_frame():
    """'right' in an answer is right in the frame: a positive cart position or pole angle
    moves the drawn cart or pole tip to the right of where it stands at zero."""
    from worldsim.mujoco_sim import MujocoSim

    sim = MujocoSim(_task("inverted_pendulum"))
    sim.reset(seed=0)

    def drawn_x(qpos) -> float:
        sim.unwrapped.set_state(np.asarray(qpos, float), np.zeros(2))
        top = sim.render()[:20].astype(float)  # the pole's tip and above
        ys, xs = np.nonzero(np.abs(top - top.mean((0, 1))).sum(-1) > 80)
        return float(xs.mean())

    upright = drawn_x([0, 0])
    assert drawn_x([0.3, 0]) > upright + 5 and drawn_x([-0.3, 0]) < upright - 5
    assert drawn_x([0, 0.3]) > upright + 3 and drawn_x([0, -0.3]) < upright - 3
    sim.close()


def test_pusher_directions_are_as_its_camera_shows_them():
    """Pusher's camera looks back at the arm (azimuth -90): world +x is left in the frame
    and +y down. 'where is the goal relative to the object?' names the side the goal is
    drawn on (segmentation centroids), on 8 resets."""
    from worldsim.mujoco_sim import MujocoSim

    task = _task("pusher")
    text = TaskText.from_task(task)
    sim = MujocoSim(task)
    classes = {n: i for i, n in enumerate(task.segmentation, start=1)}
    for seed in range(8):
        sim.reset(seed=seed)
        seg, state = sim.segment(), sim.state()
        (gy, gx), (oy, ox) = (np.argwhere(seg == classes[n]).mean(0) for n in ("goal", "object"))
        drawn = direction(gx - ox, oy - gy)  # rows grow downward
        offset = text.to_image((state["goal"][:2] - state["object"][:2])[None])[0]
        assert direction(*offset) == drawn, (seed, drawn, offset)
    sim.close()
    reacher = TaskText.from_task(_task())  # top-down, azimuth 90: world axes as drawn
    np.testing.assert_array_equal(reacher.to_image(np.array([[0.1, -0.2]])), [[0.1, -0.2]])


@settings(max_examples=60, deadline=None)
@given(st.floats(-1.2, 1.2), st.floats(-1.7, 1.7), st.floats(-9, 9))
def test_pendulum_answers_are_roundings_of_the_judgments(cart, pole, speed):
    text = TaskText.from_task(_task("inverted_pendulum"))
    s = _pendulum(cart, pole, speed)
    j = text.judgments(s[None])[0]
    for q, v in zip(text.questions()[1:], j, strict=True):
        a = text.answer(q, s)
        seq = q + " " + a + "\n"
        assert decode(encode(seq)) == seq and len(seq) <= ReasonerConfig().text_len
        if a in ("yes", "no"):
            assert (a == "yes") == (v > 1) or abs(v - 1) < 1e-4
        elif "," in a:
            steps = float(a.split(", ")[1].split()[0]) / (2.0 if "degrees" in a else 5.0)
            assert steps == round(abs(v)) and ("right" in a) == (v > 0)
        else:
            assert round(abs(v)) == 0


def _model() -> Reasoner:
    torch.manual_seed(0)
    return Reasoner(ReasonerConfig(width=32, layers=1, lm_layers=1, heads=2)).eval()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-4, 4, allow_nan=False), min_size=8, max_size=8))
def test_answers_are_roundings_of_the_judgments(values):
    """The language model reads the judgments: every numeric answer is one of them rounded,
    and 'moving' is the fastest joint's judgment above 1."""
    text = TaskText.from_task(_task())
    s = np.asarray(values, np.float32) * np.array([1, 1, 5, 5, 0.05, 0.05, 0.05, 0.05])
    j = dict(zip(text.judgment_names(), text.judgments(s[None])[0], strict=True))
    assert len(j) == 7
    cm = text.answer("how far is the fingertip from the target?", s)
    assert abs(int(cm.split()[0]) - j["distance"]) <= 0.5 + 1e-3
    for i in (0, 1):
        deg = int(text.answer(f"what is the angle of joint {i}?", s).split()[0])
        assert abs(deg / 10 - j[f"joint {i}"]) <= 0.5 + 1e-3 or abs(deg) == 180
    moving = text.answer("is the arm moving?", s) == "yes"
    assert moving == (j["joint speed"] > 1) or abs(j["joint speed"] - 1) < 1e-4
    if j["distance"] >= 2:
        sector = text.answer("where is the target relative to the fingertip?", s).split(",")[0]
        assert sector == SECTORS[round(j["bearing"]) % 8] or abs(j["bearing"] % 1 - 0.5) < 1e-3


def test_judgments_are_read_from_the_estimate_as_tokens():
    layout = SceneLayout.from_task(_task())
    text = TaskText.from_task(_task())
    cfg = ReasonerConfig(feature_dim=layout.feature_dim, width=32, layers=1, lm_layers=1, heads=2,
                         state_reader="mlp", reader_width=32, judgments=7)  # fmt: skip
    model = Reasoner(cfg).eval()
    z = torch.randn(2, 64, 16)
    with pytest.raises(ValueError, match="task_text"):
        model.encode(z)
    model.task_text = text
    values = np.zeros((2, layout.dim), np.float32)
    values[:, layout.slices["target"]] = 0.1
    est = torch.from_numpy(layout.to_features(values).astype(np.float32))
    h, _ = model.encode(z, None, est)
    assert h.shape == (2, 1 + 7 + 64, 32)
    moved = values.copy()
    moved[:, layout.slices["target"]] = 0.105  # half a cm: the distance's rounding flips
    h2, _ = model.encode(z, None, torch.from_numpy(layout.to_features(moved).astype(np.float32)))
    assert (h2[:, 1:8] - h[:, 1:8]).abs().amax(-1).min() > 1e-4  # every pair judgment token
    with pytest.raises(ValueError, match="mlp"):
        Reasoner(ReasonerConfig(judgments=7))


def test_judgments_are_written_as_characters_the_language_model_reads():
    from worldsim.model.reasoner import judgment_chars

    assert decode(judgment_chars([3.4, -12.0, 150.0, -0.4])) == "  3-12 99  0"
    layout = SceneLayout.from_task(_task())
    cfg = ReasonerConfig(feature_dim=layout.feature_dim, width=32, layers=1, lm_layers=1, heads=2,
                         state_reader="mlp", reader_width=32, judgments=7,
                         judgment_chars=True)  # fmt: skip
    model = Reasoner(cfg).eval()
    model.task_text = TaskText.from_task(_task())
    values = np.zeros((1, layout.dim), np.float32)
    values[:, layout.slices["target"]] = 0.1
    z, text = torch.randn(1, 64, 16), torch.tensor([encode("how far ")])
    logits = []
    for target in (0.1, 0.13):  # 10 cm vs 13 cm: the distance's characters differ
        values[:, layout.slices["target"]] = target
        est = torch.from_numpy(layout.to_features(values).astype(np.float32))
        with torch.no_grad():
            h, _ = model.encode(z, None, est)
            logits.append(model.text_logits(h, text))
    assert h.shape == (1, 1 + 7 + 3 * 7 + 64, 32)
    assert (logits[0] - logits[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="judgment_chars"):
        Reasoner(ReasonerConfig(state_reader="mlp", judgment_chars=True))


def test_init_from_a_model_the_config_extends_loads_its_weights(tmp_path):
    """A run whose config adds keys (new parts) starts from a model without them: the shared
    weights load, the new ones start fresh; any other config difference is refused."""
    from types import SimpleNamespace

    from worldsim.checkpoint import save_model
    from worldsim.model.reasoner import build_reasoner
    from worldsim.train.harness import init_weights

    layout = SceneLayout.from_task(_task())
    base = {"feature_dim": layout.feature_dim, "width": 32, "layers": 1, "lm_layers": 1,
            "heads": 2, "state_reader": "mlp", "reader_width": 32}  # fmt: skip
    old = build_reasoner(base)
    save_model(tmp_path / "old.safetensors", old, "reasoner", base)
    extended = {**base, "judgments": 7}
    new = build_reasoner(extended)
    run = SimpleNamespace(kind="reasoner", config=extended)
    init_weights(new, run, tmp_path / "old.safetensors")
    for k, v in old.state_dict().items():
        assert torch.equal(new.state_dict()[k], v), k
    assert "judgment_step.weight" in new.state_dict()
    other = {**base, "width": 64, "judgments": 7}
    with pytest.raises(ValueError, match="init_from"):
        run = SimpleNamespace(kind="reasoner", config=other)
        init_weights(build_reasoner(other), run, tmp_path / "old.safetensors")


def test_every_answer_weighs_the_same_in_the_loss():
    from worldsim.model.reasoner import qa_loss

    text = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 0, 0, 0]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    logits = torch.full((2, 6, 8), -20.0)
    logits[0, torch.arange(5), text[0, 1:]] = 20.0  # the long answer: right
    logits[1, torch.arange(5), text[1, 1:]] = 20.0
    logits[1, 1, text[1, 2]] = -20.0  # the short one: its last character wrong
    one_wrong = float(torch.nn.functional.cross_entropy(logits[1, 1:2], text[1, 2:3]))
    assert qa_loss(logits, text, mask) == pytest.approx(one_wrong / 2 / 2, rel=1e-4)


def test_text_is_causal_and_reads_the_frame():
    m = _model()
    z = torch.randn(2, 64, 16)
    h, state = m.encode(z)
    assert state.shape == (2, 10) and h.shape == (2, 65, 32)
    ids = torch.randint(1, 20, (2, 12))
    logits = m.text_logits(h, ids)
    later = ids.clone()
    later[:, 8:] = 3
    torch.testing.assert_close(m.text_logits(h, later)[:, :8], logits[:, :8])
    h2, _ = m.encode(z + 1)
    assert (m.text_logits(h2, ids) - logits).abs().max() > 1e-4
    # the previous estimate is an input
    assert (m.encode(z, state + 1)[1] - state).abs().max() > 1e-4
    assert all(isinstance(a, str) for a in m.generate(h, [encode("is the arm moving? ")] * 2))


def test_answers_may_be_as_long_as_a_scene_description():
    """A description runs to ~80 characters: generation stops at '\\n' or text_len, not sooner."""
    m = _model()
    with torch.no_grad():  # a language model that always says 'a' and never ends its answer
        m.lm_out.bias.fill_(-1e4)
        m.lm_out.bias[encode("a")[0]] = 1e4
    prompt = encode("describe the scene. ")
    h, _ = m.encode(torch.randn(1, 64, 16))
    assert m.generate(h, [prompt]) == ["a" * (m.cfg.text_len - len(prompt))]
    assert m.generate(h, [prompt], max_chars=5) == ["aaaaa"]


@pytest.mark.parametrize("reader", ["mlp", "encoder"])
def test_state_reader_reads_the_frame_and_the_previous_estimate(reader):
    """read() is encode()'s state; with the MLP reader it sees every latent of the grid, and
    the language model's prefix carries the new estimate."""
    torch.manual_seed(0)
    cfg = ReasonerConfig(width=32, layers=1, lm_layers=1, heads=2, state_reader=reader)
    m = Reasoner(cfg).eval()
    z = torch.randn(2, 64, 16)
    state = m.read(z)
    torch.testing.assert_close(m.encode(z)[1], state)
    assert (m.read(z, state + 1) - state).abs().max() > 1e-4
    far = z.clone()
    far[:, 63] += 1  # the last token of the grid: a corner no attention window skips
    assert (m.read(far) - state).abs().max() > 1e-5
    if reader == "mlp":
        assert not hasattr(m, "state_out")
        h = m.encode(z)[0]
        with torch.no_grad():  # the prefix's estimate token is the reader's new estimate
            m.reader[-1].bias += 1
        assert (m.encode(z)[0] - h).abs().max() > 1e-4


def test_unknown_state_reader_is_refused():
    with pytest.raises(ValueError, match="state_reader='cnn'"):
        Reasoner(ReasonerConfig(state_reader="cnn"))


def _tiny_reasoner_args(tmp_path) -> list[str]:
    """`worldsim train reasoner` arguments on a three-episode store and a one-step tokenizer."""
    store = tmp_path / "r.zarr"
    gen = ["data", "generate", "episodes=3", "workers=0", "task.max_episode_steps=10"]
    assert main([*gen, f"out={store}"]) == 0
    common = [f"data_path={store}", "train.batch_size=4", "train.dtype=fp32", "train.val_every=2"]
    tiny_tok = ["model.width=32", "model.layers=1", "model.heads=2", "model.latent_dim=4"]
    tok_args = ["train", "tokenizer", *common, f"run_dir={tmp_path / 'tok'}", "train.steps=1"]
    assert main([*tok_args, *tiny_tok]) == 0
    tok = tmp_path / "tok" / "tokenizer.safetensors"
    lat = f"latents={tmp_path / 'lat.safetensors'}"
    return ["train", "reasoner", *common, lat, f"tokenizer={tok}", *TINY, "model.reader_width=32"]


@pytest.mark.parametrize("reader", ["encoder", "mlp"])
def test_train_reasoner_cli_smoke(tmp_path, reader):
    args = [*_tiny_reasoner_args(tmp_path), f"model.state_reader={reader}"]
    run = tmp_path / "rs"
    steps = ["train.steps=3", "train.eval_every=3", "qa_batch=2"]
    assert main([*args, f"run_dir={run}", *steps]) == 0
    model, layout, text = load_reasoner(run / "reasoner.safetensors", _task())
    assert model.cfg.latent_dim == 4 and layout.dim == 8
    assert float(model.feat_std.min()) > 0  # normalisation was fitted and saved
    log = (run / "log.csv").read_text()
    assert "qa_exact" in log and "err_fingertip" in log
    with pytest.raises(ValueError, match="pusher"):
        load_reasoner(run / "reasoner.safetensors", _task("pusher"))
    if reader == "encoder":
        return
    # qa_weight=0 trains the MLP state reader on and leaves the language model alone
    init = f"train.init_from={run / 'reasoner.safetensors'}"
    more = [*args, f"run_dir={tmp_path / 'rs2'}", init, "qa_weight=0"]
    assert main([*more, "train.steps=2", "train.eval_every=2"]) == 0
    longer, _, _ = load_reasoner(tmp_path / "rs2" / "reasoner.safetensors", _task())
    before, after = model.state_dict(), longer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("reader."))
    assert not torch.equal(before["reader.0.weight"], after["reader.0.weight"])
    # state_weight=0 trains the language model on and leaves the reader alone
    lm_only = [*args, f"run_dir={tmp_path / 'rs3'}", init, "state_weight=0"]
    assert main([*lm_only, "train.steps=2", "train.eval_every=2", "qa_batch=2"]) == 0
    talker, _, _ = load_reasoner(tmp_path / "rs3" / "reasoner.safetensors", _task())
    after = talker.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("reader."))
    assert not torch.equal(before["lm_out.weight"], after["lm_out.weight"])
    assert main([*lm_only, "qa_weight=0"]) == 2  # nothing left to train
    # ... reading the tracked state of a state filter instead of the frame's own reading
    from worldsim.datasets.store import EpisodeStore
    from worldsim.state_filter import StateFilter

    store = EpisodeStore.open(tmp_path / "r.zarr")
    values = layout.read(store, 0, store.num_rows)
    readings = values + np.random.default_rng(0).normal(0, 0.01, values.shape)
    actions = store.read("action", 0, store.num_rows)
    StateFilter.fit(
        layout, values, actions, store.episode_ends, readings, values, -np.ones(2), np.ones(2)
    ).save(tmp_path / "sf.json")
    sf = f"lm_state_filter={tmp_path / 'sf.json'}"
    tracked = [*args, f"run_dir={tmp_path / 'rs4'}", init, sf]
    assert main([*tracked, "train.steps=2", "train.eval_every=2", "qa_batch=2"]) == 2
    assert main([*tracked, "state_weight=0", "train.steps=2", "qa_batch=2"]) == 0
    reader, _, _ = load_reasoner(tmp_path / "rs4" / "reasoner.safetensors", _task())
    after = reader.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("reader."))
    assert not torch.equal(before["lm_out.weight"], after["lm_out.weight"])


def test_train_reasoner_under_torchrun_ddp(tmp_path):
    """Two CPU processes (gloo): the whole model with questions, then the MLP reader alone
    and the language model alone (the rest gets no gradient there)."""
    args = [*_tiny_reasoner_args(tmp_path), "model.state_reader=mlp", "train.eval_every=1000"]
    assert main([*args, f"run_dir={tmp_path / 'one'}", "train.steps=1"]) == 0  # writes latents
    start, _, _ = load_reasoner(tmp_path / "one" / "reasoner.safetensors", _task())
    args.append(f"train.init_from={tmp_path / 'one' / 'reasoner.safetensors'}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # which parameters each run must leave exactly as they started
    for run, extra, kept in (
        ("both", [], lambda k: False),
        ("reader", ["qa_weight=0"], lambda k: not k.startswith("reader.")),
        ("lm", ["state_weight=0"], lambda k: k.startswith("reader.")),
    ):
        cmd = [*torchrun, "--master_port=29519", "-m", "worldsim.cli", *args, *extra]
        cmd += [f"run_dir={tmp_path / run}", "train.steps=2", "qa_batch=2"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert json.loads((tmp_path / run / "run.json").read_text())["world_size"] == 2
        model, _, _ = load_reasoner(tmp_path / run / "reasoner.safetensors", _task())
        before, after = start.state_dict(), model.state_dict()
        assert all(torch.isfinite(v).all() for v in after.values())
        assert all(torch.equal(before[k], after[k]) for k in before if kept(k))
        assert not all(torch.equal(before[k], after[k]) for k in before if not kept(k))


def test_qa_from_the_state_estimate_scores_what_the_estimate_supports():
    """An exact reader whose language model only says 'no': the answers computed from its
    estimate are all right, its own answers right only where the truth is 'no'."""
    from worldsim.eval.reasoner import qa_by_form

    text = TaskText.from_task(_task())
    rng = np.random.default_rng(0)
    states = np.stack([_state(text, rng.uniform(-0.2, 0.2, 2), rng.uniform(-0.2, 0.2, 2),
                              speed=rng.uniform(0, 2)) for _ in range(20)])  # fmt: skip

    class ExactReader:
        def encode(self, z, prev=None, estimate=None):  # "latents": true state features
            return torch.zeros(len(z), 1, 1), torch.as_tensor(z)

        def generate(self, h, prompts):
            return ["no"] * len(prompts)

    feats = text.layout.to_features(states).astype(np.float32)
    lm, from_state = qa_by_form(ExactReader(), text, feats, states, np.arange(20))
    assert set(lm) == set(from_state) == set(text.questions())
    assert all(v == 1.0 for v in from_state.values())
    q = "has the fingertip reached the target?"
    assert lm[q] == np.mean([text.answer(q, s) == "no" for s in states]) > 0
    assert lm["describe the scene."] == 0.0


def test_eval_reasoner_reports_real_and_dreamed_errors(tmp_path):
    from test_dream import save_tiny_reasoner, save_tiny_world_model

    save_tiny_world_model(tmp_path)
    save_tiny_reasoner(tmp_path)
    layout = SceneLayout.from_task(_task())
    store = tmp_path / "r.zarr"
    gen = ["data", "generate", "episodes=2", "workers=0", "task.max_episode_steps=9"]
    assert main([*gen, f"out={store}"]) == 0
    out = tmp_path / "eval"
    args = ["eval", "reasoner", f"data_path={store}", f"checkpoint={tmp_path}", f"out_dir={out}"]
    assert main([*args, "context=2", "horizon=5", "qa_frames=6"]) == 0
    result = json.loads((out / "reasoner.json").read_text())
    assert result["real"]["frames"] == 20
    assert set(result["real"]["median_error"]) == {q.name for q in layout.quantities}
    assert 0 <= result["real"]["qa_exact_match"] <= 1
    forms = set(TaskText.from_task(_task()).questions())
    assert set(result["real"]["qa_exact_match_from_state_by_form"]) == forms
    assert len(result["dreamed"]["median_error_per_horizon"]["fingertip"]) == 5
    # questions about dreamed frames at the QA horizons that fit (1 and 4 of 5)
    by_form = result["dreamed"]["qa_exact_match_by_form_per_horizon"]
    per_h = result["dreamed"]["qa_exact_match_per_horizon"]
    assert set(by_form) == set(per_h) == {"1", "4"}
    assert all(0 <= v <= 1 for v in per_h.values())
    assert set(by_form["4"]) == set(result["real"]["qa_exact_match_by_form"])
    assert (out / "reasoner.png").stat().st_size > 1000
    # with a state filter in the folder: the tracked state's errors and answers too
    assert "median_error_tracked" not in result["real"]
    sf = ["train", "state_filter", f"data_path={store}", f"heldout_path={store}"]
    assert main([*sf, f"checkpoint={tmp_path}", f"out={tmp_path / 'state_filter.json'}"]) == 0
    assert main([*args, "context=2", "horizon=1", "qa_frames=6"]) == 0
    real = json.loads((out / "reasoner.json").read_text())["real"]
    assert set(real["median_error_tracked"]) == {q.name for q in layout.quantities}
    assert real["tracked_positions_from"] == "reasoner"
    assert set(real["qa_exact_match_from_tracked_state_by_form"]) == forms
    assert set(real["qa_exact_match_tracked_by_form"]) == forms
    assert 0 <= real["qa_exact_match_from_tracked_state"] <= 1
    # with a position reader in the folder, it reads the tracked state's positions
    pr = ["train", "position_reader", f"data_path={store}", "latents=null",
          f"tokenizer={tmp_path / 'tokenizer.safetensors'}", f"run_dir={tmp_path / 'pr'}",
          "train.steps=2", "model.channels=4", "model.trunk=4", "model.hidden=8"]  # fmt: skip
    assert main(pr) == 0
    reader = "position_reader.safetensors"
    (tmp_path / "pr" / reader).rename(tmp_path / reader)
    assert main([*args, "context=2", "horizon=1", "qa_frames=6"]) == 0
    with_reader = json.loads((out / "reasoner.json").read_text())["real"]
    assert with_reader["tracked_positions_from"] == "position_reader"
    moved = with_reader["median_error_tracked"]["fingertip"]
    assert moved != real["median_error_tracked"]["fingertip"]
    # with a reasoner in the folder, eval fidelity adds the state-grounded error curve
    fid = tmp_path / "fid"
    args = ["eval", "fidelity", f"data_path={store}", f"checkpoint={tmp_path}", f"out_dir={fid}"]
    assert main([*args, "context=2", "horizon=4", "long_frames=0"]) == 0
    curve = json.loads((fid / "fidelity.json").read_text())["state_error_per_horizon"]
    assert curve["units"]["fingertip"] == "m" and len(curve["median"]["fingertip"]) == 4


def test_the_language_model_reads_a_given_estimate_in_place_of_its_own():
    layout = SceneLayout.from_task(_task())
    cfg = ReasonerConfig(feature_dim=layout.feature_dim, width=32, layers=1, lm_layers=1, heads=2,
                         state_reader="mlp", reader_width=32)  # fmt: skip
    model = Reasoner(cfg).eval()
    z = torch.randn(3, 64, 16)
    with torch.no_grad():
        own, state = model.encode(z)
        same, _ = model.encode(z, None, state)
        other, state2 = model.encode(z, None, state + 1)
    assert torch.allclose(own, same) and torch.equal(state, state2)
    assert not torch.allclose(own[:, 0], other[:, 0])  # the estimate token changed
    assert not torch.allclose(own[:, 1:], other[:, 1:])  # and the frame tokens attend to it
    with pytest.raises(ValueError, match="mlp"):
        Reasoner(ReasonerConfig(feature_dim=layout.feature_dim, width=32, layers=1, lm_layers=1,
                                heads=2)).encode(z, None, state)  # fmt: skip


def test_ask_describe_and_judge_through_the_task_forms(tmp_path):
    from worldsim.checkpoint import save_model

    layout = SceneLayout.from_task(_task())
    cfg = ReasonerConfig(feature_dim=layout.feature_dim, width=32, layers=1, lm_layers=1, heads=2)
    meta = {"task": "reacher", "scene": layout.to_dict(), **Reasoner(cfg).config_dict()}
    save_model(tmp_path / "r.safetensors", Reasoner(cfg), "reasoner", meta)
    model, _, _ = load_reasoner(tmp_path / "r.safetensors", _task())
    z = torch.randn(2, 64, 16)
    assert model.ask(z, "what is the meaning of life?") == [CANNOT_ANSWER] * 2
    answers = model.ask(z, "How far is the fingertip from the target?")
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert len(model.describe(z)) == 2
    judged = model.judge(z)
    assert set(judged[0]) == {"state", "distance_to_goal_cm", "success"}
    assert len(judged[0]["state"]["fingertip"]) == 2
    with pytest.raises(ValueError, match="load_reasoner"):
        _model().ask(z, "is the arm moving?")


def test_grouped_reasoner_reads_neighbouring_tokens_as_one():
    from worldsim.model.tokenizer import group_tokens

    z = torch.arange(64.0)[None, :, None].expand(2, 64, 3)  # token i holds the value i
    g = group_tokens(z, grid=8, group=2)
    assert g.shape == (2, 16, 12)
    assert g[0, 0].view(4, 3)[:, 0].tolist() == [0, 1, 8, 9]  # a 2x2 square of the grid
    assert g[0, 5].view(4, 3)[:, 0].tolist() == [18, 19, 26, 27]
    cfg = ReasonerConfig(latent_dim=3, width=32, layers=1, lm_layers=1, heads=2, group=2)
    h, state = Reasoner(cfg).eval().encode(z)
    assert h.shape == (2, 17, 32) and state.shape == (2, cfg.feature_dim)
