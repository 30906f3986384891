"""`worldsim train dynamics`: fit the state-grounded world model on frozen-tokenizer latents.

Every frame of the store is encoded once by the frozen tokenizer and kept with its
scene state (a LatentSet, on disk with `latents=PATH`). Each step trains both parts
of the model (worldsim.model.dynamics):
- the frame transformer, on windows of W + 1 consecutive frames of one episode with
  their states and the actions between them. Each frame gets its own flow time tau
  (diffusion forcing), half of them near-clean like the context at sampling time;
  the loss is on the clean latents. On a share of the windows the last frames are
  replaced by the model's own generations (as inputs only; the targets stay the
  truth), and with `flow.pool` part of every batch comes from dreams that persist
  across steps along whole episodes, so it learns to draw the frame its state shows
  even after a context that has drifted;
- the state transition, rolled out by itself over `transition.horizon` frames from
  a true state under the true actions (backpropagated through the whole rollout, so
  it learns what compounds), the loss a Huber on each column's error in units of
  the data's typical one-frame change (median absolute deviation): with the plain
  standard deviation, fast held-key spins set the scale and a one-frame joint-angle
  error of 0.012 rad went unnoticed (h16 fingertip 1.3 cm; Huber on the robust scale:
  0.48 cm after the same 1,500 steps).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import imageio.v2 as imageio
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from worldsim.checkpoint import file_sha256, load_header, load_model
from worldsim.engine import EngineConfig, FrameEngine
from worldsim.eval.metrics import psnr, side_by_side
from worldsim.model.dynamics import Dynamics, build_dynamics
from worldsim.model.tokenizer import Tokenizer, build_tokenizer
from worldsim.model.transition import column_bounds, column_roles, wrap
from worldsim.scene import SceneLayout
from worldsim.train.harness import Trainer, fit
from worldsim.train.latent_set import LatentSet
from worldsim.train.tokenizer import open_store


def window_batch(
    data: dict, starts: np.ndarray, length: int, context: np.ndarray | None = None
) -> dict[str, torch.Tensor]:
    """Windows of `length` rows from `starts`: latents, scene states, token loss weights,
    the action into each frame and the reward/termination of that transition (none for
    an episode's first frame: data["first"] marks those rows). With `context` (B,), a
    window's context frames are the `length - 1` rows from there instead (a jump window,
    see `jump_context`)."""
    rows = starts[:, None] + np.arange(length)
    if context is not None:
        rows[:, :-1] = context[:, None] + np.arange(length - 1)
    prev = np.maximum(rows - 1, 0)  # the row whose action led to each frame
    has = ~data["first"][rows]
    return {
        "z": torch.from_numpy(data["latents"][rows]),
        "state": torch.from_numpy(data["state"][rows]),
        "w": torch.from_numpy(data["weights"][rows]),
        "prev_action": torch.from_numpy(data["action"][prev]),
        "has_action": torch.from_numpy(has),
        # targets of frame t's heads: the transition into it, i.e. row t - 1
        "reward": torch.from_numpy(data["reward"][prev]),
        "terminated": torch.from_numpy(data["terminated"][prev].astype(np.float32)),
    }


def jump_context(
    starts: np.ndarray,
    length: int,
    episode_of: np.ndarray,
    bounds: np.ndarray,
    share: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Context starts for windows `starts`: on a `share` of them a uniformly drawn place in
    the window's own episode (the scene and target stay, the arm's pose jumps to anywhere),
    elsewhere the window's own. `episode_of` maps a row to its episode, `bounds` (E, 2) the
    episodes' first row and end."""
    context = starts.copy()
    jump = rng.random(len(starts)) < share
    first, end = bounds[episode_of[starts[jump]]].T
    context[jump] = first + (rng.random(int(jump.sum())) * (end - first - length + 2)).astype(int)
    return context


def sample_tau(shape, flow, gen: torch.Generator) -> torch.Tensor:
    """Per-frame flow times (B, T) on the generator's device: U(0, 1), or near-clean
    context; the last frame of a window is pure noise (tau 0, what a one-step sampler
    starts every new frame from) with probability flow.tau0_prob."""
    dev = gen.device
    tau = torch.rand(shape, generator=gen, device=dev)
    ctx = torch.rand(shape, generator=gen, device=dev) < flow.ctx_prob
    near_clean = flow.ctx_min + (1 - flow.ctx_min) * torch.rand(shape, generator=gen, device=dev)
    tau = torch.where(ctx, near_clean, tau)
    noise = torch.rand(shape[0], generator=gen, device=dev) < flow.tau0_prob
    tau[:, -1] = torch.where(noise, torch.zeros_like(tau[:, -1]), tau[:, -1])
    return tau


