"""`worldsim play` headless: scripted keys drive the shipped dream; recording; errors."""

from __future__ import annotations

import os

import imageio.v2 as imageio
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from worldsim.cli import main
from worldsim.configs.schema import KeyAction
from worldsim.play import PlayError, import_pygame, open_window, play

pytest.importorskip("pygame")


def session(tmp_path, script: str, *overrides: str) -> dict:
    keys = tmp_path / "keys.txt"
    keys.write_text(script)
    with initialize_config_module("worldsim.configs", version_base="1.3"):
        cfg = compose("play", ["headless=true", f"script={keys}", "fps=1000", *overrides])
    return play(cfg)


def joint_turns(result: dict) -> np.ndarray:
    a = np.array(result["state_start"]["joint_angle"])
    b = np.array(result["state_end"]["joint_angle"])
    return (b - a + np.pi) % (2 * np.pi) - np.pi


def joint0_turn(result: dict) -> float:
    return float(joint_turns(result)[0])


def test_held_key_turns_the_dreamed_arm_its_way(tmp_path):
    # Reacher: right / d is +1 torque on joint 0; the angle is the world model's own state
    right = session(tmp_path, "right 8\n", "seed=3")
    left = session(tmp_path, "left 8\n", "seed=3")
    still = session(tmp_path, "- 8\n", "seed=3")
    assert right["frames"] == left["frames"] == still["frames"] == 8
    assert joint0_turn(right) > joint0_turn(still) + 0.1
    assert joint0_turn(left) < joint0_turn(still) - 0.1


def test_recording_is_a_video_of_every_frame(tmp_path):
    out = tmp_path / "rec" / "play.mp4"
    shot = tmp_path / "shot.png"
    script = "up 5\n- 3\nf5 1\n- 2\n"  # F5 stops recording before frame 9 is drawn
    result = session(tmp_path, script, f"record={out}", f"screenshot={shot}", "twin=true")
    assert result["frames"] == 11 and result["recordings"] == [str(out)]
    frames = [f for f in imageio.get_reader(out)]  # list() asks len(): inf for ffmpeg
    assert len(frames) == 8
    assert frames[0].shape[1] == 2 * 64 * 6  # MuJoCo | dream, scale 6
    assert imageio.imread(shot).shape[:2] == frames[0].shape[:2]
    assert not list(out.parent.glob(".*partial*"))


def test_pause_and_single_step_controls(tmp_path):
    # the script counts ticks: space pauses (no frames), '.' steps once, space resumes
    result = session(tmp_path, "- 2\nspace 1\n- 3\n. 1\n- 1\nspace 1\n- 2\n")
    assert result["frames"] == 2 + 1 + 3  # before the pause, the single step, from resume on


def test_no_display_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SDL_VIDEODRIVER", "no-such-driver")
    assert main(["play", "frames=3"]) == 2
    err = capsys.readouterr().err
    assert "no display available" in err and "headless=true" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("driver", ["offscreen", "dummy"])
def test_a_display_that_draws_nowhere_is_a_clear_error(driver, monkeypatch, capsys):
    """SDL falls back to an invisible driver when there is no display: say so, do not play
    a session nobody sees (issue 27 item 7)."""
    monkeypatch.setenv("SDL_VIDEODRIVER", driver)
    assert main(["play", "frames=3"]) == 2
    err = capsys.readouterr().err
    assert "no display available" in err and driver in err and "headless=true" in err


def test_the_window_asks_for_no_gl_framebuffer(monkeypatch):
    """Under Xvfb SDL's accelerated framebuffer fails with GLX BadAccess: the window asks for
    a software one (a user's own setting is kept)."""
    pygame = import_pygame()
    monkeypatch.delenv("SDL_FRAMEBUFFER_ACCELERATION", raising=False)
    open_window(pygame, (64, 64), headless=True)
    pygame.display.quit()
    assert os.environ["SDL_FRAMEBUFFER_ACCELERATION"] == "0"
    monkeypatch.setenv("SDL_FRAMEBUFFER_ACCELERATION", "1")
    open_window(pygame, (64, 64), headless=True)
    pygame.display.quit()
    assert os.environ["SDL_FRAMEBUFFER_ACCELERATION"] == "1"


