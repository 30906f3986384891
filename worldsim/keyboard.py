"""Keys -> actions from a task's keyboard map, and scripted key sequences.

The same mapping drives the play window and `policy=keyboard-script` runs, so a
scripted session reproduces what a person at the keyboard would do.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def key_action(task, held: Iterable[str], action_dim: int, low, high) -> np.ndarray:
    """Action for the set of held keys: each key sets its dimension; released keys give 0."""
    a = np.zeros(action_dim, np.float32)
    for key in held:
        if key not in task.keyboard:
            raise ValueError(
                f"key {key!r} is not in task {task.name!r}'s keyboard map {sorted(task.keyboard)}"
            )
        k = task.keyboard[key]
        if not 0 <= k.index < action_dim:
            raise ValueError(
                f"task {task.name!r}: key {key!r} drives action {k.index}, "
                f"but actions have {action_dim} dimensions"
            )
        a[k.index] = k.value
    return np.clip(a, low, high).astype(np.float32)


def parse_script(text: str) -> list[tuple[frozenset[str], int]]:
    """Lines `KEY[+KEY...] FRAMES` (`-` for no key); `#` starts a comment."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"key script line {n}: expected 'KEY[+KEY] FRAMES', got {line!r}")
        keys = frozenset() if parts[0] == "-" else frozenset(parts[0].split("+"))
        out.append((keys, int(parts[1])))
    return out


def default_script(task, hold: int = 12) -> list[tuple[frozenset[str], int]]:
    """Each distinct action of the task's keyboard map held in turn, then a pause."""
    seen, script = set(), []
    for key, k in task.keyboard.items():
        if (k.index, k.value) not in seen:
            seen.add((k.index, k.value))
            script += [(frozenset([key]), hold), (frozenset(), hold // 3)]
    return script


class KeyScriptPolicy:
    """Plays a key script (looping) through the task's keyboard map."""

    name = "keyboard-script"

    def __init__(self, task, script, action_dim: int, low, high) -> None:
        self.frames = [keys for keys, count in script for _ in range(count)]
        if not self.frames:
            raise ValueError("key script is empty")
        for keys in set(self.frames):
            key_action(task, keys, action_dim, low, high)  # fail at start on unknown keys
        self.task, self.dim, self.low, self.high, self.t = task, action_dim, low, high, 0

    def act(self) -> np.ndarray:
        keys = self.frames[self.t % len(self.frames)]
        self.t += 1
        return key_action(self.task, keys, self.dim, self.low, self.high)
