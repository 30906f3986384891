"""Structured schemas for the Hydra config groups.

Each YAML file in a group starts from its schema (`defaults: [base_<group>, _self_]`),
so a typo in a key or a wrong type fails at compose time instead of deep in a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


def within(default: Any, low: float | None, high: float | None = None) -> Any:
    """A field whose value must lie in [low, high] (None: unbounded); checked when a command's
    config is composed (`worldsim.cli.check_ranges`), so a bad value is refused by name
    before any work instead of failing, hanging or training NaN later."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass
class CameraConfig:
    """A free MuJoCo camera (mjCAMERA_FREE) that frames the workspace."""

    lookat: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    """Point the camera looks at, world coordinates (m)."""
    distance: float = 1.0
    """Distance from the look-at point (m)."""
    azimuth: float = 90.0
    """Azimuth (deg)."""
    elevation: float = -90.0
    """Elevation (deg); -90 looks straight down."""


@dataclass
class GeomOverride:
    """A render-only change to one geom; the task config says why it is physics-neutral."""

    geom: str = MISSING
    """Geom name in the task's MJCF."""
    size: list[float] | None = None
    """New `geom_size` (first entries replaced)."""
    rgba: list[float] | None = None
    """New colour."""


@dataclass
class KeyAction:
    """What holding one key does in the play window."""

    index: int = MISSING
    """Action dimension the key drives."""
    value: float = MISSING
    """Action value while the key is held (released keys give 0)."""


@dataclass
class SceneQuantity:
    """One physical quantity of the scene the reasoner estimates from frames."""

    array: str = MISSING
    """Stored array it is read from (qpos, qvel or a state body)."""
    index: list[int] = MISSING
    """Columns of that array."""
    unit: str = MISSING
    """m | m/s | rad | rad/s (rad wraps: estimated as cos/sin)."""


@dataclass
class RewardDistance:
    """One distance term of a reward: weight * |a - b| between two scene positions."""

    between: list[str] = MISSING
    """Two scene quantity names (unit m, the same number of coordinates)."""
    weight: float = MISSING
    """Subtracted per metre of distance."""


@dataclass
class TaskReward:
    """reward = alive - distance_weight * |a - b| (success_pair) - sum of `distances`'
    weight * |a - b| - control_weight * |action|^2."""

    alive: float = 0.0
    distance_weight: float = 0.0
    """Weight of the success_pair's distance."""
    distances: list[RewardDistance] = field(default_factory=list)
    """Further distance terms (Pusher-v5: object to goal, tip to object)."""
    control_weight: float = 0.0


@dataclass
class TaskTermination:
    """The MuJoCo task ends an episode when |quantity| exceeds `beyond` in any column
    (InvertedPendulum-v5: the pole past 0.2 rad) or the state is not finite."""

    quantity: str = MISSING
    """Scene quantity name."""
    beyond: float = MISSING
    """Limit on its absolute value, in its unit."""


@dataclass
class TaskQuestion:
    """One question form about a single scene quantity, for tasks whose scene the generic
    forms (distance to a target, joint angles in 10-degree steps) do not fit.

    kind=side: which side of zero the value is and how far, in `step`s of degrees (rad
    quantities) or cm (m): "leaning right, 4 degrees", or `near` when it rounds to zero.
    kind=above: "yes" when |value| exceeds `above` (in the quantity's unit), else "no"."""

    question: str = MISSING
    """The question as asked, lower case, ending in '?' (e.g. `where is the cart?`)."""
    quantity: str = MISSING
    """Scene quantity name."""
    index: int = within(0, 0, None)
    """Column of the quantity."""
    kind: str = "side"
    """side | above."""
    step: float = within(1.0, 0, None)
    """side: answer step in degrees (rad) or cm (m)."""
    near: str = ""
    """side: the answer when the value rounds to zero steps (e.g. `upright`)."""
    positive: str = ""
    """side: words for a positive value as drawn (e.g. `leaning right`)."""
    negative: str = ""
    """side: words for a negative value."""
    above: float = within(0.0, 0, None)
    """above: the threshold on |value|."""
    describe: str = ""
    """The scene description's sentence: side: with `{answer}` (e.g. `the pole is
    {answer}.`); above: said only when the answer is yes (e.g. `the pole has fallen.`)."""


