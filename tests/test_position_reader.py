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
    assert torch.equal(frames[[0, 2]], drawn[[0, 2]]) and torch.equal(frames[1], plain[1])
    assert not torch.equal(drawn[1], plain[1])  # the two decodings differ
    assert torch.equal(decode_rows(tok, latents, rows, False), plain)
