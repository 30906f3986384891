"""The `worldsim` command: one console script, subcommands, Hydra `key=value` overrides."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from worldsim.extras import MissingExtraError, require
from worldsim.mujoco_sim import RenderError

# Short override names accepted by a command, mapped to their config keys.
GENERATE_ALIASES = {
    k: f"data.{k}"
    for k in (
        "episodes",
        "policy",
        "workers",
        "seed",
        "noise_fraction",
        "keys_fraction",
        "expert_noise",
        "expert_state_noise",
        "expert_targets",
        "agents",
        "agent_noise",
    )
}

EPILOG = """\
Overrides are Hydra's key=value (e.g. task=pusher data.seed=3); show the composed
config with --cfg [job|hydra|all]; sweep with -m key=a,b. Tasks: reacher,
inverted_pendulum, pusher.

examples:
  worldsim data generate task=reacher episodes=20 policy=mix out=data/reacher.zarr
  worldsim data generate task=reacher episodes=1000 out=data/reacher.zarr resume=true
  worldsim data inspect data/reacher.zarr
  worldsim data validate data/reacher.zarr
  worldsim data preview data/reacher.zarr out=preview.mp4 episodes=9
  worldsim train tokenizer task=reacher            # then: worldsim train dynamics task=reacher
  worldsim train decoder task=reacher              # after dynamics: the decoder draws the state
  worldsim eval tokenizer task=reacher
  worldsim dream task=reacher checkpoint=DIR steps=200 policy=expert out=dream.mp4
  worldsim eval fidelity task=reacher checkpoint=DIR
  worldsim policy train -m seed=0,1,2 steps=20000   # three jobs, one after another
