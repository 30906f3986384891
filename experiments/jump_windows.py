"""Frame transformer alone, continued 14,000 -> 16,500 from the shipped run with a quarter
of each batch's windows jump windows (`flow.jump_prob=0.25`: the context frame from a random
place of the same episode, so the arm's pose jumps as far as under a fast-spinning held key
while the target stays). Aimed at issue 23 item 2's glitches: the target drawn wrong where
the arm arrives beside it in one big jump, which the store shows in 0.5% of frames.
Needs the shipped run folder runs/world_model/reacher/ (scripts/train_world_model.sh);
writes runs/exp_jump/checkpoint (experiments/continuation.py), measured by

    python experiments/jump_windows.py [--jump-prob 0.25]
    python experiments/arrival_probe.py --checkpoint runs/exp_jump/checkpoint
    python experiments/rollout_agreement.py --checkpoint runs/exp_jump/checkpoint --idle-worlds 0
"""

import argparse
from pathlib import Path

from continuation import continue_frame_model

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--jump-prob", type=float, default=0.25)
args = parser.parse_args()
continue_frame_model(Path("runs/exp_jump"), [f"flow.jump_prob={args.jump_prob}"])