@dataclass
class TaskConfig:
    """One MuJoCo grounding task: how to build, frame, label and drive it."""

    name: str = MISSING
    """Short name used in paths and ids (e.g. `reacher`)."""
    env_id: str = MISSING
    """Gymnasium id of the MuJoCo task (e.g. `Reacher-v5`)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for `gymnasium.make`."""
    image_size: int = within(64, 16, 1024)
    """Square frame size in pixels."""
    max_episode_steps: int = within(MISSING, 1, None)
    """Episode length used for collection and for the dream envs."""
    camera: CameraConfig = field(default_factory=CameraConfig)
    """Camera that frames the robot's workspace."""
    render_overrides: list[GeomOverride] = field(default_factory=list)
    """Render-only visual changes (geoms without contacts; inertia fixed at compile time)."""
    render_shadows: bool = True
    """Draw the MJCF lights' shadows and the floor's reflections. Pusher's (the only task with
    a light that casts them) made a 64x64 frame cost 51 ms instead of 9 in software GL, ~6x
    its data generation; they only add the arm's moving shadow to what the model must draw."""
    segmentation: dict[str, list[str]] = field(default_factory=dict)
    """Segmentation class name -> MJCF body names whose subtrees belong to it."""
    state_bodies: dict[str, str] = field(default_factory=dict)
    """Extra state: name -> body whose world position (xyz) is stored each frame."""
    success_distance: float | None = within(None, 0, None)
    """Success when the distance between `success_pair` bodies is below this (m)."""
    success_pair: list[str] = field(default_factory=list)
    """Two state_bodies names whose distance defines success."""
    success_min_steps: int = within(0, 0, None)
    """Success by survival: an episode lasting this many steps succeeds (balance tasks)."""
    expert: str = MISSING
    """Name of the scripted expert in `worldsim.datasets.policies`."""
    keyboard: dict[str, KeyAction] = field(default_factory=dict)
    """Key name (pygame) -> action it drives in the play window."""
    scene: dict[str, SceneQuantity] = field(default_factory=dict)
    """The scene state (the world model's and the reasoner's): quantity name -> where the
    grounding store holds it."""
    frame_readout: list[str] = field(default_factory=list)
    """Scene quantities the position reader reads off a decoded frame (angles as cos, sin),
    the check that a dreamed frame shows what the model's state says; empty: the bodies'
    world positions (`Quantity.drawn_position`)."""
    observation: list[dict[str, Any]] = field(default_factory=list)
    """The MuJoCo env's own observation built from scene quantities, term by term:
    {cos: q}, {sin: q}, {value: q} or {diff: [a, b]} (empty: the scene vector as is)."""
    proprioception: list[dict[str, Any]] = field(default_factory=list)
    """What the robot's own encoders give (joint angles and velocities), terms as in
    `observation`: the `proprio` part of a pixels+proprio observation. Never the goal: a
    policy reading it must find the target in the pixels."""
    reward: TaskReward | None = None
    """The MuJoCo task's reward formula on scene state (the envs' reward_source=state)."""
    termination: TaskTermination | None = None
    """The MuJoCo task's termination rule on scene state (none: episodes only truncate)."""
    record_past_termination: int = within(0, 0, None)
    """Grounding data go on this many frames after the task terminates (the episode then
    ends, terminated): a world model learns what follows a failure (InvertedPendulum's
    pole falling), which episodes cut at the failure never show. 0: end at termination."""
    expert_travel: float = within(0.0, 0, 1)
    """Fraction of the scripted expert's grounding episodes in which it also carries the
    robot across its workspace (InvertedPendulum: the cart along the rail, pole up; see
    datasets/policies.py). 0: the expert only does the task."""
    transition_horizon: int = within(48, 1, None)
    """Frames of the state transition's training rollouts for this task (`train dynamics`
    when `transition.horizon` is not given). Reacher, 6,000 steps: 32 gave fingertip errors
    of 0.20 / 0.78 / 1.04 cm at h16 / h50 / h64 of held-out episodes, 48 gave 0.37 / 0.62 /
    0.62 cm. Only episodes of horizon + 1 frames teach it: InvertedPendulum's falls last ~24
    frames, and at 48 its pole never fell by itself; at 16 (or 8, 4) it falls as MuJoCo's
    does, and 16 is the most exact (experiments/transition_horizon.py)."""
    free_rollout_policy: str = "keys"
    """What drives `eval fidelity`'s long free rollout: keys (held keys, as at the
    keyboard) or a policy spec acting on the model's own state (expert@0.3 for a task whose
    episodes end when it fails: held keys topple InvertedPendulum's pole within ~20 frames,
    past anything the data holds)."""
    questions: list[TaskQuestion] = field(default_factory=list)
    """Question forms of this scene for the reasoner, in place of the generic joint forms
    (what angle is joint i, is the arm moving); the distance forms of `success_pair` stay."""


@dataclass
class DataConfig:
    """How grounding episodes are collected."""

    policy: str = "mix"
    """Collection policy: random | noise | keys | expert | mix | agent."""
    episodes: int = within(100, 1, None)
    """Number of episodes to collect."""
    workers: int = within(2, 0, 256)
    """Worker processes that step and render MuJoCo (one writer)."""
    seed: int = within(0, 0, None)
    """Base seed; episode i uses seed + i, so the same seed gives the same dataset."""
    noise_fraction: float = within(0.3, 0, 1)
    """mix: fraction of episodes driven by correlated noise instead of the noisy expert."""
    keys_fraction: float = within(0.2, 0, 1)
    """mix: fraction of episodes driven by held full-scale keys (as from the keyboard)."""
    expert_noise: float = within(0.2, 0, None)
    """Std of Gaussian action noise added to the expert (fraction of the action range)."""
    expert_state_noise: float = within(0.0, 0, None)
    """Std (rad; x30 in rad/s for velocities) of the persistent errors in the joint readings
    the expert acts on: closed-loop control through an imperfect state estimate."""
    expert_targets: float = within(0.0, 0, 1)
    """Pusher: fraction of expert episodes (policy=expert, or mix's noisy expert) that push
    the object toward a point drawn 10-30 cm from it instead of the goal, so the data holds
    the object moving in every direction."""
    noise_theta: float = within(0.15, 0, 1)
    """Ornstein-Uhlenbeck mean reversion per step for the correlated-noise policy."""
    noise_sigma: float = within(0.3, 0, None)
    """Ornstein-Uhlenbeck noise scale (fraction of the action range)."""
    agents: list[str] = field(default_factory=list)
    """agent: policy files (`worldsim policy train` output, obs=state) run on the task's own
    observation; each episode draws one. Grounding from a dream-trained policy's behaviour."""
    agent_noise: float = within(0.1, 0, None)
    """agent: Gaussian action noise, std drawn per episode from [0, agent_noise] (fraction
    of the action range)."""
    chunk_frames: int = within(256, 1, None)
    """Rows per zarr chunk along time."""