@torch.no_grad()
def next_frame(net, z, act, has, state, tau_ctx: float, gen: torch.Generator) -> torch.Tensor:
    """The model's one-step generation of the last frame of windows z (B, T, N, C) from
    the frames before it, as the engine makes it: context at flow time tau_ctx, the new
    frame from pure noise; state (B, T, dim) the frames' states."""
    b, t = z.shape[:2]
    noise = torch.randn(z.shape, generator=gen, device=gen.device).to(z.device)
    level = torch.full((b, t), tau_ctx, device=z.device)
    level[:, -1] = 0
    x = level[..., None, None] * z + (1 - level[..., None, None]) * noise
    return net(x, level, act, has, state)[0][:, -1].float().clamp(-1, 1)


@torch.no_grad()
def own_rollout(net, batch: dict, frames: int, tau_ctx: float, gen: torch.Generator, device):
    """The window with its last `frames` latents replaced by the model's own one-step
    generations, each from the (already replaced) frames before it."""
    z = batch["z"].to(device).clone()
    act, has = batch["prev_action"].to(device), batch["has_action"].to(device)
    state = batch["state"].to(device)
    for i in range(z.shape[1] - frames, z.shape[1]):
        w = slice(0, i + 1)
        z[:, i] = next_frame(net, z[:, w], act[:, w], has[:, w], state[:, w], tau_ctx, gen)
    return z


