"""A decoder that draws the frame where the state says: fine-tune the shipped tokenizer's
decoder (encoder frozen, so latents, dynamics and reasoner are unchanged) with the scene's
state added to every token, on the latents the dynamics model itself generates (one Euler
step from true context, the engine's `fast` path) beside noised true latents, against
the real frame. Writes a checkpoint folder (the source's files, this tokenizer) for
experiments/rollout_agreement.py and `worldsim eval fidelity`.

    python experiments/state_decoder.py --out runs/exp_sdec/checkpoint [--steps 3000]
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import shipped
import torch
from tqdm import tqdm

from worldsim.checkpoint import save_model
from worldsim.datasets.store import EpisodeStore
from worldsim.dream import checkpoint_dir
from worldsim.model.tokenizer import Tokenizer, TokenizerConfig, reconstruction_loss
from worldsim.train.dynamics import window_batch
from worldsim.train.latent_set import LatentSet


@torch.no_grad()
def generated_latents(
    dyn, data: dict, rows: np.ndarray, context: np.ndarray, tau_ctx: float, seed: int
) -> np.ndarray:
    """(len(rows), N, C): the dynamics' one-step prediction of each row from the two rows
    at `context` written as context at tau_ctx, with the row's true state and action."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in tqdm(range(0, len(rows), 256), desc="generated latents"):
        b = window_batch(data, rows[i : i + 256] - 2, 3, context=context[i : i + 256])
        z = b["z"]
        noise = torch.randn(z.shape, generator=g)
        z_in = torch.cat([tau_ctx * z[:, :2] + (1 - tau_ctx) * noise[:, :2], noise[:, 2:]], 1)
        tau = torch.tensor([tau_ctx, tau_ctx, 0.0]).expand(len(z), 3)
        clean, _, _ = dyn(z_in, tau, b["prev_action"], b["has_action"], b["state"])
        out.append(clean[:, -1].clamp(-1, 1).numpy())
    return np.concatenate(out)


def main() -> None:
    p = shipped.parser(__doc__)
    p.add_argument("--train-store", default="runs/world_model/reacher/data/reacher.zarr")
    p.add_argument("--latents", default="runs/world_model/reacher/data/reacher_latents.safetensors")
    p.add_argument("--rows", type=int, default=40_000, help="training rows generated")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--generated", type=float, default=0.5, help="share of generated latents")
    p.add_argument(
        "--other-time",
        type=float,
        default=0.0,
        help="share of inputs from another frame of the same episode (the arm elsewhere)",
    )
    p.add_argument(
        "--other-episode",
        type=float,
        default=0.0,
        help="share of inputs from any frame of any episode (the target elsewhere too)",
    )
    p.add_argument(
        "--lagged",
        type=float,
        default=0.4,
        help="share of generated rows whose context is 1-6 frames older (a bigger jump)",
    )
    p.add_argument("--no-state", type=float, default=0.15, help="share decoded without state")
    p.add_argument("--out", required=True, help="checkpoint folder written")
    args = p.parse_args()
    torch.manual_seed(0)
    w = shipped.load(args)
    lset = LatentSet.load(args.latents)
    first = np.zeros(len(lset.latents), bool)
    first[np.concatenate([[0], lset.episode_ends[:-1]])] = True
    data = {
        "latents": lset.latents,
        "state": lset.state,
        "first": first,
        "weights": np.ones(lset.latents.shape[:2], np.float32),
        "action": lset.action,
        "reward": lset.reward,
        "terminated": lset.terminated,
    }
    train_eps, _ = lset.split(20)
    rng = np.random.default_rng(0)
    rows = lset.window_starts(3, train_eps) + 2  # rows with two predecessors
    rows = np.sort(rng.choice(rows, min(args.rows, len(rows)), replace=False))
    store = EpisodeStore.open(args.train_store)
    frames = store.read("frame", 0, store.num_rows)[rows]
    seg = store.read("seg", 0, store.num_rows)[rows]
    check = w.tok.encode(torch.from_numpy(frames[:8])).detach().numpy()
    assert np.abs(check - lset.latents[rows[:8]]).max() < 0.05, "latent set rows != store rows"
    t0 = time.time()
    lag = np.where(rng.random(len(rows)) < args.lagged, rng.integers(1, 7, len(rows)), 0)
    episode_first = np.concatenate([[0], lset.episode_ends])[
        np.searchsorted(lset.episode_ends, rows, side="right")
    ]
    context = np.maximum(rows - 2 - lag, episode_first)
    gen = generated_latents(w.dyn, data, rows, context, 0.9, seed=0)
    gen_s = time.time() - t0

    cfg = TokenizerConfig(**{**w.tok.cfg.__dict__, "scene": w.layout.to_dict()})
    tok = Tokenizer(cfg)
    missing, unexpected = tok.load_state_dict(w.tok.state_dict(), strict=False)
    assert not unexpected and all(
        k.startswith(("state_in", "no_state", "feature_")) for k in missing
    )
    tok.fit_state_statistics(lset.state)
    for prm in [
        *tok.patch_in.parameters(),
        tok.pos_enc,
        *tok.enc.parameters(),
        *tok.to_latent.parameters(),
    ]:
        prm.requires_grad_(False)
    params = [q for q in tok.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * s / args.steps))),
    )
    state = torch.from_numpy(lset.state[rows])
    true = torch.from_numpy(lset.latents[rows])
    genz = torch.from_numpy(gen)
    all_latents = torch.from_numpy(lset.latents)
    episode = np.searchsorted(lset.episode_ends, rows, side="right")
    ep_first = np.concatenate([[0], lset.episode_ends])[episode]
    ep_len = lset.episode_ends[episode] - ep_first
    shares = np.cumsum([args.generated, args.other_time, args.other_episode])
    k = args.batch - int(args.no_state * args.batch)  # the rest: decoded without a state
    bar = tqdm(range(args.steps), desc="state decoder")
    for step in bar:
        idx = rng.integers(0, len(rows), args.batch)
        kind = np.searchsorted(shares, rng.random(args.batch), side="right")
        kind[k:] = 3  # no state: only clean (noised) latents, the round trip's case
        source = np.where(
            kind == 1,
            ep_first[idx] + (rng.random(args.batch) * ep_len[idx]).astype(int),  # same episode
            rng.integers(0, len(lset.latents), args.batch),  # anywhere
        )
        noisy = true[idx] + 0.1 * torch.rand(args.batch, 1, 1) * torch.randn_like(true[idx])
        z = torch.where(
            torch.from_numpy(kind == 0)[:, None, None],
            genz[idx],
            torch.where(torch.from_numpy(kind == 3)[:, None, None], noisy, all_latents[source]),
        )
        recon = torch.cat([tok.decode(z[:k], state[idx[:k]]), tok.decode(z[k:])])
        loss = reconstruction_loss(
            recon, torch.from_numpy(frames[idx]), torch.from_numpy(seg[idx]), 20.0
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = checkpoint_dir("reacher", args.checkpoint)
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(("tokenizer", "drift_limits")):
            shutil.copy(f, out)
    meta = {**tok.config_dict(), "task": "reacher"}
    save_model(
        out / "tokenizer.safetensors",
        tok,
        "tokenizer",
        meta,
        {"state_decoder": {**vars(args), "generated_latents_s": gen_s}},
    )
    print(f"wrote {out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