@dataclass
class GenerateConfig:
    """`worldsim data generate`."""

    task: TaskConfig = MISSING
    data: DataConfig = MISSING
    out: str | None = None
    """Output store path; default `data/<task>.zarr`."""
    resume: bool = False
    """Continue an interrupted store up to `data.episodes` episodes."""
    append: bool = False
    """Continue an existing store up to `data.episodes` episodes (the total) with other data
    settings, e.g. `data.policy=agent`; the store's generator record logs each range with
    its settings. The task settings must match."""


@dataclass
class PreviewConfig:
    """`worldsim data preview`."""

    out: str = "preview.mp4"
    """Output video path."""
    episodes: int = within(4, 1, 64)
    """Episodes shown side by side (a grid)."""
    scale: int = within(4, 1, 16)
    """Pixel upscaling factor."""
    max_frames: int = within(200, 1, None)
    """Longest clip length."""
    seg: bool = True
    """Show each episode's segmentation beside its frames."""


@dataclass
class TokenizerModelConfig:
    """Patch autoencoder (worldsim.model.tokenizer)."""

    patch: int = within(8, 1, None)
    """Pixels per token side (64 / 8 = an 8x8 token grid)."""
    width: int = within(192, 1, None)
    """Transformer width."""
    layers: int = within(2, 1, None)
    """Transformer layers on each side of the bottleneck."""
    heads: int = within(4, 1, None)
    """Attention heads."""
    latent_dim: int = within(16, 1, None)
    """Channels per latent token."""


@dataclass
class TrainConfig:
    """Optimisation settings shared by the training loops."""

    steps: int = within(20000, 1, None)
    """Optimizer steps in total (a resumed run continues to this count)."""
    batch_size: int = within(64, 1, None)
    """Global batch (split across torchrun ranks)."""
    lr: float = within(1e-3, 0, None)
    """Peak learning rate (linear warmup, cosine decay to 10%)."""
    warmup: int = within(500, 0, None)
    """Warmup steps."""
    weight_decay: float = within(0.01, 0, None)
    """AdamW weight decay."""
    grad_clip: float = within(1.0, 0, None)
    """Gradient-norm clip."""
    fg_weight: float = within(20.0, 0, None)
    """Loss weight of foreground pixels (robot, object, goal; dilated 1 px) vs background."""
    latent_noise: float = within(0.1, 0, None)
    """Tokenizer: max std of noise added to latents before decoding."""
    val_every: int = within(20, 2, None)
    """Every val_every-th episode is held out from training."""
    log_every: int = within(50, 1, None)
    """Steps between CSV log rows."""
    eval_every: int = within(1000, 1, None)
    """Steps between held-out evaluations (and sample images)."""
    ckpt_every: int = within(500, 1, None)
    """Steps between checkpoints."""
    dtype: str = "auto"
    """auto | bf16 | fp32 (auto: bf16 on GPU or CPUs with native bf16, else fp32)."""
    device: str = "cpu"
    """cpu | cuda."""
    seed: int = within(0, 0, None)
    """Seeds initialisation and the step-indexed batch sampler."""
    init_from: str | None = None
    """Start a new run from these weights (a checkpoint of the same kind and config)."""


@dataclass
class TrainTokenizerConfig:
    """`worldsim train tokenizer`."""

    task: TaskConfig = MISSING
    model: TokenizerModelConfig = MISSING
    train: TrainConfig = MISSING
    data_path: str = MISSING
    """Episode store to train on."""
    run_dir: str = MISSING
    """Checkpoints, logs and samples; an existing run is resumed."""


@dataclass
class DecoderInputsConfig:
    """What the decoder learns to draw from (`worldsim train decoder`): shares of each
    batch; the rest are noised true latents."""

    rows: int = within(40000, 1, None)
    """Training rows whose generated latents are computed once at the start."""
    generated: float = within(0.5, 0, 1)
    """The dynamics model's own one-step predictions of the row."""
    lagged: float = within(0.4, 0, 1)
    """Of the generated: predicted from context 1-6 frames older (a bigger jump)."""
    other_time: float = within(0.0, 0, 1)
    """Latents of another moment of the same episode (the arm elsewhere)."""
    other_episode: float = within(0.1, 0, 1)
    """Latents of any frame of any episode (the target elsewhere too)."""
    no_state: float = within(0.15, 0, 1)
    """Decoded without a state from noised true latents (a real frame's round trip)."""
    tau_ctx: float = within(0.9, 0, 1)
    """Flow time of the context the predictions are made from (the engine's tau_ctx)."""