@pytest.mark.parametrize("key, why", [("notakey", "not a key name"), ("r", "taken by")])
def test_bad_keyboard_map_is_refused_naming_the_key(key, why):
    with initialize_config_module("worldsim.configs", version_base="1.3"):
        cfg = compose("play", ["headless=true", "frames=2"])
    with open_dict(cfg):
        cfg.task.keyboard[key] = KeyAction(index=0, value=1.0)
    with pytest.raises(PlayError, match=f"'{key}'.*{why}"):
        play(cfg)


def test_headless_needs_an_end(capsys):
    assert main(["play", "headless=true"]) == 2
    assert "script=FILE or frames=N" in capsys.readouterr().err


def test_a_policy_spec_drives_the_dream_after_m(tmp_path):
    # expert@0 acts on the world model's own state, not on MuJoCo (no twin)
    driven = session(tmp_path, "m 1\n- 9\n", "seed=3", "policy=expert@0")
    still = session(tmp_path, "- 10\n", "seed=3")
    assert np.abs(joint_turns(driven) - joint_turns(still)).max() > 0.1


def what_the_driver_hands_its_policy(spec: str, steps: int = 3):
    """Each step's (observation the play driver handed `spec`'s policy, session, config)."""
    from worldsim.play import Session

    with initialize_config_module("worldsim.configs", version_base="1.3"):
        cfg = compose("play", ["headless=true", "frames=1", f"policy={spec}"])
    s = Session(cfg)
    s.reset()
    seen = []
    s.policy.policy.act = lambda obs, deterministic=True: seen.append(obs) or np.zeros((1, 2))
    try:
        for _ in range(steps):
            s.policy.act()
            yield seen[-1], s, cfg
            s.step(np.ones(2, np.float32))
    finally:
        s.close()


def test_the_policy_driver_acts_on_the_world_models_own_state():
    for obs, s, cfg in what_the_driver_hands_its_policy("expert@0"):
        want = s.text.layout.observation(s.engine.state.numpy(), list(cfg.task.observation))
        np.testing.assert_array_equal(obs, want)  # what the envs give a policy


def test_a_pixel_policy_drives_play_from_the_drawn_frame_and_the_models_joints():
    from worldsim.scene import task_observation

    for obs, s, cfg in what_the_driver_hands_its_policy("shipped:dream_ppo_pixels"):
        assert sorted(obs) == ["pixels", "proprio"]
        np.testing.assert_array_equal(obs["pixels"], s.frame[None])
        state = s.engine.state.numpy()
        want = task_observation(cfg.task, "proprio", s.text.layout, state)
        np.testing.assert_array_equal(obs["proprio"], want)  # the joints, no target


@pytest.fixture
def xvfb_display():
    """A virtual X screen (Debian's xvfb; .ci/run installs it where apt-get can)."""
    import shutil
    import subprocess
    import time

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    display = f":{90 + os.getpid() % 100}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1024x768x24"])
    time.sleep(1.0)
    try:
        yield display
    finally:
        server.kill()
        server.wait()


def test_play_opens_a_window_under_xvfb_beside_mujocos_egl(xvfb_display, tmp_path):
    """Issue 27 item 7: under Xvfb with the twin (MuJoCo on EGL in the same process) SDL's
    accelerated framebuffer made MuJoCo's eglMakeCurrent fail with EGL_BAD_ACCESS; the
    window now asks for a software framebuffer. Forcing the old setting still fails, so
    the test tells the two apart."""
    import subprocess
    import sys

    keys = tmp_path / "keys.txt"
    keys.write_text("right 5\n")
    shot = tmp_path / "shot.png"
    env = {k: v for k, v in os.environ.items() if k != "SDL_FRAMEBUFFER_ACCELERATION"}
    env |= {"DISPLAY": xvfb_display, "OMP_NUM_THREADS": "1", "MUJOCO_GL": "egl"}
    env.pop("SDL_VIDEODRIVER", None)
    cmd = [sys.executable, "-m", "worldsim.cli", "play", "twin=true", f"script={keys}"]
    run = subprocess.run(
        [*cmd, f"screenshot={shot}"], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert imageio.imread(shot).shape[1] >= 2 * 64  # twin | dream side by side
    old = subprocess.run(
        cmd,
        env=env | {"SDL_FRAMEBUFFER_ACCELERATION": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert old.returncode != 0 and "EGL" in old.stderr