@torch.no_grad()
def window_errors(
    net,
    data: dict,
    starts: np.ndarray,
    length: int,
    tau_ctx: float,
    device,
    batch: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """(len(starts),) each window's foreground-weighted squared error of the model's
    one-step generation of its last frame (`next_frame`, the engine's way), fixed noise."""
    gen = torch.Generator(device).manual_seed(0)
    out = np.zeros(len(starts), np.float32)
    for a in tqdm(range(0, len(starts), batch), desc="window errors", disable=not progress):
        b = window_batch(data, starts[a : a + batch], length)
        z = b["z"].to(device)
        new = next_frame(
            net,
            z,
            b["prev_action"].to(device),
            b["has_action"].to(device),
            b["state"].to(device),
            tau_ctx,
            gen,
        )
        w = b["w"][:, -1].to(device)[..., None]
        out[a : a + batch] = ((w * (new - z[:, -1]) ** 2).sum((1, 2)) / w.sum((1, 2))).cpu()
    return out


class DreamPool:
    """Dreams that persist across training steps, each rolled on by one frame per step
    along a training episode's true actions, from its first W real frames to its end.

    A window's inputs are the last W + 1 dreamed frames, its targets the episode's true
    latents, so the model trains on contexts that have drifted for up to a whole episode
    (own-rollout windows drift for at most W frames) and learns to pull them back. Slots
    start at staggered offsets so their drift ages spread evenly."""

    def __init__(self, slots: int, window: int, data: dict, starts: np.ndarray, ends: np.ndarray):
        self.slots, self.window, self.data = slots, window, data
        # episodes that hold a window: their first row and one past their last
        self.first, self.end = starts, ends
        self.episode = torch.full((slots,), -1, dtype=torch.long)
        self.row = torch.zeros(slots, dtype=torch.long)  # next row each slot dreams
        self.dream = torch.zeros(slots, window, *data["latents"].shape[1:])

    def _restart(self, i: int, rng: np.random.Generator, stagger: bool) -> None:
        e = int(rng.integers(len(self.first)))
        a = int(self.first[e])
        last = int(self.end[e]) - self.window  # the last row a slot may dream
        if stagger:
            a = int(rng.integers(a, last + 1))
        self.episode[i] = e
        self.row[i] = a + self.window
        self.dream[i] = torch.from_numpy(self.data["latents"][a : a + self.window])

    def windows(self, net, rng: np.random.Generator, tau_ctx: float, gen, device):
        """(batch, inputs): this step's windows, every slot dreamed on by one frame."""
        for i in range(self.slots):
            if self.episode[i] < 0 or self.row[i] >= self.end[self.episode[i]]:
                self._restart(i, rng, stagger=self.episode[i] < 0)
        batch = window_batch(self.data, (self.row - self.window).numpy(), self.window + 1)
        z = torch.cat([self.dream, batch["z"][:, -1:]], 1).to(device)
        act, has = batch["prev_action"].to(device), batch["has_action"].to(device)
        new = next_frame(net, z, act, has, batch["state"].to(device), tau_ctx, gen).cpu()
        inputs = torch.cat([self.dream, new[:, None]], 1)
        self.dream = inputs[:, 1:].clone()
        self.row += 1
        return batch, inputs.to(device)

    def state(self) -> dict[str, torch.Tensor]:
        return {"episode": self.episode, "row": self.row, "dream": self.dream}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if tensors["dream"].shape != self.dream.shape:  # flow.pool or the window changed
            warnings.warn(
                f"the checkpoint's dreams have shape {tuple(tensors['dream'].shape)}, this "
                f"run's pool {tuple(self.dream.shape)}: starting new dreams",
                stacklevel=2,
            )
            return
        self.episode, self.row, self.dream = tensors["episode"], tensors["row"], tensors["dream"]


def window_inputs(net, batch: dict, flow, gen: torch.Generator, device) -> torch.Tensor:
    """A window's inputs: its true latents, or on a share of the windows the model's own
    generations (targets stay the truth), so it learns to pull drifted frames back."""
    z = batch["z"].to(device)
    if not (flow.rollout_frames and flow.rollout_prob > 0):
        return z
    own = own_rollout(net, batch, flow.rollout_frames, flow.rollout_tau_ctx, gen, device)
    pick = torch.rand(z.shape[0], generator=gen, device=gen.device) < flow.rollout_prob
    return torch.where(pick.to(device)[:, None, None, None], own, z)


def flow_loss(
    net, batch: dict, inputs: torch.Tensor, flow, gen: torch.Generator, device
) -> tuple[torch.Tensor, dict]:
    z = batch["z"].to(device)
    tau = sample_tau(z.shape[:2], flow, gen).to(device)
    noise = torch.randn(z.shape, generator=gen, device=gen.device).to(device)
    t = tau[..., None, None]
    z_noisy = t * inputs + (1 - t) * noise
    clean, reward, term = net(
        z_noisy,
        tau,
        batch["prev_action"].to(device),
        batch["has_action"].to(device),
        batch["state"].to(device),
    )
    # x-prediction loss; the velocity the sampler integrates is (clean - z_noisy) / (1 - tau)
    w = batch["w"].to(device)[..., None]
    loss_v = (w * (clean.float() - z) ** 2).sum() / (w.sum() * z.shape[-1])
    has = batch["has_action"].to(device).float()
    n = has.sum().clamp_min(1)  # frames with an action leading to them
    loss_r = ((reward.float() - batch["reward"].to(device)) ** 2 * has).sum() / n
    loss_d = (
        F.binary_cross_entropy_with_logits(
            term.float(), batch["terminated"].to(device), reduction="none"
        )
        * has
    ).sum() / n
    loss = loss_v + flow.reward_weight * (loss_r + loss_d)
    return loss, {"loss_flow": loss_v.item(), "loss_reward": loss_r.item()}


def robust_step_scale(state: np.ndarray, episode_ends: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Per state column, the typical one-frame change in the training rows: 1.4826 x the
    median absolute deviation (a standard deviation where the changes are Gaussian, but
    set by the common motions rather than the rare fast spins); 1e-4 at the least."""
    last = np.zeros(len(state), bool)
    last[episode_ends - 1] = True  # rows that start no transition
    step = (state[1:] - state[:-1])[~last[:-1]]
    step[:, angle] = (step[:, angle] + np.pi) % (2 * np.pi) - np.pi
    mad = np.median(np.abs(step - np.median(step, axis=0)), axis=0)
    return np.maximum(1.4826 * mad, 1e-4).astype(np.float32)


def state_error(transition, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """pred - true per state column, angle differences wrapped into [-pi, pi)."""
    d = pred - true
    return torch.where(transition.angle, wrap(d), d)


def transition_loss(
    transition, data: dict, starts: np.ndarray, horizon: int, scale: torch.Tensor, device
) -> tuple[torch.Tensor, dict]:
    """The transition rolled out alone for `horizon` frames from the true states at `starts`
    under the true actions; Huber on every column's error in units of `scale`, plus the
    derived columns read out from the true next state."""
    rows = starts[:, None] + np.arange(horizon + 1)
    true = torch.from_numpy(data["state"][rows]).to(device)
    act = torch.from_numpy(data["action"][rows]).to(device)
    cur, total = true[:, 0], 0.0
    for k in range(horizon):
        cur = transition(cur, act[:, k])
        err = state_error(transition, cur, true[:, k + 1]) / scale
        total = total + F.huber_loss(err, torch.zeros_like(err))
    read = state_error(transition, transition.derive(true[:, 1]), true[:, 1]) / scale
    loss = total / horizon + F.huber_loss(read, torch.zeros_like(read))
    return loss, {"loss_state": loss.item()}


@torch.no_grad()
def rollout_fields(layout: SceneLayout) -> list[str]:
    """The log columns `rollout_psnr` fills for a scene."""
    positions = [f"h16_{q.name}_cm" for q in layout.quantities if q.unit == "m"]
    return ["h16_psnr_fg", "h16_copy_psnr_fg", "h16_psnr", *positions]


def rollout_psnr(
    tok: Tokenizer,
    dyn: Dynamics,
    store,
    episodes: list[int],
    context: int,
    horizon: int,
    steps: int = 1,
    video: Path | None = None,
) -> dict[str, float]:
    """Generate `horizon` frames from `context` real ones (and their states) with the true
    actions; PSNR (whole frame and foreground) of the last generated frame vs
    copy-last-frame, and the median error (cm) of the model's own positions there.

    With `video`, writes the first four rollouts as rows of truth | dream | difference."""
    starts = []
    for e in episodes:
        a, b = store.episode_bounds(e)
        if b - a >= context + horizon:
            starts.append(a)
    if not starts:
        return {}
    wins = [store.window(s, context, horizon) for s in starts]
    frames = np.stack([w["frame"] for w in wins])
    seg = np.stack([w["seg"] for w in wins])
    actions = np.stack([w["action"] for w in wins]).astype(np.float32)
    layout = SceneLayout.from_dict(dyn.cfg.scene)
    states = np.stack([layout.values(w) for w in wins])
    engine = FrameEngine(tok, dyn, len(starts), EngineConfig(steps=steps))
    engine.reset(frames[:, :context], actions[:, : context - 1], states=states[:, :context])
    dreamed = []
    for t in range(context - 1, context + horizon - 1):
        out = engine.step(actions[:, t])
        dreamed.append(out.frames.numpy())
    if video is not None:
        rows = min(4, len(starts))
        clip = [
            np.concatenate(
                [side_by_side(frames[i, context + h], dreamed[h][i], 2) for i in range(rows)], 0
            )
            for h in range(horizon)
        ]
        imageio.mimwrite(video, clip, fps=4, macro_block_size=1)
    truth = torch.from_numpy(frames[:, -1])
    fg = torch.from_numpy((seg[:, -1] > 0) | (seg[:, context - 1] > 0))
    last = torch.from_numpy(frames[:, context - 1])
    errors = layout.abs_error(out.state.numpy(), states[:, -1])
    return {
        f"h{horizon}_psnr_fg": psnr(out.frames, truth, fg),
        f"h{horizon}_copy_psnr_fg": psnr(last, truth, fg),
        f"h{horizon}_psnr": psnr(out.frames, truth),
        **{
            f"h{horizon}_{q.name}_cm": float(
                100 * np.median(np.linalg.norm(errors[q.name], axis=1))
            )
            for q in layout.quantities
            if q.unit == "m"
        },
    }


def training_latents(
    cfg: DictConfig, progress: bool = True, frames: bool = True
) -> tuple[LatentSet, Tokenizer, Any]:
    """The encoded training set, the frozen tokenizer and the store (None when absent).

    With `latents=PATH` the set is read from PATH when it matches the task, tokenizer and
    store, else encoded and written there; without a store at data_path a matching
    set is all training needs. With frames=False and a store, the store's rows are read
    without their frames (`LatentSet.states_only`): nothing is encoded or written.
    """
    tok, _ = load_model(cfg.tokenizer, "tokenizer", build_tokenizer, expect={"task": cfg.task.name})
    tok.eval().requires_grad_(False)
    have_store = Path(cfg.data_path).exists()
    store = open_store(cfg) if have_store or not cfg.latents else None
    path = Path(cfg.latents) if cfg.latents else None
    layout = SceneLayout.from_task(cfg.task)
    if not frames and store is not None:
        return LatentSet.states_only(store, cfg.tokenizer, layout, tok.cfg.latent_dim), tok, store
    if path is not None and path.exists():
        found, why = None, []
        try:
            found = LatentSet.load(path)
        except ValueError as e:  # another format
            why = [str(e)]
        if found is not None:
            rows = store.num_rows if store else None
            digest = store.content_digest() if store else None
            why = found.check_source(
                cfg.task.name, file_sha256(cfg.tokenizer), rows, layout.to_dict(), digest
            )
        if not why:
            return found, tok, store
        if store is None:
            raise ValueError(
                f"latents={path} does not fit this run ({'; '.join(why)}) and there is no "
                f"store at data_path={cfg.data_path} to encode again"
            )
        print(f"latents={path}: {'; '.join(why)}; encoding {cfg.data_path} again")
    if store is None:
        raise FileNotFoundError(f"neither latents={path} nor data_path={cfg.data_path} exists")
    found = LatentSet.encode(tok, store, cfg.tokenizer, layout, progress=progress)
    if path is not None:
        found.save(path)
    return found, tok, store


def window_data(lset: LatentSet, fg_weight: float) -> dict[str, np.ndarray]:
    """The arrays `window_batch` reads, from an encoded set: each row's latents, state,
    action, reward and termination, whether it starts an episode, and its tokens' loss
    weights (fg_weight on tokens holding foreground, 1 elsewhere)."""
    first = np.zeros(len(lset.latents), bool)
    first[np.concatenate([[0], lset.episode_ends[:-1]])] = True
    return {
        "latents": lset.latents,
        "state": lset.state,
        "first": first,
        "weights": np.where(lset.foreground, np.float32(fg_weight), np.float32(1)),
        "action": lset.action,
        "reward": lset.reward,
        "terminated": lset.terminated,
    }


def train_dynamics(cfg: DictConfig, progress: bool = True) -> dict:
    tc, st = cfg.train, cfg.transition
    if st.horizon is None:  # the task's own (recorded in the run's config as resolved)
        st.horizon = cfg.task.transition_horizon
    if st.only and not tc.get("init_from"):
        raise ValueError(
            "transition.only=true trains the transition of an existing model: give "
            "train.init_from=<dynamics.safetensors>"
        )
    torch.manual_seed(tc.seed)
    lset, tok, store = training_latents(cfg, progress, frames=not st.only)
    data = window_data(lset, tc.fg_weight)
    first = data["first"]
    layout = SceneLayout.from_dict(lset.meta["scene"])
    roles = column_roles(layout, lset.state, lset.episode_ends)
    config = {
        "task": cfg.task.name,
        "latent_dim": tok.cfg.latent_dim,
        "grid": tok.cfg.grid,
        "action_dim": int(data["action"].shape[1]),
        "scene": layout.to_dict(),
        "roles": roles,
        "bounds": column_bounds(lset.state, roles),
        **OmegaConf.to_container(cfg.model, resolve=True),
    }
    if tc.get("init_from"):  # trained further on other data: the state range it was built with
        built = load_header(tc.init_from)["config"]
        config["bounds"] = built["bounds"]
        if st.only:  # an existing model's transition: its architecture, whatever `model.*` says
            config.update({k: built[k] for k in cfg.model if k in built})
    model = build_dynamics(config)
    model.transition.fit_statistics(lset.state, lset.episode_ends)  # normalisation only
    scale = torch.from_numpy(
        robust_step_scale(lset.state, lset.episode_ends, model.transition.angle.numpy())
    )
    length = int(cfg.model.window) + 1
    train_ids, val_ids = lset.split(int(tc.val_every))
    starts = lset.window_starts(length, train_ids)
    state_starts = lset.window_starts(st.horizon + 1, train_ids)
    for n, what in ((length, starts), (st.horizon + 1, state_starts)):
        if not len(what):
            raise ValueError(f"{cfg.data_path}: no episode is long enough for windows of {n}")

    pool = None
    if cfg.flow.pool > 0 and not st.only:  # the pool's dreams train the frame model alone
        if cfg.flow.pool > tc.batch_size:
            raise ValueError(f"flow.pool={cfg.flow.pool} exceeds train.batch_size={tc.batch_size}")
        ends = lset.episode_ends
        firsts = np.concatenate([[0], ends[:-1]])
        held = [e for e in train_ids if ends[e] - firsts[e] >= length]
        pool = DreamPool(cfg.flow.pool, length - 1, data, firsts[held], ends[held])

    bounds = np.stack([np.concatenate([[0], lset.episode_ends[:-1]]), lset.episode_ends], 1)
    episode_of = np.cumsum(first) - 1
    chance = []  # the windows' sampling probabilities under flow.priority (set on first use)

    def pick_windows(net, rng, device) -> np.ndarray:
        pick = starts[rng.integers(0, len(starts), tc.batch_size)]
        hard = int(round(cfg.flow.priority * tc.batch_size))
        if hard == 0:
            return pick
        if not chance:
            err = window_errors(
                getattr(net, "module", net),
                data,
                starts,
                length,
                cfg.flow.rollout_tau_ctx,
                device,
                progress=progress,
            )
            chance.append(err / err.sum())
        pick[:hard] = starts[rng.choice(len(starts), hard, p=chance[0])]
        return pick

    def batch_loss(net, rng, gen, rank_slice, device):
        if st.only:  # the frame model gets no gradient, so its weights stay as they are
            return state_batch_loss(net, rng, rank_slice, device)
        pick = pick_windows(net, rng, device)
        # with a pool the batch's last `pool` windows come from the persistent dreams;
        # every rank rolls all of them on (same episodes, same noise), trains on its share
        mine = np.arange(tc.batch_size)[rank_slice]
        regular = tc.batch_size - (pool.slots if pool is not None else 0)
        own = pick[mine[mine < regular]]
        context = None
        if cfg.flow.jump_prob > 0:
            context = jump_context(own, length, episode_of, bounds, cfg.flow.jump_prob, rng)
        batch = window_batch(data, own, length, context)
        inputs = window_inputs(net, batch, cfg.flow, gen, device)
        if pool is not None:
            noise = torch.Generator(gen.device).manual_seed(int(rng.integers(2**62)))
            dreamed, dreamed_inputs = pool.windows(
                net, rng, cfg.flow.rollout_tau_ctx, noise, device
            )
            slots = torch.from_numpy(mine[mine >= regular] - regular)
            batch = {k: torch.cat([batch[k], dreamed[k][slots]]) for k in batch}
            inputs = torch.cat([inputs, dreamed_inputs[slots.to(device)]])
        loss, metrics = flow_loss(net, batch, inputs, cfg.flow, gen, device)
        state_loss, state_metrics = state_batch_loss(net, rng, rank_slice, device)
        return loss + st.weight * state_loss, {**metrics, **state_metrics}

    def state_batch_loss(net, rng, rank_slice, device):
        """The transition's loss on this rank's share of `transition.batch_size` rollouts
        (ranks split it as they split train.batch_size)."""
        state_pick = state_starts[rng.integers(0, len(state_starts), st.batch_size)]
        share = rank_slice.stop - rank_slice.start  # this rank's part of both batches
        per, rank = st.batch_size * share // tc.batch_size, rank_slice.start // share
        transition = getattr(net, "module", net).transition  # the model inside DDP
        with torch.autocast(device.split(":")[0], enabled=False):  # fp32: 20 cm to 0.1 mm
            return transition_loss(
                transition,
                data,
                state_pick[rank * per : (rank + 1) * per],
                st.horizon,
                scale.to(device),
                device,
            )

    def evaluate(model, step):
        if store is None:  # trained from latents alone: no frames to compare
            return {}
        video = Path(cfg.run_dir) / f"samples_{step:07d}.mp4"
        ids = val_ids[:16] or train_ids[:2]
        return rollout_psnr(tok, model, store, ids, context=4, horizon=16, video=video)

    trainer = Trainer(
        "dynamics",
        model,
        config,
        batch_loss,
        evaluate,
        ["loss_flow", "loss_reward", "loss_state", *rollout_fields(layout)],
        pool,
    )
    info = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "windows": len(starts),
        "tokenizer": str(cfg.tokenizer),
        "latent_set": lset.meta,
    }
    return fit(trainer, tc, Path(cfg.run_dir), info, progress)