@dataclass
class TrainDecoderConfig:
    """`worldsim train decoder`."""

    task: TaskConfig = MISSING
    train: TrainConfig = MISSING
    inputs: DecoderInputsConfig = field(default_factory=DecoderInputsConfig)
    data_path: str = MISSING
    """Episode store (frames and segmentation) to train on."""
    latents: str | None = None
    """Its encoded training set (safetensors), as `train dynamics` wrote it."""
    tokenizer: str = MISSING
    """The tokenizer whose decoder is fine-tuned (its encoder stays)."""
    dynamics: str = MISSING
    """The dynamics model trained on that tokenizer's latents."""
    run_dir: str = MISSING
    """Checkpoints, logs and sample videos; an existing run is resumed. Its
    tokenizer.safetensors replaces the source tokenizer in a checkpoint folder."""


@dataclass
class DynamicsModelConfig:
    """Block-causal diffusion transformer (worldsim.model.dynamics)."""

    group: int = within(2, 1, None)
    """Group group x group tokenizer tokens into one dynamics token (8x8 -> 16 tokens)."""
    width: int = within(192, 1, None)
    """Transformer width."""
    layers: int = within(4, 1, None)
    """Transformer layers."""
    heads: int = within(4, 1, None)
    """Attention heads."""
    window: int = within(1, 0, 64)
    """W: past frames each frame attends to (ring KV cache size; windows hold W + 1); 0:
    each frame from its own state alone."""
    state_width: int = within(256, 1, None)
    """Hidden width of the learned state transition's MLPs."""
    state_layers: int = within(3, 1, None)
    """Hidden layers of the learned state transition's MLPs."""
    fourier_bands: int = within(6, 0, 16)
    """Octaves of sines the state enters the transformer with (positional precision)."""


@dataclass
class TransitionTrainConfig:
    """Training of the learned state transition (rolled out alone from true states)."""

    horizon: int | None = within(None, 1, None)
    """Frames each training rollout runs (backpropagated through all of them); None: the
    task's `transition_horizon`."""
    batch_size: int = within(256, 1, None)
    """Rollouts per step (split across torchrun ranks like train.batch_size)."""
    weight: float = within(1.0, 0, None)
    """Weight of its loss beside the frame loss."""
    only: bool = False
    """Train the transition alone from `train.init_from` (a dynamics checkpoint): the frame
    loss is skipped and its weights stay bit for bit (its loss never reaches the
    transition's weights, so this is what a joint run does to the transition)."""


@dataclass
class FlowConfig:
    """Flow-matching noise levels (tau: 0 = noise, 1 = clean) for diffusion forcing."""

    ctx_prob: float = within(0.5, 0, 1)
    """Per frame: probability of a near-clean context level instead of U(0, 1)."""
    ctx_min: float = within(0.8, 0, 1)
    """Near-clean levels are drawn from U(ctx_min, 1)."""
    tau0_prob: float = within(0.5, 0, 1)
    """Per window: probability that its last frame is pure noise (tau 0), where the engine's
    one Euler step starts every frame (otherwise few training frames are in that regime:
    the others get U(0, 1) or near-clean times)."""
    reward_weight: float = within(0.1, 0, None)
    """Weight of the reward (MSE) and termination (BCE) head losses."""
    rollout_frames: int = within(2, 0, None)
    """Own-rollout training: the last frames of a window the model generates itself."""
    rollout_prob: float = within(0.0, 0, 1)
    """Share of windows whose inputs are the model's own generations (0 disables)."""
    rollout_tau_ctx: float = within(0.9, 0, 1)
    """Flow time of the context during those generations (the engine's tau_ctx)."""
    pool: int = within(16, 0, None)
    """Windows of each batch taken from persistent dreams, each rolled on by one frame per
    step along a training episode (contexts drifted for up to an episode, the states the
    episode's own), so the model learns to draw what the state says over a context that
    has drifted; 0 disables."""
    priority: float = within(0.0, 0, 1)
    """Share of each batch's windows drawn in proportion to the model's own error on them
    (its one-step generation of the window's last frame, the engine's way, foreground
    weighted; measured over every training window when the process starts, so a resumed
    run re-measures it), the rest uniformly; 0: all uniform."""
    jump_prob: float = within(0.0, 0, 1)
    """Share of the regular windows whose context frames come from a random place in the
    same episode (jump windows): the new frame differs from its context as much as under
    a fast-spinning held key (up to ~100 degrees per frame), so what moved must be drawn
    from the state and what stayed (the target) from the context; 0 disables."""


@dataclass
class TrainDynamicsConfig:
    """`worldsim train dynamics`."""

    task: TaskConfig = MISSING
    model: DynamicsModelConfig = MISSING
    train: TrainConfig = MISSING
    flow: FlowConfig = field(default_factory=FlowConfig)
    transition: TransitionTrainConfig = field(default_factory=TransitionTrainConfig)
    data_path: str = MISSING
    """Episode store to train on."""
    latents: str | None = None
    """Encoded training set (safetensors): read when it matches, else written. Training
    from it needs neither the store nor zarr/MuJoCo."""
    tokenizer: str = MISSING
    """Frozen tokenizer checkpoint (safetensors)."""
    run_dir: str = MISSING
    """Checkpoints, logs and samples; an existing run is resumed."""


