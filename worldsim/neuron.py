"""`device="neuron"`: the NeuronCore as a torch device, through torch-neuronx.

torch-neuronx exposes NeuronCores as XLA devices; with it the dynamics model's hot ops
take the NKI kernels in `worldsim.kernels` (their dispatch sees the XLA device). It is
imported only when asked for, and is not on PyPI: see README "Running on Trainium".
"""

from __future__ import annotations

import torch

INSTALL_HINT = (
    "device='neuron' needs the AWS Neuron SDK (torch-neuronx, neuronx-cc), which is not on "
    "PyPI; on a Trainium instance: pip install --extra-index-url "
    "https://pip.repos.neuron.amazonaws.com torch-neuronx neuronx-cc"
)


def torch_device(device: str | torch.device) -> torch.device:
    """'neuron' -> the NeuronCore's XLA device; anything else -> torch.device(device)."""
    if str(device) != "neuron":
        return torch.device(device)
    try:
        import torch_neuronx  # noqa: F401  (registers the Neuron backend)
        import torch_xla.core.xla_model as xm
    except ImportError as e:
        raise RuntimeError(f"{INSTALL_HINT} ({e})") from e
    return xm.xla_device()
