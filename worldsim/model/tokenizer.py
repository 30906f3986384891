"""Patch autoencoder: 64x64x3 frames <-> an 8x8 grid of C-dim latent tokens.

Each 8x8 pixel patch becomes one token; a few transformer layers mix tokens on
each side of the bottleneck. Everything is matmuls (no 3x3 convolutions), which
run fast in bf16 on CPU and map onto the same attention/MLP kernels as the
dynamics model. Latents are bounded (tanh) so the dynamics model diffuses in a
fixed range, and the decoder sees noised latents in training so small errors of
generated tokens still decode to clean frames. The loss weights foreground
pixels (robot, object, goal from the stored segmentation): on plain MSE an
autoencoder learns the static arena and erases the arm.

A decoder may also be conditioned on the scene's state (`scene`), so that the frame is
drawn where the state says, not only where the latents put it: every token gets an
embedding of the state (Fourier features, as the dynamics model's state token) and its
offset from each drawn body position (Reacher: fingertip, target), mapped to the token
grid by a camera map fitted from where the goal is drawn (`fit_camera`). The offsets are what
made it work: with the state embedding alone, a decoder fine-tuned on the dynamics
model's predictions did as well with its state withheld (held-key frames off their
state: 1.58% vs 1.66%); with the offsets 1.07% (latents only: 2.35%;
worldsim.train.decoder). Decoded without a state (a real frame's round trip) it uses a
learned stand-in.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldsim.model.features import angle_features, fourier_features
from worldsim.scene import SceneLayout

POINT_BANDS = 6
"""Octaves of a token's offset from a drawn position: periods of 16 tokens (the frame
twice) down to half a token (4 px)."""


@dataclass
class TokenizerConfig:
    image_size: int = 64
    """Input frames are image_size x image_size x 3."""
    patch: int = 8
    """Pixels per token side; grid = image_size / patch."""
    width: int = 192
    """Transformer width."""
    layers: int = 2
    """Transformer layers in the encoder and in the decoder."""
    heads: int = 4
    latent_dim: int = 16
    """C: channels per latent token."""
    scene: list | None = None
    """The state quantities (SceneLayout.to_dict) the decoder is conditioned on; None:
    it decodes from the latents alone."""
    fourier_bands: int = 6
    """Octaves of sines the state enters the decoder with (when `scene` is set)."""

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


class Block(nn.Module):
    """Pre-norm transformer layer (full attention over a frame's tokens unless masked)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, n, d); mask (n, n) bool, True where a token may attend (None: all)."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class Tokenizer(nn.Module):
    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, pd = cfg.grid**2, 3 * cfg.patch**2
        self.patch_in = nn.Linear(pd, cfg.width)
        self.pos_enc = nn.Parameter(torch.randn(1, n, cfg.width) * 0.02)
        self.enc = nn.Sequential(*[Block(cfg.width, cfg.heads) for _ in range(cfg.layers)])
        self.to_latent = nn.Sequential(
            nn.LayerNorm(cfg.width), nn.Linear(cfg.width, cfg.latent_dim)
        )
        self.from_latent = nn.Linear(cfg.latent_dim, cfg.width)
        self.pos_dec = nn.Parameter(torch.randn(1, n, cfg.width) * 0.02)
        self.dec = nn.Sequential(*[Block(cfg.width, cfg.heads) for _ in range(cfg.layers)])
        self.patch_out = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, pd))
        self.state_in = None
        if cfg.scene is not None:
            layout = SceneLayout.from_dict(cfg.scene)
            angle = torch.tensor([q.angle for q in layout.quantities for _ in range(q.size)])
            self.register_buffer("angle", angle, persistent=False)
            feats = layout.dim + int(angle.sum())
            self.register_buffer("feature_mean", torch.zeros(feats))  # fit_state_statistics
            self.register_buffer("feature_std", torch.ones(feats))
            self.state_in = nn.Sequential(
                nn.Linear(feats * (1 + 2 * cfg.fourier_bands), cfg.width),
                nn.SiLU(),
                nn.Linear(cfg.width, cfg.width),
            )
            nn.init.zeros_(self.state_in[-1].weight)  # starts as the latents-only decoder
            nn.init.zeros_(self.state_in[-1].bias)
            self.no_state = nn.Parameter(torch.zeros(1, 1, cfg.width))
            # bodies' positions (x, y or x, y, z) drawn where the camera puts them: every
            # token gets its offset from each, in token units, as Fourier features
            # (fit_camera; an affine map, exact for Reacher's top-down camera)
            drawn = [q for q in layout.quantities if q.drawn_position]
            if len({q.size for q in drawn}) > 1:
                raise ValueError(
                    f"scene positions {[(q.name, q.size) for q in drawn]}: all drawn positions "
                    "must have the same number of coordinates (2 or 3)"
                )
            self.points = [layout.slices[q.name] for q in drawn]
            if self.points:
                g = cfg.grid
                rc = torch.stack(
                    torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij"), -1
                )
                self.register_buffer(
                    "centres", rc.flip(-1).reshape(-1, 2).float() + 0.5, persistent=False
                )
                # metres -> (column, row) on the token grid
                self.to_grid = nn.Linear(drawn[0].size, 2)
                pf = len(self.points) * 2 * (1 + 2 * POINT_BANDS)
                self.point_in = nn.Sequential(
                    nn.Linear(pf, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)
                )
                nn.init.zeros_(self.point_in[-1].weight)
                nn.init.zeros_(self.point_in[-1].bias)

    # (B, H, W, 3) <-> (B, N, 3 p p) with N = grid^2 tokens in row-major order
    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        b, g, p = x.shape[0], self.cfg.grid, self.cfg.patch
        return x.view(b, g, p, g, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * 3)

    def _unpatchify(self, t: torch.Tensor) -> torch.Tensor:
        b, g, p = t.shape[0], self.cfg.grid, self.cfg.patch
        return t.view(b, g, g, p, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, g * p, g * p, 3)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, N, C) latent tokens in (-1, 1)."""
        x = self._patchify(frames.float() / 127.5 - 1)
        h = self.enc(self.patch_in(x) + self.pos_enc)
        return torch.tanh(self.to_latent(h))

    def _state_features(self, state: torch.Tensor) -> torch.Tensor:
        x = (angle_features(state.float(), self.angle) - self.feature_mean) / self.feature_std
        return fourier_features(x, self.cfg.fourier_bands)

    @torch.no_grad()
    def fit_state_statistics(self, values: np.ndarray) -> None:
        """Normalise the decoder's state features by training rows (rows, dim)."""
        raw = angle_features(torch.as_tensor(values, dtype=torch.float32), self.angle)
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(raw.std(0).clamp_min(1e-6))

    @torch.no_grad()
    def fit_camera(self, values: np.ndarray, seg: np.ndarray, goal: int = 3) -> float:
        """Fit `to_grid` (metres -> token grid) by least squares from frames whose goal is
        fully in view: the goal pixels' centre (`goal`: its class in
        worldsim.mujoco_sim.SEG_CLASSES) against the last drawn position (Reacher's target,
        Pusher's goal). Returns the fit's RMS error in pixels."""
        if not self.points:
            raise ValueError(f"scene {[q['name'] for q in self.cfg.scene]} has no x, y position")
        count = (seg == goal).sum((1, 2))
        if not count.any():
            raise ValueError(
                f"no frame shows segmentation class {goal} (the goal) to fit the camera"
            )
        full = count >= max(1, np.percentile(count, 90))
        ys, xs = np.mgrid[: seg.shape[1], : seg.shape[2]]
        m = (seg[full] == goal).astype(np.float64)
        px = np.stack([(m * xs).sum((1, 2)), (m * ys).sum((1, 2))], 1) / m.sum((1, 2))[:, None]
        pos = values[full][:, self.points[-1]].astype(np.float64)
        a = np.concatenate([pos, np.ones((len(pos), 1))], 1)
        w, *_ = np.linalg.lstsq(a, (px + 0.5) / self.cfg.patch, rcond=None)
        self.to_grid.weight.copy_(torch.from_numpy(w[:-1].T))
        self.to_grid.bias.copy_(torch.from_numpy(w[-1]))
        return float(np.sqrt(((a @ w - (px + 0.5) / self.cfg.patch) ** 2).mean()) * self.cfg.patch)

    def point_embedding(self, state: torch.Tensor) -> torch.Tensor | float:
        """(B, dim) -> (B, N, width): each token's offsets from the state's positions (0
        for a scene without x, y positions)."""
        if not self.points:
            return 0.0
        pts = torch.stack([state[:, sl] for sl in self.points], 1).float()  # (B, P, 2 or 3)
        d = self.centres[None, :, None] - self.to_grid(pts)[:, None]  # (B, N, P, 2)
        f = fourier_features(d, POINT_BANDS, base=math.pi / 8).flatten(-2)
        return self.point_in(f.to(self.no_state.dtype))

    def state_embedding(self, state: torch.Tensor | None, batch: int) -> torch.Tensor | float:
        """Added to the decoder's tokens: the state's embedding (B, 1, width) plus each
        token's point embedding (B, N, width), or the learned stand-in (B, 1, width) where
        `state` is None; 0 for a decoder without a scene."""
        if self.state_in is None:
            return 0.0
        if state is None:
            return self.no_state.expand(batch, 1, -1)
        glob = self.state_in(self._state_features(state).to(self.no_state.dtype))[:, None]
        return glob + self.point_embedding(state)

    def decode(self, z: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, C) latents [and the (B, dim) state they show] -> (B, H, W, 3) images in
        [-1, 1] (float)."""
        h = self.from_latent(z) + self.pos_dec + self.state_embedding(state, z.shape[0])
        h = self.dec(h)
        return self._unpatchify(self.patch_out(h).float()).clamp(-1, 1)

    def decode_uint8(self, z: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, C) [and (B, dim) state] -> (B, H, W, 3) uint8 frames."""
        return ((self.decode(z, state) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def forward(
        self,
        frames: torch.Tensor,
        latent_noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        z = self.encode(frames)
        if latent_noise > 0:  # per-sample noise level in [0, latent_noise]
            level = torch.rand(z.shape[0], 1, 1, generator=generator, device=z.device)
            noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            z = z + latent_noise * level * noise
        return self.decode(z)

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def group_tokens(z: torch.Tensor, grid: int, group: int) -> torch.Tensor:
    """Latents (..., grid^2, C) -> (..., (grid/group)^2, group^2 C): each group x group
    square of neighbouring tokens becomes one token (fewer, wider tokens: cheaper attention
    and matmuls for the models that read the grid)."""
    *lead, _, c = z.shape
    g, p = grid // group, group
    z = z.reshape(-1, g, p, g, p, c).permute(0, 1, 3, 2, 4, 5)
    return z.reshape(*lead, g * g, p * p * c)


def build_tokenizer(config: dict) -> Tokenizer:
    known = TokenizerConfig.__dataclass_fields__
    return Tokenizer(TokenizerConfig(**{k: v for k, v in config.items() if k in known}))


def foreground_weights(seg: torch.Tensor, fg_weight: float) -> torch.Tensor:
    """(B, H, W) uint8 classes -> (B, H, W, 1) weights; foreground dilated by one pixel."""
    fg = F.max_pool2d((seg > 0).float().unsqueeze(1), 3, stride=1, padding=1)
    return (1 + (fg_weight - 1) * fg).squeeze(1).unsqueeze(-1)


def reconstruction_loss(
    recon: torch.Tensor, frames: torch.Tensor, seg: torch.Tensor, fg_weight: float
) -> torch.Tensor:
    """Foreground-weighted MSE between decoded (B, H, W, 3) in [-1, 1] and uint8 frames."""
    target = frames.float() / 127.5 - 1
    w = foreground_weights(seg, fg_weight)
    return (w * (recon.float() - target) ** 2).sum() / (w.sum() * 3)