"""


GROUPS = ("task", "data", "model", "train", "engine", "algo")
CFG_PARTS = ("job", "hydra", "all")  # Hydra's --cfg choices


def group_options(group: str) -> list[str]:
    """Config names available in a group (the YAML files under configs/<group>/)."""
    folder = resources.files("worldsim.configs") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def compose_config(
    name: str,
    overrides: Sequence[str],
    aliases: dict[str, str] | None = None,
    with_hydra: bool = False,
) -> DictConfig:
    """Compose a primary config from `worldsim.configs` with user overrides (with_hydra: also
    Hydra's own `hydra` node, for --cfg hydra|all)."""
    fixed = []
    for o in overrides:
        if "=" not in o:
            raise ValueError(f"override {o!r} is not key=value")
        key, value = o.split("=", 1)
        key = (aliases or {}).get(key, key)
        if key in GROUPS and value not in group_options(key):
            raise ValueError(f"unknown {key} {value!r}; choose one of {group_options(key)}")
        fixed.append(f"{key}={value}")
    with initialize_config_module("worldsim.configs", version_base="1.3"):
        cfg = compose(config_name=name, overrides=fixed, return_hydra_config=with_hydra)
    reject_unread_additions(name, cfg, fixed)
    check_ranges(cfg)
    return cfg


def check_ranges(cfg: DictConfig, prefix: str = "") -> None:
    """Refuse a value outside its schema field's range (`configs.schema.within`), naming the
    key, the value and what was expected."""
    schema = OmegaConf.get_type(cfg)
    ranges = (
        {f.name: f.metadata["range"] for f in fields(schema) if "range" in f.metadata}
        if (schema is not None and is_dataclass(schema))
        else {}
    )
    for key in cfg:
        if OmegaConf.is_missing(cfg, key) or (not prefix and key == "hydra"):
            continue
        value = cfg[key]
        if isinstance(value, DictConfig):
            check_ranges(value, f"{prefix}{key}.")
        elif key in ranges and value is not None:
            low, high = ranges[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise ValueError(f"{prefix}{key}={value!r}: expected a number")
            if (low is not None and value < low) or (high is not None and value > high):
                want = (
                    f"between {low} and {high}"
                    if low is not None and high is not None
                    else f">= {low}"
                    if low is not None
                    else f"<= {high}"
                )
                raise ValueError(f"{prefix}{key}={value!r} is out of range: expected {want}")


def reject_unread_additions(name: str, cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Hydra lets `+key=value` add any key; a key that the command's schema does not have is
    read by nothing (a typo), so say so. Free-form dicts (e.g. algo.kwargs) still take new
    keys."""
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        if not (o.is_add() or o.is_force_add()) or o.key_or_group.startswith("hydra"):
            continue
        parent_key, _, leaf = o.key_or_group.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
        if schema is not None and is_dataclass(schema):
            known = {f.name for f in fields(schema)}
            if leaf not in known:
                where = f"{parent_key!r}" if parent_key else f"the {name} config"
                raise ValueError(
                    f"override {o.input_line!r} adds {leaf!r} to {where}, which has no such "
                    f"key and would ignore it; its keys: {sorted(known)}"
                )


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """Hydra's basic sweeper: one override list per combination of the comma-separated (or
    range/choice) sweep values, in Hydra's order."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _cmd_generate(args) -> int:
    from worldsim.datasets.generate import generate

    if cfg := _composed(args, "generate", GENERATE_ALIASES):
        store = generate(cfg)
        print(f"{store.path}: {store.num_episodes} episodes, {store.num_rows} frames")
    return 0


def _cmd_inspect(args) -> int:
    from worldsim.datasets.report import format_inspect, inspect

    if args.json:  # refuse before the work, not after
        folder = Path(args.json).resolve().parent
        if not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise ValueError(
                f"--json {args.json}: folder {folder} does not exist or is not writable"
            )
    report = inspect(args.path)
    print(format_inspect(report))
    if args.json:
        from worldsim.checkpoint import save_json

        save_json(args.json, report)
    return 0


def _cmd_validate(args) -> int:
    from worldsim.datasets.report import validate
    from worldsim.datasets.store import StoreError

    try:
        notes = validate(args.path)
    except (StoreError, FileNotFoundError) as e:
        print(f"INVALID: {e}", file=sys.stderr)
        return 1
    for n in notes:
        print(f"note: {n}")
    print(f"OK: {args.path}")
    return 0


def _cmd_preview(args) -> int:
    from worldsim.datasets.preview import preview

    cfg = compose_config("preview", args.overrides)
    out = preview(args.path, cfg.out, cfg.episodes, cfg.scale, cfg.max_frames, cfg.seg)
    print(f"wrote {out}")
    return 0


def _composed(args, name: str, aliases: dict[str, str] | None = None) -> DictConfig | None:
    """The command's config, or None after printing it for --cfg job|hydra|all (Hydra's
    meanings; -p/--package prints one node of it, --resolve resolves interpolations)."""
    cfg = compose_config(name, args.overrides, aliases, with_hydra=args.cfg in ("hydra", "all"))
    if not args.cfg:
        return cfg
    if args.cfg == "job" and "hydra" in cfg:
        del cfg["hydra"]
    node = cfg.hydra if args.cfg == "hydra" else cfg
    if args.package:
        node = OmegaConf.select(node, args.package, throw_on_missing=False)
        if node is None:
            raise ValueError(f"--package {args.package!r}: no such node in the {name} config")
    if isinstance(node, DictConfig):
        print(OmegaConf.to_yaml(node, resolve=args.resolve))
    else:
        print(node)
    return None


def _cmd_train(args) -> int:
    from worldsim.train.decoder import train_decoder
    from worldsim.train.dynamics import train_dynamics
    from worldsim.train.position_reader import train_position_reader
    from worldsim.train.reasoner import train_reasoner
    from worldsim.train.state_filter import train_state_filter
    from worldsim.train.tokenizer import train_tokenizer

    trainers = {
        "tokenizer": train_tokenizer,
        "dynamics": train_dynamics,
        "decoder": train_decoder,
        "reasoner": train_reasoner,
        "position_reader": train_position_reader,
        "state_filter": train_state_filter,
    }
    if cfg := _composed(args, f"train_{args.what}"):
        result = trainers[args.what](cfg)
        print(json.dumps(result))
    return 0


def _cmd_dream(args) -> int:
    from worldsim.dream import dream

    if cfg := _composed(args, "dream"):
        print(json.dumps(dream(cfg), indent=2))
    return 0


def _cmd_play(args) -> int:
    from worldsim.play import PlayError, play

    if cfg := _composed(args, "play"):
        try:
            print(json.dumps(play(cfg), indent=2))
        except PlayError as e:
            print(f"worldsim: error: {e}", file=sys.stderr)
            return 2
    return 0


def _cmd_eval(args) -> int:
    from worldsim.eval.fidelity import run_fidelity, summary
    from worldsim.eval.reasoner import run_eval_reasoner
    from worldsim.train.tokenizer import eval_tokenizer

    cfg = _composed(args, f"eval_{args.what}")
    if cfg and args.what == "tokenizer":
        print(json.dumps(eval_tokenizer(cfg), indent=2))
    elif cfg and args.what == "reasoner":
        result = run_eval_reasoner(cfg)
        print(json.dumps(result["real"], indent=2))
        print(f"wrote {cfg.out_dir}/reasoner.json and reasoner.png")
    elif cfg:
        result = run_fidelity(cfg)
        print(summary(result))
        if "long_rollout" in result:
            long = {k: v for k, v in result["long_rollout"].items() if "every" not in k}
            print(json.dumps(long, indent=2))
        print(f"wrote {cfg.out_dir}/fidelity.json and fidelity.png")
    return 0


def _cmd_policy(args) -> int:
    from worldsim.policies.policy_file import PolicySpaceError

    cfg = _composed(args, f"policy_{args.what}")
    if not cfg:
        return 0
    require("stable_baselines3", "rl", f"worldsim policy {args.what}")
    try:
        if args.what == "train":
            from worldsim.policies.train import train_policy

            print(json.dumps(train_policy(cfg), indent=2))
        elif args.what == "eval":
            from worldsim.policies.evaluate import brief, eval_policy

            print(brief(eval_policy(cfg)))
        elif args.what == "compare":
            from worldsim.policies.compare import compare_policies

            report = compare_policies(cfg)
            print(json.dumps(report.get("agreement", {}), indent=2))
            print(f"wrote {report['folder']}/compare.json and compare.png")
        else:
            from worldsim.policies.transfer import transfer_report

            report = transfer_report(cfg)
            print((Path(cfg.out_dir) / "transfer.md").read_text())
            print(f"wrote {cfg.out_dir}/transfer.json and transfer.md")
    except PolicySpaceError as e:
        print(f"worldsim: error: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_bench(args) -> int:
    from worldsim.kernels import plan

    rows = plan.shipped_plans(batch=args.batch)
    print(plan.format_table(rows))
    out = Path(args.out_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"bench": "kernels", "targets": plan.TARGETS, "rows": rows}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _hydra_command(sub, name: str, func, whats: list[str] | None = None, **kw):
    """A subcommand whose arguments are Hydra overrides (plus --cfg, and a model/report name)."""
    if "epilog" in kw:  # keep the examples' line breaks
        kw["formatter_class"] = argparse.RawDescriptionHelpFormatter
    c = sub.add_parser(name, **kw)
    if whats:
        c.add_argument("what", choices=whats)
    c.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides: key=value, +key=value (add to a free-form dict), "
        "key=a,b,c or key=range(0,3) with -m",
    )
    c.add_argument(
        "-c",
        "--cfg",
        choices=CFG_PARTS,
        help="print the composed config and exit: job (the default when bare), hydra or all",
    )
    c.add_argument("-p", "--package", help="with --cfg: print only this node (e.g. task)")
    c.add_argument("--resolve", action="store_true", help="with --cfg: resolve ${...}")
    c.add_argument(
        "-m",
        "--multirun",
        action="store_true",
        help="run once per combination of sweep values (key=a,b key2=range(0,3)), "
        "one after another; give each job its own out/run_dir (e.g. via ${seed})",
    )
    c.set_defaults(func=func)
    return c


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="worldsim",
        description="worldsim: a generative world-model simulator for robotics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="grounding datasets: generate, inspect, validate, preview")
    dsub = data.add_subparsers(dest="data_command", required=True)

    _hydra_command(
        dsub,
        "generate",
        _cmd_generate,
        help="collect MuJoCo episodes into a zarr store",
        description="Collect episodes with worker processes (one writer) into a zarr store. "
        "Short keys: " + ", ".join(GENERATE_ALIASES) + " (= data.<key>); also task=, out=, "
        "resume=true (continue an interrupted or shorter store), append=true (continue it up "
        "to episodes= with other data settings, e.g. policy=agent agents=[POLICY,...]).",
        epilog=EPILOG,
    )

    i = dsub.add_parser("inspect", help="episodes, returns, success, pixel statistics, bytes/frame")
    i.add_argument("path")
    i.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    i.set_defaults(func=_cmd_inspect)

    v = dsub.add_parser("validate", help="check every invariant; exit 1 naming the first problem")
    v.add_argument("path")
    v.set_defaults(func=_cmd_validate)

    pv = dsub.add_parser(
        "preview",
        help="grid video of episodes (frames | segmentation)",
        description="Overrides: out=PATH.mp4|.gif episodes=N scale=K max_frames=N seg=true|false",
    )
    pv.add_argument("path")
    pv.add_argument("overrides", nargs="*", help="key=value overrides")
    pv.set_defaults(func=_cmd_preview)

    _hydra_command(
        sub,
        "train",
        _cmd_train,
        ["tokenizer", "dynamics", "decoder", "reasoner", "position_reader", "state_filter"],
        help="train a model (tokenizer, then dynamics, reasoner and position_reader on its "
        "latents, the decoder on the dynamics' own predictions, then the reasoner's joint "
        "state_filter)",
        description="Train on a grounding store; an existing run_dir is resumed. Overrides: "
        "task=, data_path=, run_dir=, tokenizer=PATH (dynamics, decoder, reasoner, "
        "position_reader), dynamics=PATH (decoder), "
        "model.<key>=, train.<key>= (steps, batch_size, lr, "
        "fg_weight, dtype=auto|bf16|fp32, device=cpu|cuda, ...). Multi-process: "
        "torchrun --nproc_per_node=2 -m worldsim.cli train tokenizer ... "
        "state_filter (seconds): data_path=, heldout_path=, checkpoint=DIR, out=PATH; copy "
        "its state_filter.json into the checkpoint folder to use it.",
    )

    _hydra_command(
        sub,
        "dream",
        _cmd_dream,
        help="roll out the world model beside MuJoCo (side-by-side video, PSNR)",
        description="Spawn from a live MuJoCo reset; the same actions drive MuJoCo and the "
        "dream. Overrides: task=, steps=N, policy=random|expert|keyboard-script, script=FILE, "
        "out=dream.mp4, twin=true|false, reground=true|false (restart from the twin's frames when "
        "the reasoner reads an impossible state), engine=fast|quality, checkpoint=DIR, seed=, "
        "device=.",
    )

    _hydra_command(
        sub,
        "play",
        _cmd_play,
        help="drive the dream from the keyboard in a window (or headless, scripted)",
        description="A window with the dreamed frame (and the MuJoCo twin with twin=true). "
        "Task keys drive the robot (Reacher: arrows / WASD); R reset, Space pause, . step, "
        "M human/policy, G re-ground from the twin, F5 record, H help, Esc/Q quit. Overrides: "
        "task=, twin=true, policy=random|expert|PATH (a policy file), scale=6, fps=30, "
        "record=out.mp4, screenshot=out.png, headless=true script=FILE frames=N (no display), "
        "checkpoint=DIR.",
    )

    _hydra_command(
        sub,
        "eval",
        _cmd_eval,
        ["fidelity", "tokenizer", "reasoner"],
        help="measure the world model against MuJoCo (fidelity per horizon, tokenizer, reasoner)",
        description="tokenizer: held-out reconstruction PSNR (whole, foreground, robot); "
        "overrides task=, data_path=, checkpoint=, episodes=. fidelity: held-out "
        "episodes, K real frames + true actions -> H generated "
        "frames; PSNR/SSIM (whole, foreground) per horizon vs copy-last and the tokenizer "
        "ceiling, plus a long stability rollout. Overrides: task=, data_path=, checkpoint=, "
        "context=, horizon=, episodes=, long_frames=, out_dir=, engine=fast|quality. "
        "reasoner: state error (physical units), QA exact match and success precision/recall "
        "on real frames, and state error per horizon on dreamed frames.",
    )
    _hydra_command(
        sub,
        "policy",
        _cmd_policy,
        ["train", "eval", "compare", "transfer"],
        help="train robot policies in the dream and judge them against MuJoCo",
        description="train: Stable-Baselines3 in the dream (batched worlds), in MuJoCo or in "
        "the linear-model baseline simulator; overrides task=, where=dream|mujoco|linear, "
        "algo=ppo|sac (algo.kwargs.<arg>=), steps=N, "
        "obs=state|pixels, n_envs=, seed=, save_every=N (ladder checkpoints), out_dir=. "
        "eval: one policy (policy=PATH|random|expert|expert@NOISE) from the same MuJoCo resets "
        "in MuJoCo and the dream; where=mujoco|dream|both, episodes=, deterministic=, "
        "stochastic=, videos=, out_dir= (default runs/policy_eval/<time>-<policy>). "
        "compare: a ladder (scripted rungs + ladder=DIR of policy files) in both; Pearson, "
        "Spearman, MMRV and a scatter plot. transfer: per seed (seeds=[0,1,2]) a dream-, a "
        "MuJoCo- and a baseline-trained policy (baselines=[linear]) with the same budget, all "
        "run in MuJoCo; transfer ratios normalised by random and by the better of random and "
        "zero action, and success rates. Needs the rl extra: pip install 'worldsim[rl]'.",
        epilog="""examples:
  worldsim policy train task=reacher where=dream algo=ppo steps=100000
  worldsim policy eval task=reacher policy=runs/policy/reacher-dream-ppo-state-seed0/policy
  worldsim policy compare task=reacher ladder=runs/policy/reacher-mujoco-ppo-state-seed0/ladder
  worldsim policy transfer task=reacher steps=100000 seeds=[0,1,2]""",
    )
    bench = sub.add_parser("bench", help="on-paper plans of the shipped models")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    bk = bsub.add_parser(
        "kernels",
        help="SBUF plan and roofline of the shipped checkpoints on Trainium (no device needed)",
        description="Per shipped model: FLOPs and bytes per frame per op, weights + KV cache + "
        "activations per NeuronCore against SBUF (Trn2 24 MiB, Trn3 32 MiB), and predicted "
        "frames/s per core from the peak bf16 rate. Timing benchmarks live in bench/.",
    )
    bk.add_argument("--batch", type=int, default=1, help="worlds whose KV caches share the core")
    bk.add_argument("--out-json", default="bench/results/kernels.json", help="JSON report path")
    bk.set_defaults(func=_cmd_bench)
    return p


def with_bare_cfg(argv: Sequence[str]) -> list[str]:
    """`--cfg`/`-c` not followed by job|hydra|all means `--cfg job` (Hydra needs the word;
    `worldsim ... --cfg key=value` has always worked)."""
    out = []
    for i, a in enumerate(argv):
        out.append(a)
        if a in ("--cfg", "-c") and (i + 1 == len(argv) or argv[i + 1] not in CFG_PARTS):
            out.append("job")
    return out


def error_message(e: BaseException) -> str:
    """The error and what caused it (Hydra's 'Error merging override steps=abc' says why
    only in its cause: the type it expected)."""
    parts = []
    while e is not None:
        text = " ".join(str(e).split())
        if text and text not in parts:
            parts.append(text)
        e = e.__cause__
    return ": ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(with_bare_cfg(sys.argv[1:] if argv is None else argv))
    if not hasattr(args, "overrides"):  # inspect, validate, bench
        return run_command(args)
    multirun = getattr(args, "multirun", False)  # preview takes overrides, not -m
    jobs = [args.overrides]
    if multirun:
        try:
            jobs = sweep_jobs(args.overrides)
        except HydraException as e:
            print(f"worldsim: error: {error_message(e)}", file=sys.stderr)
            return 2
        print(f"worldsim: launching {len(jobs)} jobs one after another", file=sys.stderr)
    rc = 0
    for i, job in enumerate(jobs):
        if multirun:
            print(f"worldsim: job #{i}: {' '.join(job)}", file=sys.stderr)
        args.overrides = job
        rc = max(rc, run_command(args))
        if rc == 130:
            break
    return rc


def run_command(args) -> int:
    try:
        return args.func(args)
    except (
        HydraException,
        OmegaConfBaseException,
        ValueError,
        FileExistsError,
        FileNotFoundError,
        IndexError,
        RenderError,
        MissingExtraError,
        OSError,  # an unwritable out=, a full disk: the message names the path
    ) as e:
        print(f"worldsim: error: {error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "worldsim: interrupted; committed episodes are kept (resume=true continues)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
