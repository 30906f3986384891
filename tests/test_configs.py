"""Hydra configs: every task composes against its structured schema; the CLI's composition."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

import worldsim.configs
from worldsim.cli import GENERATE_ALIASES, compose_config, group_options, main
from worldsim.configs.schema import CameraConfig, DataConfig, GenerateConfig, TaskConfig
from worldsim.datasets.policies import EXPERTS

CONFIG_DIR = Path(worldsim.configs.__file__).parent
TASKS = sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))
COMPOSE_ERRORS = (HydraException, OmegaConfBaseException)


@pytest.fixture
def hydra():
    with initialize_config_module("worldsim.configs", version_base="1.3"):
        yield


def test_the_three_tasks_are_configs():
    assert {"reacher", "inverted_pendulum", "pusher"} <= set(TASKS)
    assert group_options("task") == TASKS
    assert "default" in group_options("data")
    assert group_options("data") == sorted(p.stem for p in (CONFIG_DIR / "data").glob("*.yaml"))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_composes_against_the_schema(hydra, task):
    cfg = compose("generate", overrides=[f"task={task}"])
    assert OmegaConf.get_type(cfg) is GenerateConfig
    assert OmegaConf.get_type(cfg.task) is TaskConfig
    assert OmegaConf.get_type(cfg.task.camera) is CameraConfig
    assert OmegaConf.get_type(cfg.data) is DataConfig
    assert cfg.task.name == task  # the file name and the name inside agree
    assert not OmegaConf.missing_keys(cfg), OmegaConf.missing_keys(cfg)
    assert isinstance(cfg.task.image_size, int) and cfg.task.image_size == 64
    assert isinstance(cfg.task.max_episode_steps, int) and cfg.task.max_episode_steps > 0
    assert cfg.task.expert in EXPERTS
    for override in cfg.task.render_overrides:
        assert override.geom
    if cfg.task.success_distance is not None:
        assert len(cfg.task.success_pair) == 2
        assert set(cfg.task.success_pair) <= set(cfg.task.state_bodies)
    assert set(cfg.task.segmentation) <= {"background", "robot", "object", "goal"}
    assert cfg.task.segmentation["robot"]
    # overrides are typed: numbers from the command line become ints / floats
    cfg = compose("generate", overrides=[f"task={task}", "task.image_size=32", "data.seed=7"])
    assert cfg.task.image_size == 32 and cfg.data.seed == 7
    assert isinstance(cfg.task.image_size, int)


BAD_OVERRIDES = [
    "task.image_size=abc",  # wrong types
    "task.max_episode_steps=1.5",
    "task.camera.distance=far",
    "data.episodes=many",
    "resume=maybe",
    "task.image_sise=32",  # unknown keys
    "task.camera.zoom=2",
    "data.nope=1",
    "nope=1",
    "task.render_overrides=[{geom:x,colour:1}]",
]


@pytest.mark.parametrize("i,override", list(enumerate(BAD_OVERRIDES)))
def test_bad_overrides_fail_at_compose_time(hydra, i, override):
    task = TASKS[i % len(TASKS)]  # spread over the tasks: each file applies the schema
    compose("generate", overrides=[f"task={task}"])  # fine without the bad override
    with pytest.raises(COMPOSE_ERRORS):
        compose("generate", overrides=[f"task={task}", override])


def test_typed_at_runtime(hydra):
    cfg = compose("generate")
    with pytest.raises(OmegaConfBaseException):
        cfg.task.image_size = "abc"
    with pytest.raises(OmegaConfBaseException):
        cfg.data.not_a_field = 1


def test_defaults(hydra):
    cfg = compose("generate")
    assert cfg.task.name == "reacher"
    assert cfg.out is None and cfg.resume is False
    preview = compose("preview")
    assert preview.out.endswith(".mp4") and preview.episodes >= 1


def test_compose_config_aliases():
    cfg = compose_config(
        "generate",
        ["episodes=3", "workers=0", "seed=11", "policy=random", "task=pusher", "out=x.zarr"],
        GENERATE_ALIASES,
    )
    assert cfg.data.episodes == 3 and cfg.data.workers == 0 and cfg.data.seed == 11
    assert cfg.data.policy == "random"
    assert cfg.task.name == "pusher" and cfg.out == "x.zarr"
    # full keys still work, and without the aliases a short key is not a config key
    assert compose_config("generate", ["data.episodes=5"], GENERATE_ALIASES).data.episodes == 5
    with pytest.raises(COMPOSE_ERRORS):
        compose_config("generate", ["episodes=3"])


@pytest.mark.parametrize("group,value", [("task", "reacher_v9"), ("data", "huge")])
def test_unknown_group_value_lists_the_choices(group, value):
    with pytest.raises(ValueError) as e:
        compose_config("generate", [f"{group}={value}"], GENERATE_ALIASES)
    msg = str(e.value)
    assert value in msg
    for choice in group_options(group):
        assert choice in msg


def test_override_must_be_key_value():
    with pytest.raises(ValueError, match="key=value"):
        compose_config("generate", ["episodes"], GENERATE_ALIASES)


def test_cli_reports_config_errors(capsys):
    assert main(["data", "generate", "task=nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and all(t in err for t in TASKS)
    assert main(["data", "generate", "task.image_size=abc"]) == 2
    assert "image_size" in capsys.readouterr().err
    # --cfg prints the composed config with the aliases applied and does not generate
    assert main(["data", "generate", "--cfg", "episodes=3", "task=inverted_pendulum"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert printed.data.episodes == 3 and printed.task.name == "inverted_pendulum"


def test_cli_behaves_like_a_hydra_app(capsys):
    """Issue 27 item 9: -m/--multirun sweeps, --cfg job|hydra|all (-p, --resolve), a `+key`
    that the schema does not have is an error, and a type error says which type."""
    # --cfg job / bare --cfg / -p: the same composed job config
    assert main(["dream", "--cfg", "job", "-p", "steps", "steps=7"]) == 0
    assert capsys.readouterr().out.strip() == "7"
    assert main(["dream", "steps=7", "-c", "-p", "engine.steps"]) == 0
    assert capsys.readouterr().out.strip() == "1"
    assert main(["dream", "--cfg", "hydra", "-p", "job.name"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["dream", "--cfg", "all"]) == 0
    printed = OmegaConf.create(capsys.readouterr().out)
    assert "hydra" in printed and printed.steps > 0
    # -m: one job per combination, in Hydra's order; without -m a sweep is refused
    assert main(["dream", "-m", "steps=3,4", "seed=range(0,2)", "--cfg", "-p", "steps"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["3", "3", "4", "4"] and "launching 4 jobs" in err
    assert main(["dream", "steps=3,4", "--cfg"]) == 2
    assert "--multirun" in capsys.readouterr().err
    # +typo: refused, naming the key and the keys there are; free-form dicts still take keys
    assert main(["dream", "+stepz=3", "--cfg"]) == 2
    err = capsys.readouterr().err
    assert "stepz" in err and "steps" in err
    assert main(["policy", "train", "+algo.kwargs.clip_range=0.1", "--cfg", "-p", "algo"]) == 0
    assert OmegaConf.create(capsys.readouterr().out).kwargs.clip_range == 0.1
    # a value of the wrong type: the message names the value and the expected type
    assert main(["dream", "steps=abc"]) == 2
    err = capsys.readouterr().err
    assert "abc" in err and "Integer" in err
