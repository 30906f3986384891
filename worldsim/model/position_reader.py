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

from worldsim.scene import Quantity, SceneLayout


@dataclass
class PositionReaderConfig:
    quantities: list[str] = field(default_factory=list)
    """Scene quantities read, in this order."""
    outputs: int = 0
    """Width of the network's output: a column in cm per column in m, and (cos, sin) x 100
    per angle column, so that one unit of error is ~1 cm or ~0.01 rad."""
    angles: list[str] = field(default_factory=list)
    """Those of `quantities` in rad (read as cos, sin: -pi and pi are one place)."""
    sizes: list[int] = field(default_factory=list)
    """Columns of each quantity (needed with angles; without, every output is a cm)."""
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
        angle_ok = not cfg.angles or (
            set(cfg.angles) <= set(cfg.quantities)
            and len(cfg.sizes) == len(cfg.quantities)
            and cfg.outputs == self.outputs_for(cfg.quantities, cfg.angles, cfg.sizes)
        )
        if not cfg.quantities or cfg.outputs < 1 or 8 * 2**stages != cfg.image_size or not angle_ok:
            raise ValueError(
                f"position reader: quantities={cfg.quantities}, outputs={cfg.outputs}, "
                f"angles={cfg.angles}, sizes={cfg.sizes}, image_size={cfg.image_size}: "
                "expected named quantities, outputs >= 1 (with angles: their sizes, and "
                "outputs = columns + angle columns), an image side of 8 times a power of two"
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

    @staticmethod
    def outputs_for(quantities: list[str], angles: list[str], sizes: list[int]) -> int:
        return sum(2 * n if q in angles else n for q, n in zip(quantities, sizes, strict=True))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, H, W, 3) -> raw readings (B, outputs): cm, and 100 (cos, sin)
        for angles (`targets` makes them from values, `values` undoes it)."""
        return self.net(frames.permute(0, 3, 1, 2).float() / 127.5 - 1)

    def _readout(self) -> SceneLayout:
        """The quantities read, as a layout whose features are the readings / 100."""
        return SceneLayout(
            [
                Quantity(n, "reading", tuple(range(k)), "rad" if n in self.cfg.angles else "m")
                for n, k in zip(self.cfg.quantities, self.cfg.sizes, strict=True)
            ]
        )

    def targets(self, values: np.ndarray) -> np.ndarray:
        """Values (n, columns) of the quantities in their units -> raw readings."""
        if not self.cfg.angles:
            return 100 * values
        return 100 * self._readout().to_features(values)

    def values(self, raw: np.ndarray) -> np.ndarray:
        """Raw readings (n, outputs) -> values (n, columns) in the quantities' units."""
        if not self.cfg.angles:
            return raw / 100
        return self._readout().from_features(raw / 100)

    @torch.no_grad()
    def read_latents(self, tok, latents, batch: int = 512, states=None) -> np.ndarray:
        """Values (n, columns) in the quantities' units (m, rad) of latents (n, N, C), read
        off their decoding (with the states (n, dim) they were generated with, for a
        decoder that draws the state), in fp32 even under autocast: bf16 holds 20 cm only to
        0.125 cm."""
        z = torch.as_tensor(latents)
        s = None if states is None else torch.as_tensor(states)
        with torch.autocast(z.device.type, enabled=False):
            out = [
                self(tok.decode_uint8(z[i : i + batch], None if s is None else s[i : i + batch]))
                for i in range(0, len(z), batch)
            ]
        return self.values(torch.cat(out).numpy())

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


def position_quantities(layout: SceneLayout, readout: list[str] | None = None) -> list[str]:
    """What a position reader reads: the task's `frame_readout`, else the scene's bodies'
    world positions (where the frame draws something)."""
    if readout:
        unknown = [n for n in readout if n not in layout.slices]
        bad = [
            n for n in readout if n in layout.slices and layout.by_name[n].unit not in ("m", "rad")
        ]
        if unknown or bad:
            raise ValueError(
                f"frame_readout {list(readout)}: {unknown or bad} "
                + ("not in the scene" if unknown else "not a position or angle (m or rad)")
            )
        return list(readout)
    return [q.name for q in layout.quantities if q.drawn_position]


def build_position_reader(config: dict) -> PositionReader:
    known = PositionReaderConfig.__dataclass_fields__
    return PositionReader(PositionReaderConfig(**{k: v for k, v in config.items() if k in known}))
