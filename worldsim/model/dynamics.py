"""State-grounded, action-conditioned, block-causal diffusion transformer over latent tokens.

Every frame carries the scene's physical state beside its latents (the task's
`scene:` quantities: for Reacher joint angles and velocities, fingertip and
target; the grounding store records them). A learned transition
(worldsim.model.transition) moves the state on by one frame under the action, and
the transformer generates the frame's latents from that state and the frames
before it. Why: v1 generated latents alone and plateaued. More H200 compute of the
same recipe left the flow loss flat and h16 foreground PSNR at 16.4 dB, and the
dream dissolved into token-sized blotches within ~100 frames, because an error in
a 1,024-number latent grid is noise that the decoder paints as blotches. An error
in a state vector is a plausible other state, and frames drawn from it stay
scenes (the model card has the measured comparison).

Frames are sequences of tokens: one state token (the state's features, in
Fourier features for positional precision) followed by the tokenizer's 8x8 grid
grouped 2x2 into 16 latent tokens. The state also enters every token of its frame
through adaptive LayerNorm, with the frame's flow time tau and the action that
led to it (adaLN-Zero). Attention is full inside a frame and causal across
frames. Each frame carries its own tau (diffusion forcing: 0 = pure noise, 1 =
clean); the network predicts a frame's clean latents (x-prediction: it never
has to carry the input noise through to its output, which left speckle in every
token under velocity prediction). Time positions are RoPE over the frame index,
so attention only sees frame *differences*: a rollout of any length reuses the
offsets 0..W seen in training. Reward and termination heads read the state token.

Generation keeps a ring buffer of the last W frames' keys and values per layer
(`KVCache`); a step attends to the cache plus its own frame(s), so cost and
memory per frame are constant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from worldsim import kernels
from worldsim.model.features import fourier_features
from worldsim.model.tokenizer import group_tokens
from worldsim.model.transition import StateTransition, default_roles
from worldsim.scene import SceneLayout

REACHER_SCENE = [
    {"name": "joint_angle", "array": "qpos", "index": [0, 1], "unit": "rad"},
    {"name": "joint_velocity", "array": "qvel", "index": [0, 1], "unit": "rad/s"},
    {"name": "fingertip", "array": "fingertip", "index": [0, 1], "unit": "m"},
    {"name": "target", "array": "target", "index": [0, 1], "unit": "m"},
]
"""The default scene (the first task's): tests build small models on it."""


@dataclass
class DynamicsConfig:
    latent_dim: int = 16
    """Channels of a tokenizer latent token."""
    grid: int = 8
    """Tokenizer grid side (tokens per frame = grid^2 before grouping)."""
    group: int = 2
    """Group group x group latent tokens into one dynamics token."""
    width: int = 192
    layers: int = 4
    heads: int = 4
    action_dim: int = 2
    window: int = 4
    """W: past frames a frame attends to (training windows hold W + 1 frames); 0: each
    frame from its own state alone (no cache)."""
    scene: list = field(default_factory=lambda: [dict(q) for q in REACHER_SCENE])
    """The state's quantities (worldsim.scene.SceneLayout.to_dict)."""
    roles: list | None = None
    """Per state column: integrate | static | derived (worldsim.model.transition); None:
    qpos/qvel columns integrate, the rest are derived."""
    bounds: list | None = None
    """Per state column: [low, high] the transition keeps it in (the training data's range
    of integrated columns, worldsim.model.transition.column_bounds) or None; None: no
    bounds (models saved before bounds existed)."""
    state_width: int = 256
    """Hidden width of the state transition's MLPs."""
    state_layers: int = 3
    """Hidden layers of the state transition's MLPs."""
    fourier_bands: int = 6
    """Octaves of sines the state's features enter the transformer with."""

    def __post_init__(self) -> None:
        """Refuse settings that build no model, or one too large to run (a checkpoint's
        header is user-editable; the loader names the file)."""
        for name in ("latent_dim", "grid", "group", "width", "layers", "heads", "action_dim"):
            if not 1 <= getattr(self, name) <= 4096:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected 1..4096")
        if not 0 <= self.window <= 64:
            raise ValueError(f"window={self.window!r}: expected 0..64 past frames")
        if self.width % self.heads or self.grid % self.group:
            raise ValueError(
                f"width={self.width} must divide into heads={self.heads} and grid={self.grid} "
                f"into group={self.group}"
            )

    @property
    def latent_tokens(self) -> int:
        return (self.grid // self.group) ** 2

    @property
    def tokens(self) -> int:
        """Tokens per frame in the transformer: one state token, then the latent tokens."""
        return self.latent_tokens + 1

    @property
    def token_dim(self) -> int:
        return self.latent_dim * self.group**2


# -- small pieces -----------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of tau in [0, 1] (scaled to 0..1000), shape (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    args = 1000 * t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def repeat_each(x: torch.Tensor, n: int, dim: int = 0) -> torch.Tensor:
    """x.repeat_interleave(n, dim) as an expand and a reshape: never a host sync, so a
    CUDA graph can capture the step (the int form of repeat_interleave has gone through a
    repeats tensor in some torch versions)."""
    dim = dim % x.dim()
    shape = list(x.shape)
    shape[dim] *= n
    return x.unsqueeze(dim + 1).expand(*x.shape[: dim + 1], n, *x.shape[dim + 1 :]).reshape(shape)


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, H, L, Dh) by frame positions pos, shaped (L,) or (B, 1, L)."""
    dh = x.shape[-1]
    freqs = 1.0 / (10000 ** (torch.arange(0, dh, 2, device=x.device).float() / dh))
    ang = pos.float()[..., None] * freqs  # (..., L, Dh/2)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class KVCache:
    """Ring buffer of the last W frames' keys/values for every layer (preallocated).

    k, v: (layers, B, heads, W * tokens, head_dim); `age[b, slot]` counts frames since
    the slot was written (-1 = empty). Writing a frame overwrites the oldest slot.
    """

    def __init__(self, cfg: DynamicsConfig, batch: int, device, dtype=torch.float32) -> None:
        self.cfg = cfg
        dh = cfg.width // cfg.heads
        shape = (cfg.layers, batch, cfg.heads, cfg.window * cfg.tokens, dh)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.age = torch.full((batch, cfg.window), -1, dtype=torch.long, device=device)
        self.next_slot = torch.zeros(batch, dtype=torch.long, device=device)

    def reset(self, mask: torch.Tensor | None = None) -> None:
        """Empty the cache of the worlds where mask is True (all when None)."""
        if mask is None:
            mask = torch.ones(self.age.shape[0], dtype=torch.bool, device=self.age.device)
        self.age[mask] = -1
        self.next_slot[mask] = 0

    def positions(self) -> torch.Tensor:
        """(B, W) frame offset of each slot relative to the frame being generated (-age-1)."""
        return -(self.age + 1)

    def valid(self) -> torch.Tensor:
        return self.age >= 0


# -- the transformer --------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, cfg: DynamicsConfig) -> None:
        super().__init__()
        d = cfg.width
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d)
        )
        self.ada = nn.Linear(d, 6 * d)  # shift/scale/gate for attention and MLP
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def qkv_heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, d = h.shape
        q, k, v = self.qkv(h).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (B, H, n, Dh)

    def forward(self, x, cond, attend):
        """x (B, T, n, d) tokens; cond (B, T, d) per-frame conditioning, modulating every
        token of its frame; attend(q, k, v) -> (B, H, T*n, Dh) over flattened tokens."""
        b, t, n, d = x.shape
        mods = self.ada(F.silu(cond))[:, :, None].chunk(6, dim=-1)  # each (B, T, 1, d)
        s1, c1, g1, s2, c2, g2 = mods
        h = kernels.modulated_norm(x, s1, c1, self.norm1.eps)
        q, k, v = self.qkv_heads(h.view(b, t * n, d))
        a = attend(q, k, v).transpose(1, 2).reshape(b, t, n, d)
        x = x + g1 * self.proj(a)
        up, down = self.mlp[0], self.mlp[2]
        h = kernels.modulated_norm(x, s2, c2, self.norm2.eps)
        return x + g2 * kernels.gelu_mlp(h, up.weight, up.bias, down.weight, down.bias)


class Dynamics(nn.Module):
    def __init__(self, cfg: DynamicsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        layout = SceneLayout.from_dict(cfg.scene)
        self.transition = StateTransition(
            layout,
            cfg.roles or default_roles(layout),
            cfg.action_dim,
            cfg.state_width,
            cfg.state_layers,
            cfg.bounds,
        )
        self.token_in = nn.Linear(cfg.token_dim, d)
        self.space_pos = nn.Parameter(torch.randn(1, 1, cfg.latent_tokens, d) * 0.02)
        state_in = self.transition.feature_dim * (1 + 2 * cfg.fourier_bands)
        self.state_in = nn.Sequential(nn.Linear(state_in, d), nn.SiLU(), nn.Linear(d, d))
        self.state_pos = nn.Parameter(torch.randn(1, 1, 1, d) * 0.02)
        self.tau_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.action_mlp = nn.Sequential(
            nn.Linear(cfg.action_dim + 1, d), nn.SiLU(), nn.Linear(d, d)
        )
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Linear(d, 2 * d)
        self.token_out = nn.Linear(d, cfg.token_dim)
        self.heads_out = nn.Linear(d, 2)  # reward, termination logit
        for lin in (self.ada_out, self.token_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    # latents (B, T, grid^2, C) <-> dynamics tokens (B, T, tokens, token_dim)
    def group(self, z: torch.Tensor) -> torch.Tensor:
        return group_tokens(z, self.cfg.grid, self.cfg.group)

    def ungroup(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, _ = x.shape
        g, p, c = self.cfg.grid // self.cfg.group, self.cfg.group, self.cfg.latent_dim
        x = x.view(b, t, g, g, p, p, c).permute(0, 1, 2, 4, 3, 5, 6)
        return x.reshape(b, t, self.cfg.grid**2, c)

    def condition(self, tau: torch.Tensor, prev_action: torch.Tensor, has_action: torch.Tensor):
        """Per-frame conditioning (B, T, d) from tau (B, T), action (B, T, A), flag (B, T)."""
        a = torch.cat([prev_action * has_action[..., None], has_action[..., None].float()], -1)
        return self.tau_mlp(timestep_embedding(tau, 256)) + self.action_mlp(a)

    def _embed(self, z_noisy, tau, prev_action, has_action, state):
        """Frame tokens (B, T, 1 + n, d): the state token, then the latent tokens; and the
        per-frame conditioning (B, T, d), which carries the state too."""
        feats = fourier_features(self.transition.features(state.float()), self.cfg.fourier_bands)
        s = self.state_in(feats.to(z_noisy.dtype))  # (B, T, d)
        x = torch.cat(
            [(s[:, :, None] + self.state_pos), self.token_in(self.group(z_noisy)) + self.space_pos],
            dim=2,
        )
        return x, self.condition(tau, prev_action, has_action) + s

    def _head(self, x, c):
        shift, scale = self.ada_out(F.silu(c))[:, :, None].chunk(2, dim=-1)
        h = kernels.modulated_norm(x, shift, scale, self.norm_out.eps)
        clean = self.ungroup(self.token_out(h[:, :, 1:]))
        heads = self.heads_out(h[:, :, 0])
        return clean, heads[..., 0], heads[..., 1]

    def forward(self, z_noisy, tau, prev_action, has_action, state):
        """Whole windows (training and the reference for the cache).

        z_noisy (B, T, grid^2, C); tau (B, T); prev_action (B, T, A) = the action that led
        to each frame; has_action (B, T) bool; state (B, T, dim): each frame's scene state
        (worldsim.scene values). Returns the predicted clean latents (B, T, grid^2, C),
        reward and termination logits (B, T).
        """
        t, n = z_noisy.shape[1], self.cfg.tokens
        x, c = self._embed(z_noisy, tau, prev_action, has_action, state)
        frame = torch.arange(t, device=x.device).repeat_interleave(n)
        mask = (frame[:, None] >= frame[None, :]) & (
            frame[:, None] - frame[None, :] <= self.cfg.window
        )

        def attend(q, k, v):
            return F.scaled_dot_product_attention(rope(q, frame), rope(k, frame), v, attn_mask=mask)

        for blk in self.blocks:
            x = blk(x, c, attend)
        return self._head(x, c)

    def step(self, z_noisy, tau, prev_action, has_action, state, cache: KVCache, write_first=False):
        """T new frames against the cache: z_noisy (B, T, grid^2, C), tau (B, T),
        prev_action (B, T, A), has_action (B, T), state (B, T, dim). Returns what `forward`
        returns.

        New frames attend to the cache and causally to each other. With write_first the
        first new frame's keys/values go into the ring (overwriting the oldest slot):
        the engine passes [last frame, clean-ish; next frame, noise] so that storing a
        frame and the first denoising step of the next one share one forward pass.
        """
        b, t = z_noisy.shape[:2]
        n, w = self.cfg.tokens, self.cfg.window
        dev = z_noisy.device
        x, c = self._embed(z_noisy, tau, prev_action, has_action, state)
        # relative positions: cached frames at -age-1, new frames at 0..T-1
        new_pos = torch.arange(t, device=dev)
        cache_pos = cache.positions()  # (B, W)
        # frame j sees a slot while its offset j - pos stays within the training window
        see_cache = cache.valid()[:, None] & (new_pos[None, :, None] - cache_pos[:, None] <= w)
        gap = new_pos[:, None] - new_pos[None, :]
        see_new = (gap >= 0) & (gap <= w)  # (T, T)
        mask = torch.cat(
            [
                repeat_each(repeat_each(see_cache, n, 1), n, 2),
                repeat_each(repeat_each(see_new, n, 0), n, 1).expand(b, -1, -1),
            ],
            dim=2,
        )[:, None]  # (B, 1, T*n, W*n + T*n)
        q_pos = repeat_each(new_pos, n)
        k_pos = repeat_each(cache_pos, n, 1)[:, None]  # (B, 1, W*n)
        new_k, new_v = [], []

        for i, blk in enumerate(self.blocks):

            def attend(q, k, v, i=i):
                new_k.append(k[:, :, :n])
                new_v.append(v[:, :, :n])
                k_cache = rope(cache.k[i], k_pos)
                return kernels.frame_attention(
                    rope(q, q_pos), k_cache, cache.v[i], rope(k, q_pos), v, mask
                )

            x = blk(x, c, attend)
        if write_first and w > 0:
            slot = cache.next_slot
            rows = torch.arange(b, device=dev)
            span = slot[:, None] * n + torch.arange(n, device=dev)  # (B, n)
            for i in range(len(self.blocks)):
                cache.k[i][rows[:, None], :, span] = new_k[i].permute(0, 2, 1, 3).to(cache.k.dtype)
                cache.v[i][rows[:, None], :, span] = new_v[i].permute(0, 2, 1, 3).to(cache.v.dtype)
            cache.age += (cache.age >= 0).long()  # no boolean indexing: torch.compile traces it
            cache.age[rows, slot] = 0
            cache.next_slot.copy_((slot + 1) % w)  # in place: a captured CUDA graph reads it
        return self._head(x, c)

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def build_dynamics(config: dict) -> Dynamics:
    known = DynamicsConfig.__dataclass_fields__
    return Dynamics(DynamicsConfig(**{k: v for k, v in config.items() if k in known}))
