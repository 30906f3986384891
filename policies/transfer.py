"""`worldsim policy transfer`: how much of MuJoCo training does training in the dream buy?

Per seed, one policy trains in the dream, one in MuJoCo and one per baseline
(`baselines`: `linear`, the simulator made of the fitted linear joint model alone;
`blind`, MuJoCo with the arm's encoders only, no target and no frames) with the same
algorithm, hyperparameters and environment-step budget; all of them, a uniform random
policy and the zero action then run the same deterministic MuJoCo episodes. The transfer
ratio is (R_trained-elsewhere - R_base) / (R_MuJoCo-trained - R_base), all returns in
MuJoCo, with R_base the random policy's return, again with R_base the better of random
and zero action (on Reacher-v5 doing nothing already scores 0.90 on the first), and,
with `blind`, with R_base the blind policy's return of the same seed: on Reacher-v5 a
policy that never sees the target learns to fold the arm towards the middle of the
target disc and scores -8.7 to -9.5 at 100,000 steps, above zero action's -11.9 and
close to the seeing policies' -8 to -8.5, so only this ratio asks whether the target
was found.
A finished training run (its policy file exists) is reused, so an interrupted report
resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from worldsim.checkpoint import save_json
from worldsim.policies.evaluate import CLOSER_M, rollout_mujoco, summarise
from worldsim.policies.metrics import transfer_ratio
from worldsim.policies.train import make_train_env, train_policy
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


BASELINES = {"linear": {"where": "linear"}, "blind": {"where": "mujoco", "obs": "proprio"}}
"""Baseline name -> the `policy train` settings that differ from the report's."""


def train_config(cfg: DictConfig, place: str, seed: int, folder: Path) -> DictConfig:
    """The `policy train` config of one run (place: mujoco, dream or a baseline), sharing
    the transfer config's settings."""
    from worldsim.cli import compose_config

    base = compose_config("policy_train", [f"task={cfg.task.name}", f"algo={cfg.algo.name}"])
    for key in SHARED:
        base[key] = cfg[key]
    base.where, base.seed, base.save_every = place, seed, cfg.save_every
    for key, value in BASELINES.get(place, {}).items():
        base[key] = value
    base.out_dir = str(folder / f"{place}-seed{seed}")
    return base


def mujoco_return(spec: str, cfg: DictConfig, seeds: list[int]) -> dict:
    """A policy file (with its own observations) or random/zero, in MuJoCo."""
    file = spec not in ("random", "zero")
    policy, obs = make_policy(spec, cfg.task, None if file else cfg.obs, cfg.device)
    return summarise(rollout_mujoco(policy, cfg.task, seeds, obs=obs, context=cfg.context), seeds)


def untrainable(where: str, cfg: DictConfig, folder: Path) -> str:
    """Why `policy train where=<where>` refuses this report's observations (its error)."""
    try:
        make_train_env(train_config(cfg, where, 0, folder))
    except ValueError as e:
        return str(e)
    raise AssertionError(f"where={where} trains obs={cfg.obs}: add it to baselines")


def transfer_report(cfg: DictConfig, progress: bool = True) -> dict:
    folder = Path(cfg.out_dir)
    seeds = [cfg.eval_seed + i for i in range(cfg.episodes)]
    bad = [p for p in cfg.baselines if p not in BASELINES]
    if bad:
        raise ValueError(f"unknown baselines {bad}; choose from {sorted(BASELINES)}")
    # the linear model simulates joints only: for pixel policies its row says so, measured
    cannot = {} if cfg.obs == "state" else {"linear": untrainable("linear", cfg, folder)}
    places = ["dream", *(p for p in cfg.baselines if p not in cannot)]
    random, zero = (mujoco_return(spec, cfg, seeds) for spec in ("random", "zero"))
    trivial = max(random["mean_return"], zero["mean_return"])
    report = {
        "task": cfg.task.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "eval_seeds": seeds,
        "random": random,
        "zero": zero,
        "trivial_return": trivial,
        "normalisations": {
            "random": "(R - R_random) / (R_MuJoCo-trained - R_random)",
            "trivial": "(R - R_best) / (R_MuJoCo-trained - R_best), R_best the better of "
            "random and zero action",
        },
        "runs": [],
        "cannot_train": cannot,
        "status": "partial",
    }
    ratios = ["ratio", "ratio_trivial"] + (["ratio_blind"] if "blind" in places else [])
    for seed in cfg.seeds:
        run = {"seed": int(seed)}
        for where in ("mujoco", *places):
            tcfg = train_config(cfg, where, int(seed), folder)
            policy = Path(tcfg.out_dir) / "policy"
            if not policy.with_suffix(".json").is_file():
                train_policy(tcfg, progress)
            trained_on = OmegaConf.load(Path(tcfg.out_dir) / "config.yaml").device
            card = json.loads(policy.with_suffix(".json").read_text())
            run[where] = {
                "policy": str(policy),
                "trained_on": trained_on,
                "train_seconds": card.get("train_seconds"),
                **mujoco_return(str(policy), cfg, seeds),
            }
        best = run["mujoco"]["mean_return"]
        for where in places:
            r = run[where]["mean_return"]
            run[where]["ratio"] = defined_ratio(r, best, random["mean_return"])
            run[where]["ratio_trivial"] = defined_ratio(r, best, trivial)
            if "blind" in places:
                run[where]["ratio_blind"] = defined_ratio(r, best, run["blind"]["mean_return"])
        report["runs"].append(run)
        save_json(folder / "transfer.json", report)
    for where in places:
        report[where] = {}
        for key in (*ratios, "success_rate"):
            per_seed = [r[where][key] for r in report["runs"]]
            v = np.array([x for x in per_seed if x is not None])  # seeds where it is defined
            report[where][key] = {
                "mean": float(v.mean()) if len(v) else None,
                "std": float(v.std()) if len(v) else None,
                "per_seed": per_seed,
            }
        if "pair_distance" in report["runs"][0][where]:
            report[where]["pair_distance"] = {
                k: float(np.mean([r[where]["pair_distance"][k] for r in report["runs"]]))
                for k in report["runs"][0][where]["pair_distance"]
            }
    report["status"] = "complete"
    save_json(folder / "transfer.json", report)
    (folder / "transfer.md").write_text(markdown(report))
    return report


