"""`worldsim policy transfer`: how much of MuJoCo training does training in the dream buy?

Per seed, one policy trains in the dream and one in MuJoCo with the same algorithm,
hyperparameters and environment-step budget; both, and a uniform random policy, then run
the same deterministic MuJoCo episodes. The transfer ratio is
(R_dream-trained - R_random) / (R_MuJoCo-trained - R_random), all returns in MuJoCo.
A finished training run (its policy file exists) is reused, so an interrupted report
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from worldsim.checkpoint import save_json
from worldsim.policies.evaluate import rollout_mujoco, summarise
from worldsim.policies.metrics import transfer_ratio
from worldsim.policies.train import train_policy
from worldsim.policies.zoo import make_policy

SHARED = (
    "task",
    "algo",
    "steps",
    "n_envs",
    "net_arch",
    "obs",
    "reward_source",
    "context",
    "checkpoint",
    "device",
)


def train_config(cfg: DictConfig, where: str, seed: int, folder: Path) -> DictConfig:
    """The `policy train` config of one run, sharing the transfer config's settings."""
    from worldsim.cli import compose_config

    base = compose_config("policy_train", [f"task={cfg.task.name}", f"algo={cfg.algo.name}"])
    for key in SHARED:
        base[key] = cfg[key]
    base.where, base.seed, base.save_every = where, seed, 0
    base.out_dir = str(folder / f"{where}-seed{seed}")
    return base


def mujoco_return(spec: str, cfg: DictConfig, seeds: list[int]) -> dict:
    policy, obs = make_policy(spec, cfg.task, cfg.obs, cfg.device)
    return summarise(rollout_mujoco(policy, cfg.task, seeds, obs=obs, context=cfg.context), seeds)


def transfer_report(cfg: DictConfig, progress: bool = True) -> dict:
    folder = Path(cfg.out_dir)
    seeds = [cfg.eval_seed + i for i in range(cfg.episodes)]
    report = {
        "task": cfg.task.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "eval_seeds": seeds,
        "random": mujoco_return("random", cfg, seeds),
        "runs": [],
        "status": "partial",
    }
    for seed in cfg.seeds:
        run = {"seed": int(seed)}
        for where in ("mujoco", "dream"):
            tcfg = train_config(cfg, where, int(seed), folder)
            policy = Path(tcfg.out_dir) / "policy"
            if not policy.with_suffix(".json").is_file():
                train_policy(tcfg, progress)
            trained_on = OmegaConf.load(Path(tcfg.out_dir) / "config.yaml").device
            run[where] = {
                "policy": str(policy),
                "trained_on": trained_on,
                **mujoco_return(str(policy), cfg, seeds),
            }
        run["ratio"] = transfer_ratio(
            run["dream"]["mean_return"],
            run["mujoco"]["mean_return"],
            report["random"]["mean_return"],
        )
        report["runs"].append(run)
        save_json(folder / "transfer.json", report)
    ratios = np.array([r["ratio"] for r in report["runs"]])
    report["ratio"] = {
        "mean": float(ratios.mean()),
        "std": float(ratios.std()),
        "per_seed": ratios.tolist(),
    }
    report["status"] = "complete"
    save_json(folder / "transfer.json", report)
    (folder / "transfer.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    c = report["config"]
    lines = [
        f"# Transfer: {report['task']}, {c['algo']['name']}, {c['steps']} env steps, "
        f"obs={c['obs']}",
        "",
        f"MuJoCo returns over {len(report['eval_seeds'])} deterministic episodes; random policy "
        f"{report['random']['mean_return']:.2f}.",
        "",
        "| seed | MuJoCo-trained | dream-trained | ratio | trained on (MuJoCo, dream) |",
        "|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['seed']} | {r['mujoco']['mean_return']:.2f} | {r['dream']['mean_return']:.2f} "
            f"| {r['ratio']:.3f} | {r['mujoco']['trained_on']}, {r['dream']['trained_on']} |"
        )
    ratio = report["ratio"]
    lines += [
        "",
        f"Transfer ratio: **{ratio['mean']:.3f} ± {ratio['std']:.3f}** (mean ± std over "
        f"{len(report['runs'])} seeds)",
        "",
    ]
    return "\n".join(lines)
