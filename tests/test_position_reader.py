"""Position reader: shapes, where its readings go in a state, bad configs and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldsim.checkpoint import save_model
from worldsim.cli import compose_config
from worldsim.model.position_reader import build_position_reader, position_quantities
from worldsim.scene import SceneLayout
from worldsim.train.position_reader import load_position_reader

TINY = {"channels": 4, "trunk": 4, "hidden": 8}


def _task():
    return compose_config("generate", ["task=reacher"]).task


def test_reads_frames_and_puts_readings_in_place_of_the_state_positions():
    layout = SceneLayout.from_task(_task())
    names = position_quantities(layout)
    assert names == ["fingertip", "target"]
    reader = build_position_reader({"quantities": names, "outputs": 4, **TINY})
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    assert reader(frames).shape == (3, 4)
    state = np.random.default_rng(0).normal(size=(3, layout.dim)).astype(np.float32)
    read = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = reader.put(layout, state, read)
    np.testing.assert_array_equal(out[:, layout.slices["fingertip"]], read[:, :2])
    np.testing.assert_array_equal(out[:, layout.slices["target"]], read[:, 2:])
    rest = np.ones(layout.dim, bool)
    for name in names:
        rest[layout.slices[name]] = False
    np.testing.assert_array_equal(out[:, rest], state[:, rest])
    assert not np.shares_memory(out, state)


@pytest.mark.parametrize(
    "config",
    [{"quantities": [], "outputs": 4}, {"quantities": ["target"], "outputs": 0},
     {"quantities": ["target"], "outputs": 2, "image_size": 48}],
)  # fmt: skip
def test_bad_configs_are_refused_with_their_values(config):
    with pytest.raises(ValueError, match="position reader: quantities="):
        build_position_reader({**config, **TINY})


def test_a_checkpoint_reading_what_the_task_lacks_is_refused(tmp_path):
    reader = build_position_reader({"quantities": ["nose"], "outputs": 2, **TINY})
    config = {"task": "reacher", **reader.config_dict()}
    save_model(tmp_path / "p.safetensors", reader, "position_reader", config)
    with pytest.raises(ValueError, match="nose"):
        load_position_reader(tmp_path / "p.safetensors", _task())


def test_rows_chosen_for_the_state_are_decoded_with_it_and_the_rest_without():
    """decode_rows for a decoder that draws the state: the chosen rows as the engine
    draws a dream's frame (with its state), the others as a real frame's round trip."""
    from worldsim.model.dynamics import REACHER_SCENE
    from worldsim.model.tokenizer import Tokenizer, TokenizerConfig
    from worldsim.train.position_reader import decode_rows

    cfg = TokenizerConfig(width=16, layers=1, heads=2, latent_dim=4, scene=REACHER_SCENE)
    tok = Tokenizer(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(tok.state_in[-1].weight, std=0.5)  # the state shows
    rng = np.random.default_rng(0)
    latents = rng.uniform(-1, 1, (6, 64, 4)).astype(np.float32)
    states = rng.normal(size=(6, 8)).astype(np.float32)
    rows = np.array([5, 1, 3])
    frames = decode_rows(tok, latents, rows, False, states, np.array([True, False, True]))
    with torch.no_grad():
        z = torch.from_numpy(latents[rows])
        drawn = tok.decode_uint8(z, torch.from_numpy(states[rows]))
        plain = tok.decode_uint8(z)

    def close(a, b) -> bool:  # one intensity level: batches of 2 and 3 round differently
        return int((a.int() - b.int()).abs().max()) <= 1

    assert close(frames[[0, 2]], drawn[[0, 2]]) and close(frames[1], plain[1])
    assert not close(drawn[1], plain[1])  # the two decodings differ
    assert close(decode_rows(tok, latents, rows, False), plain)


def _layout(task: str) -> SceneLayout:
    return SceneLayout.from_task(compose_config("generate", [f"task={task}"]).task)


def test_what_is_read_by_default_is_the_bodies_world_positions_else_the_task_readout():
    """Pusher's object slide joints (m, but joint coordinates) are not read; the bodies
    are. InvertedPendulum has no body position in its scene, so its task names the cart
    and the pole angle; a readout of a velocity or an unknown name is refused."""
    assert position_quantities(_layout("pusher")) == ["tip", "object", "goal"]
    ip = compose_config("generate", ["task=inverted_pendulum"]).task
    layout = SceneLayout.from_task(ip)
    assert position_quantities(layout) == []
    assert position_quantities(layout, ip.frame_readout) == ["cart_position", "pole_angle"]
    with pytest.raises(ValueError, match="cart_velocity.*not a position or angle"):
        position_quantities(layout, ["cart_position", "cart_velocity"])
    with pytest.raises(ValueError, match="nose.*not in the scene"):
        position_quantities(layout, ["nose"])


def test_angles_are_read_as_cos_sin_and_come_back_in_rad_across_the_wrap():
    names, angles, sizes = ["cart_position", "pole_angle"], ["pole_angle"], [1, 1]
    reader = build_position_reader(
        {"quantities": names, "angles": angles, "sizes": sizes, "outputs": 3, **TINY}
    )
    assert reader(torch.zeros((2, 64, 64, 3), dtype=torch.uint8)).shape == (2, 3)
    values = np.array([[0.25, 0.1], [-0.5, np.pi - 1e-3], [0.0, -np.pi + 1e-3]], np.float32)
    raw = reader.targets(values)
    np.testing.assert_allclose(raw[:, 0], 100 * values[:, 0])
    np.testing.assert_allclose(
        raw[:, 1:], 100 * np.stack([np.cos(values[:, 1]), np.sin(values[:, 1])], 1), rtol=1e-6
    )
    np.testing.assert_allclose(reader.values(raw), values, atol=1e-5)
    # the reading goes into the state in the quantities' own columns
    layout = _layout("inverted_pendulum")
    state = np.zeros((3, layout.dim), np.float32)
    put = reader.put(layout, state, reader.values(raw))
    np.testing.assert_allclose(put[:, layout.slices["pole_angle"]][:, 0], values[:, 1], atol=1e-5)
    # outputs must count each angle column twice
    with pytest.raises(ValueError, match="angles=\\['pole_angle'\\]"):
        build_position_reader(
            {"quantities": names, "angles": angles, "sizes": sizes, "outputs": 2, **TINY}
        )
