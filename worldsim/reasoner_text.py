"""Question forms and their true answers, generated from a scene's physical state.

The reasoner's language model learns to produce these answers from frame tokens.
Questions are fixed forms per task (built from its scene quantities and success
pair); `match_question` recognises them, so a question of any other form gets an
honest "cannot answer" instead of a fluent guess.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from worldsim.scene import SceneLayout

CANNOT_ANSWER = "cannot answer"
VOCAB = "\n abcdefghijklmnopqrstuvwxyz0123456789-.,?'"
"""Characters of questions and answers; index 0 ('\\n') ends an answer."""
MOVING_RAD_S = 0.5
"""A joint turning faster than this counts as moving."""
SECTORS = ("right", "up and right", "up", "up and left", "left", "down and left", "down",
           "down and right")  # fmt: skip
HERE_CM = 2.0
"""Closer than this, one body is 'at' the other."""


def encode(text: str) -> list[int]:
    bad = sorted({c for c in text if c not in VOCAB})
    if bad:
        raise ValueError(f"characters {bad} are outside the reasoner's vocabulary {VOCAB!r}")
    return [VOCAB.index(c) for c in text]


def decode(ids) -> str:
    return "".join(VOCAB[i] for i in ids)


def normalise(question: str) -> str:
    q = re.sub(r"\s+", " ", question.strip().lower())
    return q if q.endswith("?") or q.endswith(".") else q + "?"


def direction(dx: float, dy: float) -> str:
    """Image direction of an offset (dx right, dy up in the frame), 8 sectors."""
    sector = int(round(math.atan2(dy, dx) / (math.pi / 4))) % 8
    return SECTORS[sector]


@dataclass
class TaskText:
    """The question forms of one task and how to answer them from a state vector."""

    layout: SceneLayout
    pair: tuple[str, str] | None
    """(mover, goal) quantity names in metres, e.g. (fingertip, target)."""
    joints: str | None
    """Angle quantity answering 'what is the angle of joint i?'."""
    joint_speed: str | None
    success_m: float | None
    forms: tuple = ()
    """The task's own question forms (`TaskQuestion`s); when given, they replace the
    generic joint forms."""
    azimuth_deg: float = 90.0
    """The task camera's azimuth: world offsets are turned into the frame's right and up
    (90: +x right, +y up, Reacher's top-down view; Pusher's -90 looks back at the arm, so
    +x is left and +y down; a tilted camera foreshortens up, never flips it)."""

    @classmethod
    def from_task(cls, task) -> TaskText:
        layout = SceneLayout.from_task(task)
        names = {q.name: q for q in layout.quantities}
        pair = tuple(task.get("success_pair") or ())
        pair = pair if len(pair) == 2 and all(p in names for p in pair) else None
        forms = tuple(task.get("questions") or ())
        for f in forms:
            if (
                f.quantity not in names
                or f.kind not in ("side", "above")
                or normalise(f.question) != f.question
            ):
                raise ValueError(
                    f"task {task.name!r} question {f.question!r}: quantity {f.quantity!r} "
                    f"kind {f.kind!r}; expected a scene quantity of {sorted(names)}, kind "
                    "side or above, and the question in lower case ending in '?'"
                )
        angles = [q.name for q in layout.quantities if q.unit == "rad"]
        speeds = [q.name for q in layout.quantities if q.unit == "rad/s"]
        generic = not forms
        return cls(
            layout,
            pair,
            angles[0] if angles and generic else None,
            speeds[0] if speeds and generic else None,
            task.get("success_distance"),
            forms,
            float(task.camera.azimuth) if task.get("camera") else 90.0,
        )

    def to_image(self, d: np.ndarray) -> np.ndarray:
        """World (..., 2) x-y offsets -> (..., 2) (right, up) as the frame shows them."""
        az = math.radians(self.azimuth_deg)
        s, c = round(math.sin(az), 12), round(math.cos(az), 12)  # exact at multiples of 90
        return np.stack([d[..., 0] * s - d[..., 1] * c, d[..., 0] * c + d[..., 1] * s], -1)

    def _value(self, form, states: np.ndarray) -> np.ndarray:
        """(n,) the form's quantity column of states (n, dim), in the answer's unit for a
        side form (degrees for rad, cm for m), as stored for an above form."""
        v = states[:, self.layout.slices[form.quantity].start + form.index]
        if form.kind == "above":
            return v
        if self.layout.by_name[form.quantity].unit == "rad":
            return np.degrees((v + math.pi) % (2 * math.pi) - math.pi)
        return v * 100

    def _form_answer(self, form, state: np.ndarray) -> str:
        v = float(self._value(form, np.asarray(state, np.float64)[None])[0])
        if form.kind == "above":
            return "yes" if abs(v) > form.above else "no"
        steps = round(abs(v) / form.step)
        if steps == 0:
            return form.near
        unit = "degrees" if self.layout.by_name[form.quantity].unit == "rad" else "cm"
        side = form.positive if v > 0 else form.negative
        return f"{side}, {steps * form.step:g} {unit}"

    # -- question forms ----------------------------------------------------------
    def questions(self) -> list[str]:
        qs = ["describe the scene."]
        if self.pair:
            a, b = (p.replace("_", " ") for p in self.pair)
            qs += [
                f"where is the {b} relative to the {a}?",
                f"how far is the {a} from the {b}?",
                f"has the {a} reached the {b}?",
            ]
        if self.joint_speed:
            qs.append("is the arm moving?")
        qs += [f"what is the angle of joint {i}?" for i in range(self._num_joints())]
        return qs + [f.question for f in self.forms]

    def _num_joints(self) -> int:
        if not self.joints:
            return 0
        return self.layout.slices[self.joints].stop - self.layout.slices[self.joints].start

    def match_question(self, question: str) -> str | None:
        """The known form a question is, or None."""
        q = normalise(question)
        return q if q in self.questions() else None

    # -- answers from the true (or estimated) state ------------------------------
    def _pair(self, state: np.ndarray) -> tuple[float, float, float]:
        a, b = (state[self.layout.slices[p]][:2] for p in self.pair)
        d = self.to_image(b - a)
        return float(d[0]), float(d[1]), float(np.hypot(*d) * 100)

    def judgment_names(self) -> list[str]:
        """What `judgments` returns, in order."""
        names = ["dx", "dy", "distance", "bearing"] if self.pair else []
        if self.joint_speed:
            names.append("joint speed")
        names += [f"joint {i}" for i in range(self._num_joints())]
        return names + [f.question.rstrip("?") for f in self.forms]

    def judgments(self, states: np.ndarray) -> np.ndarray:
        """(n, J) per state (n, dim): the quantities the answers are rounded from, each in
        its answer's step (cm for the pair's offset and distance, 45-degree sectors for
        the bearing, the moving threshold for the fastest joint, 10 degrees for a joint
        angle, a task form's step or threshold), so that an answer is a rounding or a
        comparison with 1 of one of them.
        The language model reads them; integer-cm answers need the state to ~0.1 cm,
        arithmetic a small language model does not learn exactly from a state vector."""
        states = np.asarray(states, dtype=np.float64)
        out = []
        if self.pair:
            a, b = (states[:, self.layout.slices[p]][:, :2] for p in self.pair)
            d = 100 * self.to_image(b - a)
            out += [d[:, 0], d[:, 1], np.hypot(d[:, 0], d[:, 1])]
            out.append(np.arctan2(d[:, 1], d[:, 0]) / (math.pi / 4))
        if self.joint_speed:
            speed = np.abs(states[:, self.layout.slices[self.joint_speed]]).max(1)
            out.append(speed / MOVING_RAD_S)
        if self.joints:
            deg = np.degrees(states[:, self.layout.slices[self.joints]])
            out += list(((deg + 180) % 360 - 180).T / 10)
        for f in self.forms:
            v = self._value(f, states)
            out.append(np.abs(v) / f.above if f.kind == "above" else v / f.step)
        if not out:
            return np.zeros((len(states), 0), np.float32)
        return np.stack(out, 1).astype(np.float32)

    def distance_cm(self, state: np.ndarray) -> float:
        return self._pair(state)[2]

    def success(self, state: np.ndarray) -> bool:
        return self.success_m is not None and self.distance_cm(state) < 100 * self.success_m

    def answer(self, question: str, state: np.ndarray) -> str:
        q = self.match_question(question)
        if q is None:
            return CANNOT_ANSWER
        if q == "describe the scene.":
            return self.describe(state)
        for f in self.forms:
            if q == f.question:
                return self._form_answer(f, state)
        if q.startswith("where is"):
            dx, dy, cm = self._pair(state)
            return "here" if cm < HERE_CM else f"{direction(dx, dy)}, {round(cm)} cm"
        if q.startswith("how far"):
            return f"{round(self.distance_cm(state))} cm"
        if q.startswith("has the"):
            return "yes" if self.success(state) else "no"
        if q == "is the arm moving?":
            speed = np.abs(state[self.layout.slices[self.joint_speed]]).max()
            return "yes" if speed > MOVING_RAD_S else "no"
        joint = int(q.split("joint ")[1].rstrip("?"))
        deg = math.degrees(float(state[self.layout.slices[self.joints]][joint]))
        deg = (deg + 180) % 360 - 180
        return f"{int(round(deg / 10) * 10)} degrees"

    def describe(self, state: np.ndarray) -> str:
        parts = []
        if self.pair:
            a, b = (p.replace("_", " ") for p in self.pair)
            dx, dy, cm = self._pair(state)
            if cm < HERE_CM:
                parts.append(f"the {a} is at the {b}.")
            else:
                parts.append(f"the {b} is {direction(dx, dy)} of the {a}, {round(cm)} cm away.")
        if self.joint_speed:
            moving = np.abs(state[self.layout.slices[self.joint_speed]]).max() > MOVING_RAD_S
            parts.append("the arm is moving." if moving else "the arm is still.")
        for f in self.forms:
            answer = self._form_answer(f, state)
            if f.kind == "side":
                parts.append(f.describe.format(answer=answer))
            elif answer == "yes":
                parts.append(f.describe)
        return " ".join(parts)
