"""Append every episode of one episode store to another (same task and arrays), as the
model card's fast-held-keys continuation built its store:

    worldsim data generate task=reacher episodes=200 seed=2000000 policy=keys \
        task.max_episode_steps=200 out=keys_long.zarr
    cp -r data/reacher.zarr merged.zarr
    python experiments/merge_stores.py merged.zarr keys_long.zarr
    worldsim train dynamics task=reacher data_path=merged.zarr latents=merged_latents.safetensors \
        run_dir=<a copy of the shipped run> train.steps=16500 [transition.weight=0]
"""

from __future__ import annotations

import argparse

from worldsim.datasets.store import EpisodeStore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dst", help="store to append to")
    p.add_argument("src", help="store whose episodes are appended")
    args = p.parse_args()
    dst, src = EpisodeStore.open(args.dst, mode="r+"), EpisodeStore.open(args.src)
    before = dst.num_episodes
    for ep in src.episodes():
        dst.add_episode(ep.data, seed=ep.seed, policy=ep.policy)
    print(f"{args.dst}: {before} -> {dst.num_episodes} episodes, {dst.num_rows} rows")


if __name__ == "__main__":
    main()
