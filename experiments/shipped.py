"""What the experiments read: a Reacher checkpoint (default: the shipped one), its position
reader and the held-out store, loaded one way for all of them."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from worldsim.cli import compose_config
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir, load_world_model
from worldsim.scene import SceneLayout
from worldsim.train.position_reader import load_position_reader

CONTEXT = 4  # real frames a rollout starts from, as `worldsim eval fidelity`


@dataclass
class Reacher:
    task: object
    tok: object
    dyn: object
    reader: object
    store: EpisodeStore
    layout: SceneLayout


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every experiment takes."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: shipped)")
    p.add_argument("--store", default="data/reacher_heldout.zarr", help="held-out store")
    return p


def load(args: argparse.Namespace) -> Reacher:
    task = compose_config("dream", ["task=reacher"]).task
    folder = checkpoint_dir("reacher", args.checkpoint)
    tok, dyn = load_world_model(task, folder)
    reader = load_position_reader(folder / "position_reader.safetensors", task)
    layout = SceneLayout.from_dict(dyn.cfg.scene)
    return Reacher(task, tok, dyn, reader, EpisodeStore.open(args.store), layout)