@dataclass
class ReasonerModelConfig:
    """Scene reasoner (worldsim.model.reasoner)."""

    width: int = within(128, 1, None)
    """Transformer width."""
    group: int = within(1, 1, None)
    """Read group x group squares of latent tokens as one token (2: 16 tokens instead of 64,
    a quarter of the FLOPs per frame)."""
    layers: int = within(3, 1, None)
    """Encoder layers over a frame's tokens and the previous estimate."""
    lm_layers: int = within(2, 1, None)
    """Language-model layers."""
    heads: int = within(4, 1, None)
    """Attention heads."""
    text_len: int = within(128, 1, None)
    """Longest question + answer in characters."""
    state_reader: str = "mlp"
    """mlp: the state from an MLP over the flattened latent grid and the previous estimate
    (five ops per frame, a few percent of a B=1 step; shipped); encoder: from the
    transformer encoder (~60 small ops per frame, the first shipped reader)."""
    reader_width: int = within(512, 1, None)
    """Hidden width of the MLP reader."""
    judgments: bool = True
    """The language model also reads the task's judgments of the state estimate (distance
    and bearing to the goal, joint angles, fastest joint; `TaskText.judgments`) as tokens,
    each in its answer's step (state_reader=mlp only: the encoder reader has no estimate
    before it encodes the frame)."""
    judgment_chars: bool = True
    """With judgments: also write their whole steps into the prefix as characters, which the
    language model copies into its answers (reasoners trained before them have none)."""


@dataclass
class TrainReasonerConfig:
    """`worldsim train reasoner`."""

    task: TaskConfig = MISSING
    model: ReasonerModelConfig = MISSING
    train: TrainConfig = MISSING
    qa_weight: float = within(0.5, 0, None)
    """Weight of the question-answering loss beside the state loss (0: the state reader
    alone; with state_reader=mlp the encoder and language model are left as they are, so
    the reader can be trained on for longer in minutes)."""
    state_weight: float = within(1.0, 0, None)
    """Weight of the state loss (0: the language model alone; with state_reader=mlp the
    reader is left as it is, so what reads the state for the engine does not change)."""
    qa_batch: int = within(48, 0, None)
    """Chains of each batch whose last frame also trains the language model; the state
    reader learns from all of them (0: every chain)."""
    lm_state_filter: str | None = None
    """A state_filter.json: the language model reads the tracked state (the reader's
    estimates over the episode so far, joints filtered with the actions, static quantities
    averaged) instead of the frame's own reading. Needs state_weight=0, so the reader
    stays as the filter was fitted to it."""
    lm_position_reader: str | None = None
    """A position_reader.safetensors (with lm_state_filter): its readings of the decoded
    frames replace the reasoner's positions in the tracked state the language model reads,
    as in `worldsim eval reasoner` when the checkpoint folder holds one."""
    chain: int = within(3, 1, None)
    """Consecutive frames per sample: each estimate feeds the next as its previous one."""
    data_path: str = MISSING
    """Episode store to train on (its MuJoCo state is the target)."""
    latents: str | None = None
    """Encoded frames of data_path (see TrainDynamicsConfig.latents)."""
    tokenizer: str = MISSING
    """Frozen tokenizer checkpoint whose latents the reasoner reads."""
    run_dir: str = MISSING
    """Checkpoints and logs; an existing run is resumed."""


@dataclass
class PositionReaderModelConfig:
    """CNN over decoded frames (worldsim.model.position_reader)."""

    channels: int = within(64, 1, None)
    """Channels of the stride-2 stages (64x64 frame to 8x8)."""
    trunk: int = within(96, 1, None)
    """Channels of the two 3x3 convolutions at 8x8."""
    hidden: int = within(256, 1, None)
    """Width of the MLP head."""


@dataclass
class TrainPositionReaderConfig:
    """`worldsim train position_reader`."""

    task: TaskConfig = MISSING
    model: PositionReaderModelConfig = MISSING
    train: TrainConfig = MISSING
    frames: int = within(0, 0, None)
    """Training frames to decode and learn from, drawn at random (0: every training row)."""
    with_state: float = within(0.5, 0, 1)
    """For a tokenizer whose decoder draws the state: the fraction of training frames
    decoded with their true state (as the engine draws a dream's frames); the rest without
    one (as a real frame's round trip is drawn, for question answering)."""
    data_path: str = MISSING
    """Episode store to train on (its MuJoCo positions are the target)."""
    latents: str | None = None
    """Encoded frames of data_path (see TrainDynamicsConfig.latents)."""
    tokenizer: str = MISSING
    """Frozen tokenizer checkpoint whose decoding the reader reads."""
    run_dir: str = MISSING
    """Checkpoints and logs; an existing run is resumed."""


