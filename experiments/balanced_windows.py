"""Frame transformer alone, continued 14,000 -> 16,500 from the shipped run with the
windows whose last frame has the fingertip resting on the target (store state: within
2 cm of it, moved < 0.5 cm since the frame before; the expert's hold phase, ~40% of the
store) drawn at a fifth of the others' rate. Why: the 10,000-frame held-key rollout's
frame 7,600 (experiments/long_rollout_replay.py) draws the fingertip snapped onto the
target while the model's state has it 7 cm away, as if the store's commonest picture,
fingertip on target, pulled the drawing. Uses `flow.priority`'s sampler (the whole batch)
with these fixed weights. Needs runs/world_model/reacher/; writes runs/exp_bal/checkpoint
(experiments/continuation.py), measured by

    python experiments/balanced_windows.py [--rest-weight 0.2]
    python experiments/arrival_probe.py --checkpoint runs/exp_bal/checkpoint
    python experiments/rollout_agreement.py --checkpoint runs/exp_bal/checkpoint --idle-worlds 0
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from continuation import continue_frame_model, last_frame_fingertip

import worldsim.train.dynamics as td

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rest-weight", type=float, default=0.2)
args = parser.parse_args()


def rest_weights(net, data, starts, length, *a, **k):
    moved, near = last_frame_fingertip(net, data, starts, length)
    rest = (near < 2) & (moved < 0.5)
    print(f"resting windows: {int(rest.sum())} of {len(rest)}", file=sys.stderr)
    return np.where(rest, args.rest_weight, 1.0)


td.window_errors = rest_weights
continue_frame_model(Path("runs/exp_bal"), ["flow.priority=1.0"])
