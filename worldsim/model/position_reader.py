"""Position reader: the scene's positions read off the tokenizer's decoding of a frame.

Distances are answered to the nearest cm, so a position must be read to ~0.1 cm, a tenth
of a pixel of a 64x64 Reacher frame. The reasoner's MLP reader, which runs beside every
engine step on the flattened latent grid, reads fingertip and target to ~0.35 / 0.5 cm;
a small CNN over the decoded frame reads them to ~0.09 / 0.25 cm
(bench/reader_precision.py). The engine decodes frames for display anyway, so this
reader serves what needs the precision -- question answering and captions -- while the
MLP reader keeps the per-frame path cheap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from worldsim.scene import SceneLayout


@dataclass
class PositionReaderConfig:
    quantities: list[str] = field(default_factory=list)
    """Scene quantities read (unit m), in this order."""
    outputs: int = 0
    """Their columns in all (the width of the reading)."""
    image_size: int = 64
    """Frame side in pixels; stride-2 stages bring it to 8x8."""
    channels: int = 64
    """Channels of the stride-2 stages."""
    trunk: int = 96
    """Channels of the two 3x3 convolutions at 8x8."""
    hidden: int = 256
    """Width of the MLP head."""


class PositionReader(nn.Module):
    def __init__(self, cfg: PositionReaderConfig) -> None:
        super().__init__()
        stages = int(np.log2(cfg.image_size // 8))
        if not cfg.quantities or cfg.outputs < 1 or 8 * 2**stages != cfg.image_size:
            raise ValueError(
                f"position reader: quantities={cfg.quantities}, outputs={cfg.outputs}, "
                f"image_size={cfg.image_size}: expected named quantities, outputs >= 1 and "
                "an image side of 8 times a power of two"
            )
        self.cfg = cfg
        layers, c = [], 3
        for _ in range(stages):
            layers += [nn.Conv2d(c, cfg.channels, 4, 2, 1), nn.GELU()]
            c = cfg.channels
        self.net = nn.Sequential(
            *layers,
            nn.Conv2d(c, cfg.trunk, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(cfg.trunk, cfg.trunk, 3, padding=1),
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(cfg.trunk * 64, cfg.hidden),
            nn.GELU(),
            nn.Linear(cfg.hidden, cfg.outputs),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> positions (B, outputs) in cm."""
        return self.net(frames.permute(0, 3, 1, 2).float() / 127.5 - 1)

    @torch.no_grad()
    def read_latents(self, tok, latents, batch: int = 512, states=None) -> np.ndarray:
        """Positions (n, outputs) in metres of latents (n, N, C), read off their decoding
        (with the states (n, dim) they were generated with, for a decoder that draws the
        state), in fp32 even under autocast: bf16 holds 20 cm only to 0.125 cm."""
        z = torch.as_tensor(latents)
        s = None if states is None else torch.as_tensor(states)
        with torch.autocast(z.device.type, enabled=False):
            out = [
                self(tok.decode_uint8(z[i : i + batch], None if s is None else s[i : i + batch]))
                for i in range(0, len(z), batch)
            ]
        return (torch.cat(out) / 100).numpy()

    def put(self, layout: SceneLayout, state: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """A copy of states (n, dim) with its quantities replaced by readings (n, outputs)."""
        state, i = state.copy(), 0
        for name in self.cfg.quantities:
            cols = layout.slices[name]
            width = cols.stop - cols.start
            state[:, cols] = positions[:, i : i + width]
            i += width
        return state

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def position_quantities(layout: SceneLayout) -> list[str]:
    """The scene's quantities in metres: what a position reader reads."""
    return [q.name for q in layout.quantities if q.unit == "m"]


def build_position_reader(config: dict) -> PositionReader:
    known = PositionReaderConfig.__dataclass_fields__
    return PositionReader(PositionReaderConfig(**{k: v for k, v in config.items() if k in known}))