@dataclass
class TrainStateFilterConfig:
    """`worldsim train state_filter`: the joint filter beside a checkpoint's reasoner."""

    task: TaskConfig = MISSING
    data_path: str = MISSING
    """Grounding store whose transitions fit the joints' motion model."""
    heldout_path: str = MISSING
    """Held-out store: the reasoner's reading noise (even episodes), the check (odd ones)."""
    checkpoint: str | None = None
    """Folder with tokenizer and reasoner weights; default: the shipped one. Without a
    reasoner only the motion model is fitted (the linear baseline's; no reading noise)."""
    episodes: int = within(64, 1, None)
    """Held-out episodes to read at most."""
    process_scale: float = within(10.0, 0, None)
    """Process noise std as a multiple of the motion model's residual on MuJoCo data: the
    dream moves less exactly than MuJoCo, and the readings must be able to correct it."""
    out: str = MISSING
    """state_filter.json to write (and state_filter_report.json beside it); copy it into
    the checkpoint folder to use it."""


@dataclass
class EngineSchema:
    """FrameEngine sampling (worldsim.engine.EngineConfig)."""

    steps: int = within(1, 1, 64)
    """Euler steps of the flow per frame."""
    tau_ctx: float = within(0.9, 0, 1)
    """Flow time of context frames in the cache (slightly noised against drift)."""
    seed: int = within(0, 0, None)
    """Seed of the sampling noise."""
    reasoner_process: bool = False
    """Read frames in a child process while the step runs on one thread fewer (for an
    encoder-reader reasoner at B=1: ~10% of a step instead of 22-28% on the thread; the
    MLP reader costs ~6% on the thread and ~15% here)."""
    compile: bool = False
    """torch.compile the transformer pass and the decoder: some seconds of compiling per
    batch size, then B=1 steps ~30% faster on a 2-core CPU (bench/engine.py)."""
    graph: bool = False
    """CUDA: every step one replay of a captured CUDA graph (per batch size and decode flag);
    elsewhere the same path runs eagerly. Not with compile."""
    dtype: str = "float32"
    """float32 | bfloat16 (autocast for the transformer and decoder; for GPUs: bf16 matmuls
    ran ~10x slower than fp32 on an AVX2-only CPU)."""
    noise: str = "per_world"
    """per_world (a world's dream independent of its batch) | batched (one draw per step)."""
    threads: int = within(0, 0, 1024)
    """torch intra-op threads on CPU; 0: the cores other processes leave idle at start,
    unless OMP_NUM_THREADS or torch.set_num_threads chose a count (worldsim.threads)."""


@dataclass
class DreamConfig:
    """`worldsim dream`: the same actions in MuJoCo and in the world model, side by side."""

    task: TaskConfig = MISSING
    engine: EngineSchema = MISSING
    steps: int = within(200, 1, None)
    """Frames to generate after the context."""
    context: int = within(4, 1, None)
    """Real MuJoCo frames that start the dream."""
    policy: str = "expert"
    """random | expert | keyboard-script (a key script through the task's keyboard map)."""
    script: str | None = None
    """Key script file for policy=keyboard-script (lines 'KEY[+KEY] FRAMES'); default: each key."""
    checkpoint: str | None = None
    """Folder with tokenizer.safetensors and dynamics.safetensors; default: shipped weights."""
    out: str = "dream.mp4"
    """Output video: MuJoCo | dream | |difference| (or the dream alone with twin=false)."""
    twin: bool = True
    """Run MuJoCo beside the dream with the same actions."""
    reground: bool = False
    """Watch the reasoner's state estimate; on a physically impossible one, restart the
    dream from the twin's last real frames (needs twin and a reasoner checkpoint)."""
    scale: int = within(4, 1, 16)
    """Pixel upscaling of the video."""
    seed: int = within(0, 0, None)
    """MuJoCo reset seed and policy seed."""
    device: str = "cpu"
    """cpu | cuda."""


@dataclass
class PlayConfig:
    """`worldsim play`: drive the dream from the keyboard in a window."""

    task: TaskConfig = MISSING
    engine: EngineSchema = MISSING
    checkpoint: str | None = None
    """Folder with tokenizer + dynamics; default: shipped weights."""
    twin: bool = False
    """Show MuJoCo beside the dream under the same actions (G re-grounds from it)."""
    policy: str | None = None
    """random | expert (MuJoCo's state: needs twin=true) | a policy file or expert@NOISE
    (acting on the dream's frame or the world model's state): drives after M, keys
    override it."""
    scale: int = within(6, 1, 16)
    """Pixel upscaling of the 64x64 frames."""
    fps: float = within(30.0, 1, 240)
    """Frame pacing; a key change starts the next frame at once."""
    record: str | None = None
    """Record the window to this video from the start (F5 stops; again starts -2, -3, ...)."""
    screenshot: str | None = None
    """Save the window as PNG when the session ends."""
    headless: bool = False
    """No window (SDL's dummy video driver): for tests, servers and benchmarks."""
    script: str | None = None
    """Key script (lines 'KEY[+KEY] FRAMES', '-' for none) played as key events; the
    session ends with it."""
    frames: int = within(0, 0, None)
    """Stop after this many frames (0: at quit or the end of the key script)."""
    caption: bool = True
    """Show the scene's caption and state (the world model's own state) in the HUD."""
    context: int = within(4, 1, None)
    """Real MuJoCo frames that start the dream (after R too)."""
    seed: int = within(0, 0, None)
    """MuJoCo reset seed of the first start (R adds one)."""
    device: str = "cpu"
    """cpu | cuda."""