def defined_ratio(r: float, mujoco_trained: float, baseline: float) -> float | None:
    """`transfer_ratio`, None where the MuJoCo-trained policy scores the baseline's return
    (short or tiny runs: nothing to normalise by); the report says "undefined"."""
    if mujoco_trained == baseline:
        return None
    return transfer_ratio(r, mujoco_trained, baseline)


def ratio_cell(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def markdown(report: dict) -> str:
    c, cannot = report["config"], report.get("cannot_train", {})
    places = ["dream", *(p for p in c.get("baselines", []) if p not in cannot)]
    rnd, zero = report["random"], report["zero"]
    ratios = [k for k in RATIO_NAMES if k in report["runs"][0]["dream"]]
    heads = " | ".join(f"ratio, {RATIO_NAMES[k]}" for k in ratios)
    lines = [
        f"# Transfer: {report['task']}, {c['algo']['name']}, {c['steps']} env steps, "
        f"obs={c['obs']}",
        "",
        f"MuJoCo returns over {len(report['eval_seeds'])} deterministic episodes. Trivial "
        f"policies: random {rnd['mean_return']:.2f} (success {rnd['success_rate']:.0%}), zero "
        f"action {zero['mean_return']:.2f} (success {zero['success_rate']:.0%}). Ratios: "
        "(R - R_base) / (R_MuJoCo-trained - R_base), R_base random's return (random-norm.), "
        "the better of random and zero action (trivial-norm., the one doing nothing cannot "
        "pass)"
        + (
            ", or the return of the same seed's policy trained in MuJoCo on the arm's "
            "encoders alone, never seeing the target (blind-norm.: only finding the target "
            "passes)"
            if "ratio_blind" in ratios
            else ""
        )
        + f". Success: {success_words(c['task'])} at the episode's end."
        + (pair_words(c["task"], rnd, zero) if "pair_distance" in zero else ""),
        "",
        f"| seed | trained in | MuJoCo return | success | {heads} | training wall time |",
        "|---:|---|---:|---:|" + "---:|" * len(ratios) + "---:|",
    ]
    if "pair_distance" in zero:
        lines[-2] = lines[-2].replace(" | training", " | distance first -> last, closer | training")
        lines[-1] += "---:|"
    for r in report["runs"]:
        for where in ("mujoco", *places):
            x = r[where]
            cells = " | ".join("1" if where == "mujoco" else ratio_cell(x[k]) for k in ratios)
            if "pair_distance" in x:
                cells += f" | {pair_cell(x['pair_distance'])}"
            secs = x.get("train_seconds")
            wall = f"{secs / 60:.1f} min on {x['trained_on']}" if secs is not None else "n/a"
            lines.append(
                f"| {r['seed']} | {PLACE_NAMES[where]} | {x['mean_return']:.2f} | "
                f"{x['success_rate']:.0%} | {cells} | {wall} |"
            )
    pair = "pair_distance" in report[places[0]]
    lines += [
        "",
        f"| trained in | {heads} | success |" + (" distance first -> last, closer |" * pair),
        "|---|" + "---:|" * (len(ratios) + 1 + pair),
    ]
    for where in places:
        s = report[where]
        cells = " | ".join(
            "undefined" if s[k]["mean"] is None else f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}"
            for k in ratios
        )
        cells += f" | {s['success_rate']['mean']:.0%} |"
        if pair:
            cells += f" {pair_cell(s['pair_distance'])} |"
        lines.append(f"| {PLACE_NAMES[where]} | {cells}")
    for where, why in cannot.items():
        lines.append(f"| {PLACE_NAMES[where]} | cannot train: {why} |" + " |" * len(ratios))
    lines += ["", f"(mean ± std over {len(report['runs'])} seeds)", ""]
    return "\n".join(lines)


def success_words(task: dict) -> str:
    if task.get("success_distance") is not None:
        a, b = task["success_pair"]
        return f"the {a} within {task['success_distance']} m of the {b}"
    if task.get("success_min_steps"):
        return f"lasting {task['success_min_steps']} steps"
    return "none defined"


def pair_cell(d: dict) -> str:
    return f"{100 * d['first_m']:.1f} -> {100 * d['last_m']:.1f} cm, {d['closer_fraction']:.0%}"


def pair_words(task: dict, rnd: dict, zero: dict) -> str:
    a, b = task["success_pair"]
    return (
        f" Distance: the {a}-{b} distance at the first and last step, mean over episodes, and "
        f"the share of episodes that ended at least {100 * CLOSER_M:.0f} cm closer than they "
        f"began (random {pair_cell(rnd['pair_distance'])}; zero action "
        f"{pair_cell(zero['pair_distance'])})."
    )


RATIO_NAMES = {
    "ratio": "random-norm.",
    "ratio_trivial": "trivial-norm.",
    "ratio_blind": "blind-norm.",
}

PLACE_NAMES = {
    "mujoco": "MuJoCo",
    "dream": "the dream (world model)",
    "linear": "linear joint model alone (baseline)",
    "blind": "MuJoCo, encoders only: never sees the target (baseline)",
}
