"""A regular (non-editable) install imports every subpackage and ships the config YAMLs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

# the subpackages the design names; pyproject may list more, and all are imported
REQUIRED = ["worldsim." + s for s in ("envs", "policies", "kernels", "datasets", "configs")]
ANYWHERE = shutil.ignore_patterns(
    "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis"
)
TOP_LEVEL = {".venv", ".git", "tests", "build", "dist", "data", "runs", "outputs"}


def ignore(folder: str, names: list[str]) -> set[str]:
    """What not to copy: caches anywhere; the venv, tests and outputs at the top only."""
    skip = set(ANYWHERE(folder, names))
    if os.path.samefile(folder, REPO):
        skip |= TOP_LEVEL & set(names)
    return skip


CHECK = textwrap.dedent(
    """
    import importlib, json, sys
    from pathlib import Path
    target = Path(sys.argv[1]).resolve()
    files = {}
    for name in sys.argv[2].split(","):
        module = importlib.import_module(name)
        where = module.__file__ or list(module.__path__)[0]  # folders of YAML have no __init__
        files[name] = str(Path(where).resolve())
    from worldsim.cli import compose_config, group_options
    import worldsim.configs
    configs = Path(worldsim.configs.__file__).parent
    cfg = compose_config("generate", ["task=pusher", "episodes=3"], {"episodes": "data.episodes"})
    print(json.dumps({
        "target": str(target),
        "files": files,
        "tasks": group_options("task"),
        "data": group_options("data"),
        "yaml": sorted(str(p.relative_to(configs)) for p in configs.rglob("*.yaml")),
        "task_name": cfg.task.name,
        "episodes": cfg.data.episodes,
        "preview_out": compose_config("preview", []).out,
    }))
    """
)


def test_pip_install_imports_every_subpackage(tmp_path):
    with open(REPO / "pyproject.toml", "rb") as f:
        packages = tomllib.load(f)["tool"]["setuptools"]["packages"]
    assert set(REQUIRED) <= set(packages)
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=ignore)  # build from a copy: the repo stays clean
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    r = subprocess.run(
        [*pip, "--no-index", "--disable-pip-version-check", "-q", "--target", str(target), "."],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr

    run_dir = tmp_path / "elsewhere"  # no repo folders next to the interpreter
    run_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target))
    r = subprocess.run(
        [sys.executable, "-c", CHECK, str(target), ",".join(packages)],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(info["files"]) == sorted(packages)
    for name, path in info["files"].items():
        # imported from the installed copy, never from the source tree
        assert path.startswith(info["target"]), (name, path)
    configs = REPO / "configs"
    assert info["yaml"] == sorted(str(p.relative_to(configs)) for p in configs.rglob("*.yaml"))
    assert info["tasks"] == sorted(p.stem for p in (configs / "task").glob("*.yaml"))
    assert {"reacher", "inverted_pendulum", "pusher"} <= set(info["tasks"])
    assert info["data"] == sorted(p.stem for p in (configs / "data").glob("*.yaml"))
    shipped = REPO / "worldsim" / "checkpoints"  # package data: shipped weights and cards
    for f in shipped.rglob("*"):
        if f.is_file() and "__pycache__" not in f.parts:
            assert (target / "worldsim" / "checkpoints" / f.relative_to(shipped)).is_file(), f
    assert info["task_name"] == "pusher" and info["episodes"] == 3
    assert info["preview_out"].endswith(".mp4")
    assert (target / "bin" / "worldsim").is_file()


DIRECT_IMPORTS = textwrap.dedent(
    """
    import ast, json, sys
    import worldsim.cli, worldsim.engine, worldsim.envs, worldsim.dream  # the core's entry points
    direct = set()
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if not name.startswith("worldsim") or not path:
            continue
        for node in ast.parse(open(path).read()).body:  # module level: loaded on import
            if isinstance(node, ast.Import):
                direct |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                direct.add(node.module.split(".")[0])
    print(json.dumps(sorted(direct - set(sys.stdlib_module_names) - {"worldsim"})))
    """
)


def test_what_the_core_imports_is_declared():
    """Every third-party package a plain `import worldsim...` loads directly is one of
    pyproject's own dependencies (omegaconf came in only through hydra-core once)."""
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    run = subprocess.run(
        [sys.executable, "-c", DIRECT_IMPORTS], capture_output=True, text=True, check=True
    )
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower().replace("_", "-") for r in project["dependencies"]}
    dists = packages_distributions()
    missing = {
        m: dists.get(m)
        for m in json.loads(run.stdout)
        if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & declared
    }
    assert not missing, f"imported but not declared in pyproject dependencies: {missing}"


def test_policy_commands_without_the_rl_extra_name_it(monkeypatch, capsys):
    from worldsim.cli import main

    monkeypatch.setitem(sys.modules, "stable_baselines3", None)  # as if not installed
    assert main(["policy", "train", "steps=8"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'worldsim[rl]'" in err and "Traceback" not in err
