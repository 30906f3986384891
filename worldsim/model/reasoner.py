"""Reasoner: reads a frame's latent tokens and says what is in the scene.

It works on the tokenizer's latents, the same tokens the dynamics model
generates, so it reads dreamed frames without decoding pixels. The state (the
task's scene quantities, angles as cos/sin, normalised) comes from the frame
plus the reasoner's own previous estimate (velocities are not visible in one
frame, but the change from the last estimate is). A small character-level
language model answers the task's question forms with the encoded frame as a
prefix: the frame's tokens, one token of the state estimate and, in reasoners
trained since, one token per task judgment of that estimate (distance and bearing
to the goal, joint angles, fastest joint, each in its answer's step, so that each
answer is a rounding of one of them or a threshold on it), whose mean every
character of the text also reads, and, since `judgment_chars`, the same judgments in
whole steps written out as characters for the language model to copy digits from.

Two readers of the state (`state_reader`):
- "mlp" (shipped): an MLP over the whole flattened latent grid and the previous
  estimate. Five ops per frame, so it runs beside every engine step for a few percent
  of a B=1 step. Trained on noisier latents it also reads dreamed frames; it sees the
  grid as one flat vector, so frames dissolved far from the data read worse than with
  the encoder. The encoder transformer then runs only for language, over the frame's
  tokens plus one token holding the new estimate.
- "encoder": the encoder transformer over the frame's tokens plus one token of the
  previous estimate, its first output token read by a linear state head (~60 small
  ops per frame; the first shipped reasoner).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from worldsim.model.tokenizer import Block, group_tokens
from worldsim.reasoner_text import VOCAB


@dataclass
class ReasonerConfig:
    latent_dim: int = 16
    """Channels of a tokenizer latent token."""
    grid: int = 8
    """Tokenizer grid side (tokens per frame = grid^2)."""
    group: int = 1
    """Read group x group squares of latent tokens as one token: 2 reads 16 tokens instead
    of 64, a quarter of the FLOPs of the read that runs beside every engine step."""
    feature_dim: int = 10
    """State features (scene quantities with angles as cos/sin)."""
    width: int = 128
    layers: int = 3
    """Encoder layers (frame tokens + previous-estimate token)."""
    lm_layers: int = 2
    """Language-model layers over [frame prefix; question + answer characters]."""
    heads: int = 4
    text_len: int = 128
    """Longest question + answer in characters."""
    state_reader: str = "encoder"
    """"mlp" (few ops per frame) or "encoder"; see the module docstring. Configs written
    before the MLP reader have no such key and are encoder readers."""
    reader_width: int = 512
    """Hidden width of the MLP reader."""
    judgments: int = 0
    """Task judgments the language model reads (the task's `TaskText.judgments` of the
    estimate: a prefix token each, and their mean on every character; MLP reader only);
    0: none, as in reasoners trained before them."""
    judgment_chars: bool = False
    """Also write each judgment's whole steps into the prefix as characters (sign or space,
    two digits), which the language model copies into an answer: given MuJoCo's true state
    the step embeddings alone got the digits of "how far" right on ~70% of frames."""


JUDGMENT_STEPS = 64
"""Judgments are rounded to whole steps within +-this for their step embedding."""
JUDGMENT_PERIODS = (1, 2, 4, 8, 16, 32, 64)
"""Periods, in answer steps, of the sines a judgment is also embedded with."""


def judgment_features(j: torch.Tensor) -> torch.Tensor:
    """(B, J) judgments -> (B, J, 2 * periods + 2): sines of the periods, the offset from
    the nearest whole step, and the value over the longest period."""
    periods = torch.tensor(JUDGMENT_PERIODS, dtype=torch.float32, device=j.device)
    j = j.float()[..., None]
    phase = j * (2 * torch.pi / periods)
    return torch.cat([phase.sin(), phase.cos(), j - j.round(), j / periods[-1]], -1)


JUDGMENT_CHARS = 3
"""Characters a judgment is written in: sign (space when not negative) and two digits."""


def judgment_chars(judgments: list[float]) -> list[int]:
    """Character ids of judgments rounded to whole steps (within +-99), each right-aligned
    in JUDGMENT_CHARS characters: [3.4, -12.0] -> '  3-12'."""
    text = "".join(f"{max(-99, min(99, round(v))):{JUDGMENT_CHARS}d}" for v in judgments)
    return [VOCAB.index(c) for c in text]


STATE_READERS = ("mlp", "encoder")


class Reasoner(nn.Module):
    def __init__(self, cfg: ReasonerConfig) -> None:
        super().__init__()
        if cfg.state_reader not in STATE_READERS:
            raise ValueError(f"state_reader={cfg.state_reader!r}: expected one of {STATE_READERS}")
        if cfg.judgments and cfg.state_reader != "mlp":
            raise ValueError(f"judgments={cfg.judgments} need state_reader='mlp'")
        if cfg.judgment_chars and not cfg.judgments:
            raise ValueError("judgment_chars=True writes the judgments: it needs judgments > 0")
        self.cfg = cfg
        d, n, f = cfg.width, (cfg.grid // cfg.group) ** 2, cfg.feature_dim
        self.token_in = nn.Linear(cfg.latent_dim * cfg.group**2, d)
        self.prev_in = nn.Linear(f + 1, d)  # the estimate token: previous (encoder) or new (mlp)
        self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.enc = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.layers))
        self.enc_norm = nn.LayerNorm(d)
        if cfg.state_reader == "mlp":
            w = cfg.reader_width
            self.reader = nn.Sequential(
                nn.Linear(cfg.grid**2 * cfg.latent_dim + f + 1, w),
                nn.GELU(),
                nn.Linear(w, w),
                nn.GELU(),
                nn.Linear(w, f),
            )
        else:
            self.state_out = nn.Linear(d, f)
        if cfg.judgments:
            # a judgment's token: its whole steps, one embedding per judgment and step (the
            # answer's number), plus its features (where it lies between steps)
            self.judgment_step = nn.Embedding(cfg.judgments * (2 * JUDGMENT_STEPS + 1), d)
            self.judgment_in = nn.Linear(2 * len(JUDGMENT_PERIODS) + 2, d)
            if cfg.judgment_chars:
                self.judgment_char_pos = nn.Parameter(
                    torch.randn(1, JUDGMENT_CHARS * cfg.judgments, d) * 0.02
                )
        self.char = nn.Embedding(len(VOCAB), d)
        self.text_pos = nn.Parameter(torch.randn(1, cfg.text_len, d) * 0.02)
        self.lm = nn.ModuleList(Block(d, cfg.heads) for _ in range(cfg.lm_layers))
        self.lm_norm = nn.LayerNorm(d)
        self.lm_out = nn.Linear(d, len(VOCAB))
        # feature normalisation, fitted on the training data and saved with the weights
        self.register_buffer("feat_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feat_std", torch.ones(cfg.feature_dim))

    def _estimate_in(self, est: torch.Tensor | None, b: int, device) -> torch.Tensor:
        """An estimate (B, F) in features, or None, as normalised features + a 'known' flag."""
        if est is None:
            return torch.zeros(b, self.cfg.feature_dim + 1, device=device)
        flag = torch.ones(b, 1, device=device)
        return torch.cat([(est - self.feat_mean) / self.feat_std, flag], 1)

    def forward(
        self,
        z: torch.Tensor,
        text: torch.Tensor | None = None,
        estimate: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training pass over chains of frames z (B, T, N, C), read as at run time (the
        first frame with no previous estimate, each next with the one before): the
        estimates (B, T, F) and, given text (Q, L), the next-character logits of the first
        Q chains' last frames, the language model reading `estimate` (Q, F) where given
        (see `encode`). One call per step, as DistributedDataParallel expects."""
        prev = before = h = None
        states = []
        for t in range(z.shape[1]):
            before = prev
            if t == z.shape[1] - 1 and text is not None and self.cfg.state_reader == "encoder":
                # the last read is also the prefix; encode refuses an estimate here
                h, prev = self.encode(z[:, t], prev, estimate)
            else:
                prev = self.read(z[:, t], prev)
            states.append(prev)
        if text is None:
            return torch.stack(states, 1), None
        q = text.shape[0]
        if h is None:
            h, _ = self.encode(z[:q, -1], None if before is None else before[:q], estimate)
        return torch.stack(states, 1), self.text_logits(h[:q], text)

    def read(self, z: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        """The state estimate (B, F) in features of frames z (B, N, C) given the previous
        estimate prev (B, F) (None: none). What the engine runs on every frame."""
        if self.cfg.state_reader == "encoder":
            return self.encode(z, prev)[1]
        x = torch.cat([z.flatten(1), self._estimate_in(prev, z.shape[0], z.device)], 1)
        return self.reader(x).float() * self.feat_std + self.feat_mean

    def encode(
        self,
        z: torch.Tensor,
        prev: torch.Tensor | None = None,
        estimate: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, N, C) latents; prev (B, F) previous estimate in features (None: none);
        estimate (B, F): the state the language model reads instead of this frame's own
        reading, e.g. a state filter's tracked one (MLP reader only).

        Returns the encoded frame (B, 1 + judgment tokens + tokens, d), which is the language
        model's prefix, and the state estimate (B, F) in features."""
        b = z.shape[0]
        mlp = self.cfg.state_reader == "mlp"
        if estimate is not None and not mlp:
            raise ValueError("an estimate for the language model needs state_reader='mlp'")
        state = self.read(z, prev) if mlp else None
        # the reader learns from the state loss alone; the language model reads its estimate
        if mlp:
            lm_state = state.detach() if estimate is None else estimate.float()
        est = self._estimate_in(lm_state if mlp else prev, b, z.device)
        tokens = self.token_in(group_tokens(z, self.cfg.grid, self.cfg.group))
        x = torch.cat([self.prev_in(est)[:, None], tokens], 1) + self.pos
        if self.cfg.judgments:
            x = torch.cat([x[:, :1], *self._judgment_tokens(lm_state), x[:, 1:]], 1)
        for blk in self.enc:
            x = blk(x)
        h = self.enc_norm(x)
        if not mlp:
            state = self.state_out(h[:, 0]).float() * self.feat_std + self.feat_mean
        return h, state

    def _judgment_tokens(self, state: torch.Tensor) -> list[torch.Tensor]:
        """Prefix tokens of the task's judgments of a state estimate (B, F features): one
        (B, J, d) per judgment and, with judgment_chars, (B, 3J, d) of their characters."""
        text = self._forms()
        values = text.layout.from_features(state.detach().float().cpu().numpy())
        j = torch.from_numpy(text.judgments(values)).to(state.device)
        if j.shape[1] != self.cfg.judgments:
            raise ValueError(
                f"this reasoner reads {self.cfg.judgments} judgments, its task gives "
                f"{j.shape[1]} ({text.judgment_names()})"
            )
        steps = j.round().clamp(-JUDGMENT_STEPS, JUDGMENT_STEPS).long() + JUDGMENT_STEPS
        kind = torch.arange(j.shape[1], device=j.device) * (2 * JUDGMENT_STEPS + 1)
        tokens = [self.judgment_in(judgment_features(j)) + self.judgment_step(steps + kind)]
        if self.cfg.judgment_chars:
            chars = torch.tensor([judgment_chars(row) for row in j.tolist()], device=j.device)
            tokens.append(self.char(chars) + self.judgment_char_pos)
        return tokens

    def text_logits(self, h: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """h (B, P, d) encoded frame; text (B, L) character ids -> next-character logits.
        With judgments, every character also reads them directly (their encoded tokens'
        mean is added to its embedding): through attention alone a language model trained
        before them kept answering from the frame."""
        p, length = h.shape[1], text.shape[1]
        chars = self.char(text) + self.text_pos[:, :length]
        if self.cfg.judgments:
            chars = chars + h[:, 1 : 1 + self.cfg.judgments].mean(1, keepdim=True)
        x = torch.cat([h, chars], 1)
        i = torch.arange(p + length, device=h.device)
        mask = (i[None, :] < p) | (i[:, None] >= i[None, :])  # prefix: all; text: causal
        for blk in self.lm:
            x = blk(x, mask)
        return self.lm_out(self.lm_norm(x[:, p:]))

    @torch.no_grad()
    def generate(
        self, h: torch.Tensor, prompts: list[list[int]], max_chars: int | None = None
    ) -> list[str]:
        """Greedy answers (until '\\n') for one prompt per frame in h; prompts of equal
        length are decoded together. By default an answer may fill the rest of text_len
        (a scene description runs to ~80 characters)."""
        out: list[str] = [""] * len(prompts)
        by_len: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_len.setdefault(len(p), []).append(i)
        for length, idx in by_len.items():
            ids = torch.tensor([prompts[i] for i in idx], device=h.device)
            done = torch.zeros(len(idx), dtype=torch.bool, device=h.device)
            room = self.cfg.text_len - length
            for _ in range(room if max_chars is None else min(max_chars, room)):
                nxt = self.text_logits(h[idx], ids)[:, -1].argmax(-1)
                nxt = torch.where(done, torch.zeros_like(nxt), nxt)
                ids = torch.cat([ids, nxt[:, None]], 1)
                done |= nxt == 0
                if done.all():
                    break
            for row, i in enumerate(idx):
                answer = ids[row, length:].tolist()
                answer = answer[: answer.index(0)] if 0 in answer else answer
                out[i] = "".join(VOCAB[c] for c in answer)
        return out

    # -- the task-facing API (needs the task's question forms: `load_reasoner` sets them) ---
    def _forms(self):
        if getattr(self, "task_text", None) is None:
            raise ValueError(
                "this reasoner has no task question forms: load it with load_reasoner or set "
                "its task_text"
            )
        return self.task_text

    @torch.no_grad()
    def ask(
        self,
        z: torch.Tensor,
        question: str,
        prev: torch.Tensor | None = None,
        estimate: torch.Tensor | None = None,
    ) -> list[str]:
        """Answers for frames z (B, N, C); a question outside the task's forms gets
        'cannot answer' without running the language model. estimate (B, F features):
        the tracked state to answer from (see `encode`); the shipped language model was
        trained on the state filter's (`layout.to_features(tracker.values(...))`) with
        the positions read by the checkpoint's position reader
        (`worldsim.train.reasoner.tracked_features`)."""
        from worldsim.reasoner_text import CANNOT_ANSWER, encode

        form = self._forms().match_question(question)
        if form is None:
            return [CANNOT_ANSWER] * z.shape[0]
        h, _ = self.encode(z, prev, estimate)
        return self.generate(h, [encode(form + " ")] * z.shape[0])

    def describe(
        self,
        z: torch.Tensor,
        prev: torch.Tensor | None = None,
        estimate: torch.Tensor | None = None,
    ) -> list[str]:
        return self.ask(z, "describe the scene.", prev, estimate)

    @torch.no_grad()
    def judge(self, z: torch.Tensor, prev: torch.Tensor | None = None) -> list[dict]:
        """Per frame: the state estimate by quantity, distance to goal (cm) and success."""
        text = self._forms()
        state = text.layout.from_features(self.read(z, prev).cpu().numpy())
        out = []
        for s in state:
            item = {"state": text.layout.named(s)}
            if text.pair is not None:
                item |= {"distance_to_goal_cm": text.distance_cm(s), "success": text.success(s)}
            out.append(item)
        return out

    def config_dict(self) -> dict:
        return asdict(self.cfg)


def build_reasoner(config: dict) -> Reasoner:
    known = ReasonerConfig.__dataclass_fields__
    return Reasoner(ReasonerConfig(**{k: v for k, v in config.items() if k in known}))


def qa_loss(logits: torch.Tensor, text: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting each answer character (and the final '\\n'), averaged
    over each answer's characters and then over answers: a 'yes' weighs as much as a scene
    description, as in exact match (per character, the digits of a distance and the word
    of 'is the arm moving?' were a few percent of the loss)."""
    pred, target, m = logits[:, :-1], text[:, 1:], answer_mask[:, 1:].float()
    ce = F.cross_entropy(pred.transpose(1, 2), target, reduction="none")
    return ((ce * m).sum(1) / m.sum(1).clamp(min=1)).mean()