@dataclass
class FidelityConfig:
    """`worldsim eval fidelity`."""

    task: TaskConfig = MISSING
    engine: EngineSchema = MISSING
    data_path: str = MISSING
    """Held-out store (never trained on); its episodes must hold context + horizon frames."""
    checkpoint: str | None = None
    """Folder with tokenizer + dynamics; default: shipped weights."""
    context: int = within(4, 1, None)
    """Real frames before generation starts."""
    horizon: int = within(64, 1, None)
    """Generated frames compared with MuJoCo's."""
    episodes: int = within(64, 1, None)
    """Held-out episodes (one window each) at most."""
    val_every: int | None = within(None, 1, None)
    """None: every episode of data_path; N: only the training split's held-out (every N-th)."""
    long_frames: int = within(10000, 0, None)
    """Length of the stability rollout (0 to skip)."""
    long_policy: str | None = None
    """What drives the stability rollout: keys (held keys, as at the keyboard) or a policy
    spec acting on the model's own state each frame (e.g. expert@0.3); default: the task's
    `free_rollout_policy`."""
    out_dir: str = MISSING
    """fidelity.json and fidelity.png go here."""
    device: str = "cpu"
    """cpu | cuda."""


@dataclass
class EvalTokenizerConfig:
    """`worldsim eval tokenizer`: reconstruction PSNR on held-out episodes."""

    task: TaskConfig = MISSING
    data_path: str = MISSING
    """Store whose held-out episodes (every val_every-th) are used."""
    checkpoint: str | None = None
    """tokenizer.safetensors to measure; default: the shipped one."""
    val_every: int = within(20, 1, None)
    """Held-out split, as in training."""
    episodes: int = within(50, 1, None)
    """Held-out episodes at most."""


@dataclass
class EvalReasonerConfig:
    """`worldsim eval reasoner`: state, QA and success judgments on real and dreamed frames."""

    task: TaskConfig = MISSING
    engine: EngineSchema = MISSING
    data_path: str = MISSING
    """Held-out store (never trained on)."""
    checkpoint: str | None = None
    """Folder with tokenizer, dynamics and reasoner weights; default: shipped weights."""
    episodes: int = within(64, 1, None)
    """Episodes of the store to read at most."""
    qa_frames: int = within(200, 0, None)
    """Frames asked every question form."""
    context: int = within(4, 1, None)
    """Real frames before the dream starts."""
    horizon: int = within(64, 1, None)
    """Dreamed frames whose state is compared with MuJoCo's."""
    out_dir: str = MISSING
    """reasoner.json and reasoner.png go here."""
    device: str = "cpu"
    """cpu | cuda."""


@dataclass
class AlgoConfig:
    """A Stable-Baselines3 algorithm and its constructor arguments (configs/algo/)."""

    name: str = MISSING
    """ppo | sac."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Passed to the SB3 constructor (n_steps, batch_size, learning_rate, ...)."""


@dataclass
class PolicyWorldConfig:
    """The task and the dream a `worldsim policy` command runs policies in."""

    task: TaskConfig = MISSING
    context: int = within(4, 1, None)
    """Real MuJoCo frames each dream episode starts from (a MuJoCo evaluation takes the
    same zero-action steps first)."""
    reward_source: str = "state"
    """Dream reward: the task's formula on the world model's own state (state, as
    `gym.make` gives it) or the dynamics model's reward head (head)."""
    checkpoint: str | None = None
    """World-model folder; default: shipped weights."""
    device: str = "cpu"
    """cpu | cuda (world model and policy)."""


@dataclass
class PolicyTrainConfig(PolicyWorldConfig):
    """`worldsim policy train`: SB3 in the dream (batched worlds) or in MuJoCo."""

    algo: AlgoConfig = MISSING
    where: str = "dream"
    """dream | mujoco (the baseline, same algorithm and step budget) | linear (the
    simulator made of the fitted linear joint model alone: the bar a world model must
    clear; state observations only)."""
    steps: int = within(100000, 1, None)
    """Environment steps in total (all envs together)."""
    obs: str = "state"
    """state (the task's observation; the world model's own state in the dream) | pixels
    (the 64x64 camera frame) | pixels+proprio (the frame and the arm's encoders, the task's
    `proprioception`: the target only in the pixels)."""
    n_envs: int = within(64, 1, 4096)
    """Dream worlds stepped in one forward pass, or MuJoCo envs."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the policy and value networks."""
    seed: int = within(0, 0, None)
    """Seeds the algorithm, the networks and the env resets."""
    save_every: int = within(10000, 0, None)
    """Keep a ladder checkpoint every this many steps (0: only the final policy)."""
    out_dir: str = MISSING
    """Run folder: policy.*, ladder/, logs/ (CSV + TensorBoard), config.yaml."""


