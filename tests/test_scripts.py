"""The retrain scripts, run as written at smoke sizes on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from conftest import REPO


def dry_run(script: str, tmp_path, timeout: int, **env) -> None:
    """Run a one-call GPU script with DRY_RUN=1 (CPU, smoke sizes); its output goes to
    tmp_path/out. The venv's python comes first on PATH, as `python3`."""
    run = subprocess.run(
        ["bash", script],
        cwd=REPO,
        env={
            **os.environ,
            "DRY_RUN": "1",
            "OUT": str(tmp_path / "out"),
            "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
            "OMP_NUM_THREADS": "1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def test_gpu_retrain_script_dry_runs_on_the_cpu(tmp_path):
    """scripts/train_world_model_gpu.sh with DRY_RUN=1: the same stages as on a lent GPU
    (data, dynamics from scratch, state decoder, fidelity), tiny, bringing back what the GPU
    run would."""
    dry_run(
        "scripts/train_world_model_gpu.sh",
        tmp_path,
        900,
        WORK=str(tmp_path / "work"),
        PYTHON=sys.executable,
    )
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(
        [
            "dynamics.json",
            "dynamics.safetensors",
            "fidelity.json",
            "fidelity.png",
            "log.csv",
            "tokenizer.json",
            "tokenizer.safetensors",
        ]
    )
    tokenizer = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    assert tokenizer["step"] == 2 and tokenizer["config"]["scene"]  # the state decoder
    card = json.loads((tmp_path / "out" / "dynamics.json").read_text())
    assert card["step"] == 2 and card["config"]["roles"][6:] == ["static", "static"]
    fidelity = json.loads((tmp_path / "out" / "fidelity.json").read_text())
    assert fidelity["long_rollout"]["frames"] == 20
    assert "fingertip" in fidelity["model_state_error_per_horizon"]["median"]
    # the checkpoint folder it assembled carries the shipped reasoner files beside it
    assert (tmp_path / "work" / "checkpoint" / "reasoner.safetensors").is_file()


def test_gpu_bench_script_dry_runs_on_the_cpu(tmp_path):
    """scripts/bench_gpu.sh with DRY_RUN=1: both benchmarks through the serving engine
    (configs/engine/cuda.yaml's graph path, run eagerly here), JSON where the GPU run
    writes it, with the old-world cost measured."""
    dry_run("scripts/bench_gpu.sh", tmp_path, 600)
    engine = json.loads((tmp_path / "out" / "engine_cpu.json").read_text())
    assert [r["batch"] for r in engine["rows"]] == [1, 2]
    assert [r["old_world_frames"] for r in engine["long_world"]] == [10, 10]
    envs = json.loads((tmp_path / "out" / "envs_cpu.json").read_text())
    assert envs["engine"] == "cuda" and [r["num_envs"] for r in envs["rows"]] == [1, 2]
    assert all(r["ratio_vs_best_mujoco"] > 0 for r in envs["rows"])


def tiny_ip_script(script: str, *args: str, **env: str) -> str:
    """Run a script at smoke sizes on InvertedPendulum, one thread; its output, or fail
    with it."""
    env = {**os.environ, "TINY": "1", "TASK": "inverted_pendulum", "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", **env}  # fmt: skip
    run = subprocess.run(
        ["bash", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def test_retrain_script_trains_a_task_from_scratch(tmp_path):
    """scripts/train_world_model.sh TASK=inverted_pendulum TOKENIZER=train at smoke sizes:
    the tokenizer trains from scratch (as for a task that ships nothing: no shipped file is
    copied) and a position reader reads the cart and the pole angle off the new decoder's
    frames, which the evaluation checks the dreamed frames' state with; its long rollout
    is driven by the noisy expert on the model's own state (the task's
    free_rollout_policy)."""
    work = tmp_path / "work"
    tiny_ip_script("scripts/train_world_model.sh", str(work), TOKENIZER="train")
    reader = json.loads((work / "checkpoint" / "position_reader.json").read_text())
    assert reader["config"]["quantities"] == ["cart_position", "pole_angle"]
    assert reader["config"]["angles"] == ["pole_angle"] and reader["config"]["outputs"] == 3
    assert not (work / "checkpoint" / "reasoner.safetensors").exists()  # Reacher's only
    motion = json.loads((work / "checkpoint" / "state_filter.json").read_text())
    assert motion["reading_std"] == [] and len(motion["transition"]) == 4  # cart and pole
    long = json.loads((work / "fidelity" / "fidelity.json").read_text())["long_rollout"]
    assert set(long["reader_vs_state_max_rad"]) == {"pole_angle"}
    assert set(long["reader_vs_state_max_cm"]) == {"cart_position"}
    assert isinstance(long["reader_agrees"], bool)
    assert isinstance(long["frame_shows_state"], bool)  # against MuJoCo's render of the state
    assert len(long["fg_psnr_vs_render_of_state_every_100"]) == len(long["checked_frames"])
    assert long["actions"].startswith("expert@0.3 acting on the model's own state")
    # a rerun skips the finished training stages (their latents took ~12 min to load on
    # Pusher) and evaluates again
    again = tiny_ip_script("scripts/train_world_model.sh", str(work), TOKENIZER="train")
    assert "evaluation" in again
    skipped = ("tokenizer from scratch", "dynamics from scratch", "decoder:", "position reader")
    assert not any(s in again for s in skipped), again
    # the dynamics stage's latent cache stays keyed by the source tokenizer, the reader's by
    # the fine-tuned one: sharing one file, each rerun encoded every frame twice more
    from worldsim.checkpoint import file_sha256
    from worldsim.train.latent_set import LatentSet

    data = work / "data"
    for cache, tok in (("inverted_pendulum_latents", work / "tokenizer_source.safetensors"),
                       ("inverted_pendulum_latents_checkpoint",
                        work / "checkpoint" / "tokenizer.safetensors")):  # fmt: skip
        meta = LatentSet.load(data / f"{cache}.safetensors").meta
        assert meta["tokenizer_sha256"] == file_sha256(tok), cache
    # scripts/dream_rounds.sh on that run, one round: the dream-trained policies' MuJoCo
    # episodes grow a copy of the store, the transition alone trains further on it
    tiny_ip_script("scripts/dream_rounds.sh", str(work), "1", EPISODES="2")
    from worldsim.checkpoint import load_tensors
    from worldsim.datasets.generate import POLICY_KINDS
    from worldsim.datasets.store import EpisodeStore

    rounds = work / "rounds"
    for k in (0, 1):
        report = json.loads((rounds / f"transfer{k}" / "transfer.json").read_text())
        assert report["config"]["checkpoint"] == str(
            work / "checkpoint" if k == 0 else rounds / "checkpoint1"
        )
    original = EpisodeStore.open(data / "inverted_pendulum.zarr")
    grown = EpisodeStore.open(data / "inverted_pendulum_agent.zarr")
    assert grown.num_episodes == original.num_episodes + 2
    kinds = grown.meta["episode_policy"][:]
    assert (kinds[original.num_episodes :] == POLICY_KINDS.index("agent")).all()
    before, _ = load_tensors(work / "checkpoint" / "dynamics.safetensors")
    after, _ = load_tensors(rounds / "checkpoint1" / "dynamics.safetensors")
    frame = [k for k in before if not k.startswith("transition.")]
    assert frame and all(torch.equal(before[k], after[k]) for k in frame)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in frame)
    assert (rounds / "checkpoint1" / "position_reader.json").is_file()  # the rest: copied
    # episodes appended between rounds by other means join the next round's data, which
    # adds EPISODES on top of them
    extra = [sys.executable, "-m", "worldsim.cli", "data", "generate", "task=inverted_pendulum",
             f"out={data / 'inverted_pendulum_agent.zarr'}", "append=true", "policy=expert",
             f"episodes={grown.num_episodes + 1}", "task.max_episode_steps=20",
             "workers=0"]  # fmt: skip
    assert subprocess.run(extra, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    tiny_ip_script("scripts/dream_rounds.sh", str(work), "2", EPISODES="2")
    assert EpisodeStore.open(data / "inverted_pendulum_agent.zarr").num_episodes == (
        grown.num_episodes + 1 + 2
    )
    assert (rounds / "transfer2" / "transfer.md").is_file()
    # another series (e.g. at another PPO budget) starts from a checkpoint of this one
    tiny_ip_script("scripts/dream_rounds.sh", str(work), "0", FROM=str(rounds / "checkpoint2"),
                   RDIR="rounds_b")  # fmt: skip
    report = json.loads((work / "rounds_b" / "transfer0" / "transfer.json").read_text())
    assert report["config"]["checkpoint"] == str(rounds / "checkpoint2")


def test_retrain_script_names_the_tasks_it_knows(tmp_path):
    run = subprocess.run(
        ["bash", "scripts/train_world_model.sh", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "TASK": "walker"},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "TASK=walker: expected one of" in run.stderr
    assert "inverted_pendulum" in run.stderr and "reacher" in run.stderr
