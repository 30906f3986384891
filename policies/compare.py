"""`worldsim policy compare`: does the dream rank policies the way MuJoCo does?

Every rung of the ladder (scripted rungs of known quality plus the policy files under
`ladder=DIR`, e.g. a training run's checkpoints) runs episodes (mean actions, or sampled
ones with `deterministic=false`) from the same reset seeds in MuJoCo, in the dream and
in each baseline simulator (`baselines`: the linear joint model alone). Each
simulator's mean returns are compared with MuJoCo's by Pearson and Spearman correlation
and MMRV (policies/metrics.py); compare.json and a scatter plot go in the run folder,
rewritten after every rung. A pixel policy has no rung in the linear-model baseline (it
has no frames): its rung says so and that baseline's figures leave it out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.checkpoint import save_json
from worldsim.policies.evaluate import kept, rollout, run_folder, summarise
from worldsim.policies.metrics import mmrv, pearson, spearman
from worldsim.policies.zoo import make_policy


def ladder_specs(cfg: DictConfig) -> list[str]:
    specs = list(cfg.scripted)
    if cfg.ladder:
        root = Path(cfg.ladder)
        if not root.is_dir():
            raise FileNotFoundError(f"ladder={root} is not a folder")
        specs += [str(p.with_suffix("")) for p in sorted(root.rglob("*.json")) if _is_policy(p)]
    if len(specs) < 3:
        raise ValueError(f"a ladder needs at least 3 policies to rank, got {specs}")
    return specs


def _is_policy(path: Path) -> bool:
    return path.with_suffix(".safetensors").is_file() and '"worldsim-policy/' in path.read_text()


def scores(rungs: list[dict], place: str = "dream") -> dict:
    """Agreement of a simulator's mean returns (and success rates) with MuJoCo's."""
    done = [r for r in rungs if place in r and "mujoco" in r]
    if len(done) < 2:
        return {}
    real = np.array([r["mujoco"]["mean_return"] for r in done])
    dream = np.array([r[place]["mean_return"] for r in done])
    out = {
        "policies": len(done),
        "return": {
            "pearson": pearson(dream, real),
            "spearman": spearman(dream, real),
            "mmrv": mmrv(dream, real),
        },
    }
    trivial = [r["mujoco"]["mean_return"] for r in done if r["policy"] in ("random", "zero")]
    if trivial:  # regrets as fractions of the best policy's margin over doing nothing
        out["return"]["mmrv_trivial"] = mmrv(dream, real, floor=max(trivial))
    real_s = np.array([r["mujoco"]["success_rate"] for r in done])
    dream_s = np.array([r[place]["success_rate"] for r in done])
    out["success"] = {
        "pearson": pearson(dream_s, real_s),
        "spearman": spearman(dream_s, real_s),
        "mmrv": mmrv(dream_s, real_s, normalise=False),
    }
    return out


def plot(rungs: list[dict], agreement: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rungs if "dream" in r and "mujoco" in r]
    x = [r["mujoco"]["mean_return"] for r in done]
    y = [r["dream"]["mean_return"] for r in done]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(x, y)
    for r, xi, yi in zip(done, x, y, strict=False):
        ax.annotate(
            Path(r["policy"]).name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    lo, hi = min(x + y), max(x + y)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="dream = MuJoCo")
    ax.set_xlabel("mean return in MuJoCo")
    ax.set_ylabel("mean return in the dream")
    a = {k: float("nan") for k in ("pearson", "spearman", "mmrv")} | agreement.get("return", {})
    ax.set_title(
        f"Pearson {a['pearson']:.3f}  Spearman {a['spearman']:.3f}  MMRV {a['mmrv']:.3f}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_policies(cfg: DictConfig, progress: bool = True) -> dict:
    bad = [b for b in cfg.baselines if b != "linear"]
    if bad:
        raise ValueError(f"unknown baselines {bad}; compare ranks in: ['linear']")
    specs = ladder_specs(cfg)
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    folder = run_folder(cfg.out_dir, "runs/policy_compare", cfg.task.name)
    report = {
        "task": cfg.task.name,
        "seeds": seeds,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "status": "partial",
        "rungs": [],
    }
    with kept(folder / "compare.json", report):
        for spec in tqdm(specs, desc="policy compare", disable=not progress):
            policy, obs = make_policy(spec, cfg.task, None, cfg.device)
            rung = {"policy": spec, "obs": obs}
            report["rungs"].append(rung)
            kw = dict(obs=obs, context=cfg.context, deterministic=cfg.deterministic)
            for where in ("mujoco", "dream", *cfg.baselines):
                if where == "linear" and obs != "state":  # it simulates joints, no frames
                    rung.setdefault("not_run", {})[where] = f"simulates obs=state only, not {obs}"
                    continue
                rung[where] = summarise(rollout(where, policy, cfg, seeds, **kw), seeds)
            report["agreement"] = scores(report["rungs"])
            for where in cfg.baselines:  # the same figures for each baseline simulator
                report[f"agreement_{where}"] = scores(report["rungs"], where)
            save_json(folder / "compare.json", report)
        plot(report["rungs"], report["agreement"], folder / "compare.png")
    report["folder"] = str(folder)
    return report
