"""worldsim.kernels: the dynamics model's hot ops for one frame step, as NKI kernels for
Trainium with torch references everywhere else (DESIGN.md section 8).

The model calls the ops below; `dispatch` decides per call whether the NKI kernel or the
torch reference runs and counts which (`worldsim.kernels.counts`). Kernel modules
(`norm`, `mlp`, `attention`, `block`) import `nki`, `nl` and `nisa` from `nki_compat`:
the Neuron SDK when installed, else the NumPy emulator in `emulator/`. `plan` holds the
SBUF plan and roofline of the shipped configs.
"""

from worldsim.kernels.dispatch import (
    counts,
    frame_attention,
    gelu_mlp,
    modulated_norm,
    reset_counts,
    transformer_block,
    use_kernel,
)

__all__ = [
    "counts",
    "frame_attention",
    "gelu_mlp",
    "modulated_norm",
    "reset_counts",
    "transformer_block",
    "use_kernel",
]
