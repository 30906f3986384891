"""FrameEngine: the real-time loop of the world model, batched over B worlds.

reset(context frames) encodes them and writes them into the ring KV cache;
step(actions) denoises the next frame's latents in S Euler steps of the flow
(attending to the cache), writes the frame into the cache once, and decodes
pixels only when asked. Per-world reset masks serve vector environments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worldsim.model.dynamics import Dynamics, KVCache
from worldsim.model.tokenizer import Tokenizer


@dataclass
class EngineConfig:
    steps: int = 2
    """S: Euler steps of the flow per frame."""
    tau_ctx: float = 0.9
    """Flow time of frames in the cache: context is slightly noised so errors do not compound."""
    seed: int = 0
    """Seed of the sampling noise."""


@dataclass
class StepOutput:
    latents: torch.Tensor  # (B, N, C)
    reward: torch.Tensor  # (B,)
    terminated: torch.Tensor  # (B,) bool
    frames: torch.Tensor | None  # (B, H, W, 3) uint8 when decoded


class FrameEngine:
    def __init__(
        self,
        tokenizer: Tokenizer,
        dynamics: Dynamics,
        batch: int,
        cfg: EngineConfig | None = None,
        device: str = "cpu",
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
    ) -> None:
        self.tok = tokenizer.to(device).eval()
        self.dyn = dynamics.to(device).eval()
        self.cfg = cfg or EngineConfig()
        self.batch, self.device = batch, device
        self.cache = KVCache(dynamics.cfg, batch, device)
        self.gen = torch.Generator(device).manual_seed(self.cfg.seed)
        a = dynamics.cfg.action_dim
        self.low = torch.as_tensor(action_low if action_low is not None else -np.inf * np.ones(a))
        self.high = torch.as_tensor(action_high if action_high is not None else np.inf * np.ones(a))
        self.prev_action = torch.zeros(batch, a, device=device)
        self.has_action = torch.zeros(batch, dtype=torch.bool, device=device)
        self.latents = torch.zeros(
            batch, dynamics.cfg.grid**2, dynamics.cfg.latent_dim, device=device
        )

    def seed(self, seed: int) -> None:
        self.gen.manual_seed(seed)

    def check_actions(self, actions) -> torch.Tensor:
        a = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=self.device)
        want = (self.batch, self.dyn.cfg.action_dim)
        if a.shape != want:
            raise ValueError(f"actions must have shape {want}, got {tuple(a.shape)}")
        if not torch.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        if (a.cpu() < self.low - 1e-6).any() or (a.cpu() > self.high + 1e-6).any():
            raise ValueError(f"actions outside bounds [{self.low.tolist()}, {self.high.tolist()}]")
        return a

    @torch.no_grad()
    def _write(self, z: torch.Tensor, prev_action, has_action, mask: torch.Tensor):
        """Write clean latents z into the cache (noised to tau_ctx) for worlds in mask.

        Returns the reward and termination logits read on this near-clean pass."""
        b = z.shape[0]
        tau = torch.full((b,), self.cfg.tau_ctx, device=self.device)
        noise = torch.randn(z.shape, generator=self.gen, device=self.device)
        zc = self.cfg.tau_ctx * z + (1 - self.cfg.tau_ctx) * noise
        if mask.all():
            return self.dyn.step(zc, tau, prev_action, has_action, self.cache, write=True)[1:]
        # worlds outside the mask must keep their cache: write into a copy and merge back
        k, v = self.cache.k.clone(), self.cache.v.clone()
        age, nxt = self.cache.age.clone(), self.cache.next_slot.clone()
        heads = self.dyn.step(zc, tau, prev_action, has_action, self.cache, write=True)[1:]
        keep = ~mask
        self.cache.k[:, keep], self.cache.v[:, keep] = k[:, keep], v[:, keep]
        self.cache.age[keep], self.cache.next_slot[keep] = age[keep], nxt[keep]
        return heads

    @torch.no_grad()
    def reset(self, frames, actions=None, mask=None, decode: bool = False) -> StepOutput:
        """Start worlds from real context frames (B, K, H, W, 3) uint8 and the K-1 actions
        between them; only worlds where mask is True are reset."""
        frames = torch.as_tensor(frames, device=self.device)
        b, k = frames.shape[:2]
        if b != self.batch:
            raise ValueError(f"context frames must have batch {self.batch}, got {b}")
        mask = torch.ones(b, dtype=torch.bool) if mask is None else torch.as_tensor(mask)
        self.cache.reset(mask)
        z = self.tok.encode(frames.flatten(0, 1)).view(b, k, *self.latents.shape[1:])
        prev = torch.zeros(b, self.dyn.cfg.action_dim, device=self.device)
        has = torch.zeros(b, dtype=torch.bool, device=self.device)
        for t in range(k):
            if t > 0 and actions is not None:
                prev = torch.as_tensor(actions, device=self.device)[:, t - 1].float()
                has = torch.ones(b, dtype=torch.bool, device=self.device)
            self._write(z[:, t], prev, has, mask)
        self.latents[mask] = z[mask, -1]
        self.has_action[mask] = False
        out = StepOutput(
            self.latents.clone(), torch.zeros(b), torch.zeros(b, dtype=torch.bool), None
        )
        if decode:
            out.frames = self.tok.decode_uint8(self.latents)
        return out

    @torch.no_grad()
    def step(self, actions, decode: bool = True) -> StepOutput:
        a = self.check_actions(actions)
        b = self.batch
        has = torch.ones(b, dtype=torch.bool, device=self.device)
        z = torch.randn(self.latents.shape, generator=self.gen, device=self.device)
        taus = torch.linspace(0, 1, self.cfg.steps + 1)
        for s in range(self.cfg.steps):
            tau = torch.full((b,), float(taus[s]), device=self.device)
            v = self.dyn.step(z, tau, a, has, self.cache)[0]
            z = z + float(taus[s + 1] - taus[s]) * v
        reward, term = self._write(z, a, has, torch.ones(b, dtype=torch.bool))
        self.latents = z
        frames = self.tok.decode_uint8(z) if decode else None
        return StepOutput(z, reward, torch.sigmoid(term) > 0.5, frames)
