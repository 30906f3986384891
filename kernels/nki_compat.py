"""`from worldsim.kernels.nki_compat import nki, nl, nisa`: the Neuron SDK when it imports,
else the NumPy emulator, so kernel modules load (and run) without the SDK.

`WORLDSIM_NKI=emulator` forces the emulator even where the SDK is installed (to run the
emulator's parity tests there too).
"""

from __future__ import annotations

import os

HAVE_NKI = False
if os.environ.get("WORLDSIM_NKI", "") != "emulator":
    try:
        import nki  # noqa: F401
        import nki.isa as nisa  # noqa: F401
        import nki.language as nl  # noqa: F401

        HAVE_NKI = True
    except ImportError:
        pass

if not HAVE_NKI:
    from worldsim.kernels.emulator import isa as nisa  # noqa: F401
    from worldsim.kernels.emulator import language as nl  # noqa: F401
    from worldsim.kernels.emulator import nki  # noqa: F401

EMULATED = not HAVE_NKI
__all__ = ["nki", "nl", "nisa", "HAVE_NKI", "EMULATED"]
