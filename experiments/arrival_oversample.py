"""Frame transformer alone, continued 14,000 -> 16,500 from the shipped run, a quarter of
each batch drawn from windows whose last frame is a fast arrival beside the target (store
state: fingertip jump > 8 cm, ending < 6 cm from the target; never the position reader).
It reuses `flow.priority`'s sampler with these fixed weights in place of the model's own
errors. Needs the shipped run folder runs/world_model/reacher/
(scripts/train_world_model.sh); writes runs/exp_arr/checkpoint
(experiments/continuation.py), measured by

    python experiments/arrival_oversample.py
    python experiments/arrival_probe.py --checkpoint runs/exp_arr/checkpoint
    python experiments/rollout_agreement.py --checkpoint runs/exp_arr/checkpoint --idle-worlds 0
"""

import sys
from pathlib import Path

import numpy as np
from continuation import continue_frame_model, last_frame_fingertip

import worldsim.train.dynamics as td


def arrival_weights(net, data, starts, length, *a, **k):
    jump, near = last_frame_fingertip(net, data, starts, length)
    w = ((jump > 8) & (near < 6)).astype(np.float64)
    print(f"arrival windows: {int(w.sum())} of {len(w)}", file=sys.stderr)
    return w + 1e-12


td.window_errors = arrival_weights
continue_frame_model(Path("runs/exp_arr"), ["flow.priority=0.25"])