@dataclass
class PolicyEvalConfig(PolicyWorldConfig):
    """`worldsim policy eval`: one policy in MuJoCo and the dream from matched resets."""

    policy: str = MISSING
    """A policy file (PATH.json + PATH.safetensors), random, expert or expert@NOISE."""
    where: str = "both"
    """mujoco | dream | both."""
    episodes: int = within(16, 1, None)
    """Episodes per place and mode; episode i uses MuJoCo reset seed seed + i."""
    seed: int = within(1000, 0, None)
    """First reset seed (kept away from training seeds)."""
    deterministic: bool = True
    """Evaluate the policy's mean action."""
    stochastic: bool = True
    """Evaluate sampled actions too."""
    obs: str | None = None
    """Observation mode; default: the policy file's (state for scripted policies)."""
    batch: int = within(32, 1, 4096)
    """Dream episodes run at once."""
    videos: int = within(2, 0, None)
    """First episodes written as MuJoCo | dream | difference videos."""
    out_dir: str | None = None
    """Run folder; default: runs/policy_eval/<timestamp>-<policy>."""


@dataclass
class PolicyCompareConfig(PolicyWorldConfig):
    """`worldsim policy compare`: does the dream rank a ladder of policies as MuJoCo does?"""

    deterministic: bool = True
    """Run every policy's mean action (true) or sample its actions (false)."""
    ladder: str | None = None
    """Folder of policy files (searched recursively) added to the scripted rungs."""
    scripted: list[str] = field(
        default_factory=lambda: [
            "random",
            "zero",
            "expert",
            "expert@0.3",
            "expert@0.6",
            "expert@1",
            "expert@2",
        ]
    )
    """Built-in rungs of known quality."""
    baselines: list[str] = field(default_factory=lambda: ["linear"])
    """Simulators ranked beside the dream: linear (the fitted linear joint model alone;
    state-observation policies only)."""
    episodes: int = within(32, 1, None)
    """Deterministic episodes per policy and place."""
    seed: int = within(1000, 0, None)
    """First reset seed."""
    batch: int = within(32, 1, 4096)
    """Dream episodes run at once."""
    out_dir: str | None = None
    """Run folder; default: runs/policy_compare/<timestamp>-<task>."""


@dataclass
class PolicyTransferConfig(PolicyWorldConfig):
    """`worldsim policy transfer`: dream-trained vs MuJoCo-trained, same budget, in MuJoCo."""

    algo: AlgoConfig = MISSING
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Training seeds; each trains one policy in the dream and one in MuJoCo."""
    steps: int = within(100000, 1, None)
    """Environment-step budget of every training run."""
    n_envs: int = within(64, 1, 4096)
    """Dream worlds / MuJoCo envs per training run."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layers of the policy and value networks."""
    obs: str = "state"
    """state | pixels | pixels+proprio (as `policy train`'s obs)."""
    episodes: int = within(32, 1, None)
    """Deterministic MuJoCo episodes per policy."""
    eval_seed: int = within(1000, 0, None)
    """First MuJoCo reset seed of the evaluation."""
    baselines: list[str] = field(default_factory=lambda: ["linear", "blind"])
    """Baselines trained beside the dream, same algorithm and budget, as rows: linear (the
    simulator made of the fitted linear joint model alone; state observations only, for
    pixel policies its row says why it cannot train), blind (MuJoCo with the arm's encoders
    only, never the target: the ratio normalised by its return asks whether the target was
    found)."""
    save_every: int = within(0, 0, None)
    """Keep a ladder checkpoint of every training run every this many steps (0: only the
    final policies), e.g. for `worldsim policy compare`."""
    out_dir: str = MISSING
    """transfer.json, transfer.md and one training run folder per (place, seed)."""


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(group="task", name="base_task", node=TaskConfig)
    cs.store(group="data", name="base_data", node=DataConfig)
    cs.store(name="base_generate", node=GenerateConfig)
    cs.store(name="base_preview", node=PreviewConfig)
    cs.store(group="model", name="base_tokenizer", node=TokenizerModelConfig)
    cs.store(group="train", name="base_train", node=TrainConfig)
    cs.store(name="base_train_tokenizer", node=TrainTokenizerConfig)
    cs.store(name="base_train_state_filter", node=TrainStateFilterConfig)
    cs.store(group="model", name="base_dynamics", node=DynamicsModelConfig)
    cs.store(name="base_train_dynamics", node=TrainDynamicsConfig)
    cs.store(name="base_train_decoder", node=TrainDecoderConfig)
    cs.store(group="engine", name="base_engine", node=EngineSchema)
    cs.store(group="model", name="base_reasoner", node=ReasonerModelConfig)
    cs.store(name="base_train_reasoner", node=TrainReasonerConfig)
    cs.store(group="model", name="base_position_reader", node=PositionReaderModelConfig)
    cs.store(name="base_train_position_reader", node=TrainPositionReaderConfig)
    cs.store(name="base_eval_reasoner", node=EvalReasonerConfig)
    cs.store(name="base_dream", node=DreamConfig)
    cs.store(name="base_play", node=PlayConfig)
    cs.store(name="base_eval_fidelity", node=FidelityConfig)
    cs.store(name="base_eval_tokenizer", node=EvalTokenizerConfig)
    cs.store(group="algo", name="base_algo", node=AlgoConfig)
    cs.store(name="base_policy_train", node=PolicyTrainConfig)
    cs.store(name="base_policy_eval", node=PolicyEvalConfig)
    cs.store(name="base_policy_compare", node=PolicyCompareConfig)
    cs.store(name="base_policy_transfer", node=PolicyTransferConfig)
