"""Settings of PixLoc's training recipe (``loop.train``), each with the reason for its default, and the
names of what a run writes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


CHECKPOINT_NAME = "checkpoint_last.tar"  # the resumable checkpoint inside the output folder
METRICS_NAME = "metrics.jsonl"  # one JSON record per logging interval
DAMPING_AXES = ("tx", "ty", "tz", "rx", "ry", "rz")
# (condition, (fx, fy, cx, cy) pixel-centre, cam_from_world (4, 4), width, height, noise_seed)
#   -> (rgb (H, W, 3) uint8, depth (H, W) float32 camera z in metres, inf where nothing is hit)
RenderFn = Callable[[str, tuple[float, float, float, float], np.ndarray, int, int, "int | None"],
                    tuple[np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclass
class AugmentConfig:
    """Photometric augmentation (colour jitter), applied with numpy on uint8 RGB images."""

    query_prob: float = 0.8  # probability of jittering the query image
    reference_prob: float = 0.2  # probability of jittering the reference image
    brightness: float = 0.3  # gain drawn from [1 - b, 1 + b]
    contrast: float = 0.3  # contrast factor drawn from [1 - c, 1 + c] (around the mean grey)
    saturation: float = 0.3  # saturation factor drawn from [1 - s, 1 + s]
    hue_deg: float = 8.0  # chroma rotation drawn from [-h, h] degrees
    white_balance: float = 0.08  # per-channel gains drawn from [1 - w, 1 + w]
    gamma: float = 0.25  # gamma = exp(u), u drawn from [-g, g]
    noise_sigma: float = 0.02  # Gaussian noise std (fraction of full scale), drawn from [0, sigma]


@dataclass
class PairConfig:
    """How training pairs are drawn from a map (and, optionally, a renderer)."""

    image_size: tuple[int, int] | None = None  # (width, height) of the network input; None: the map images' own size
    num_points: int = 512  # 3D points per pair (random subset when there are more)
    min_points: int = 48  # pairs with fewer usable points are redrawn
    min_covisible: int = 50  # a covisible pair shares at least this many 3D points
    min_track_length: int = 2  # only 3D points seen by at least this many images
    max_init_error_px: float = 100.0  # pairs whose initial pose is off by more (mean reprojection, input px) are redrawn
    border_px: float = 8.0  # points must project at least this far inside both images (input px)
    init_noise_m: float = 0.0  # Gaussian noise (std per axis, camera frame) added to the initial pose's centre
    init_noise_deg: float = 0.0  # Gaussian noise (std per axis) of the initial pose's rotation
    # With a renderer (synthetic world) only:
    virtual_fraction: float = 0.5  # share of pairs whose query is rendered at a random offset from the reference
    condition_fraction: float = 0.8  # share of covisible pairs whose query is re-rendered in another condition
    # conditions queries may be rendered in: every one the synthetic world has (the paper trains on
    # all seasons of its training slices)
    conditions: tuple[str, ...] = ("summer", "overcast", "autumn", "snow", "dusk")
    max_forward_m: float = 2.0  # virtual query: shift along the viewing direction, uniform in [-m, m]
    max_lateral_m: float = 1.0  # virtual query: sideways shift, uniform in [-m, m]
    vertical_sigma_m: float = 0.05  # virtual query: vertical shift std (cars keep their height)
    max_yaw_deg: float = 6.0  # virtual query: rotation about the camera's vertical axis, uniform in [-d, d]
    pitch_sigma_deg: float = 1.0  # virtual query: pitch std
    roll_sigma_deg: float = 0.5  # virtual query: roll std (cars stay upright)
    depth_tolerance: float = 0.03  # virtual/re-rendered query: a point is visible when z <= depth (1 + tol) + 0.1 m
    depth_points: str | None = None  # virtual pairs: 3D points lifted with the map image's rendered depth
    #   instead of the SfM points it observes: "keypoints" (its SIFT keypoints, what SfM points are made
    #   from, but all of them) or "textured" (pixels drawn with probability growing with the gradient)
    map_condition: str = "summer"  # the condition the map images show (to render their depth)
    max_point_depth_m: float = 100.0  # depth points farther than this are not used
    image_cache: int = 512  # decoded map images kept in memory


@dataclass
class LossConfig:
    """The paper's loss (see the module docstring)."""

    robust_scale_px: float = 2.0  # c of rho(e) = c (sqrt(1 + (e / c)^2) - 1)
    clamp_px: float = 50.0  # per-level error clamp
    success_thresh: float = 3.0  # a level succeeded when its error is below this x its stride
    min_points: int = 10  # pairs with fewer points valid under both the true and the initial pose count 0
    # Auxiliary dense contrastive term (not in the paper; for training from random initialisation,
    # where the LM's gradient alone lets the features collapse): per level, the reference feature
    # of each point must pick its own true projection in the query among the other points'
    # projections (InfoNCE, temperature below); pairs of points closer than ``contrastive_min_sep``
    # level pixels are not used as negatives. 0 disables it (the paper's recipe).
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 0.07
    contrastive_min_sep: float = 2.0


@dataclass
class TrainConfig:
    """The training loop."""

    steps: int = 2000  # optimizer steps in total (a resumed run continues up to this)
    max_minutes: float | None = None  # stop (and checkpoint) after this much wall time in this run
    batch_size: int = 4  # pairs per optimizer step (their gradients are averaged; one pair's is mostly noise)
    lr: float = 1e-4  # Adam step of the network
    # Adam step of the confidence heads (``extractor.uncertainty``), their own parameter group: at the
    # network's 1e-4 they moved by random-walk amounts only in 1200 steps (issue 27).
    head_lr: float = 1e-3
    damping_lr_scale: float = 100.0  # the damping thetas learn this many times faster (reference: 100)
    weight_decay: float = 0.0  # AdamW decoupled weight decay of the network (not of the damping)
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    lm_iterations: tuple[int, int, int] = (5, 5, 5)  # LM iterations per level during training, finest first
    # Level-pixel border inside which projections are invalid: None = the model's engine profile's
    # (reference: the checkpoint's pad; native: ``localizer.level_pads``' rule), as at inference; or one value.
    lm_pad: float | None = None
    freeze_encoder_blocks: int = 0  # keep the first K VGG blocks fixed (cheaper steps on a CPU)
    # The first steps train the features with the contrastive term alone (no LM, no pose loss):
    # from random initialisation the pose loss otherwise teaches the confidences to switch off
    # levels whose random-feature steps only hurt, before the features are any good.
    contrastive_only_steps: int = 0
    reference_grad: bool = True  # backpropagate into the reference image's features too (the paper does)
    freeze_batchnorm: bool = True  # BatchNorm uses (and keeps) its running statistics while training: with
    #   one or two images per step batch statistics are noisy and differ from what inference uses
    # Before the first step of a new run (never on resume): "estimate" sets BatchNorm's running
    # statistics to the true ones over ``batchnorm_images`` map images (``batchnorm``), "estimate_preserve"
    # the same with the affine parameters adjusted so the network's function is unchanged (for trained
    # weights), "keep" leaves them.
    batchnorm_init: str = "estimate"
    batchnorm_images: int = 32
    # Before the first step of a new run: re-initialise the confidence heads ("reference" or "small",
    # ``checkpoint.init_confidence_heads``) or keep them (None).
    reset_heads: str | None = None
    # CPU bf16 autocast of the network (``NetworkConfig.bf16_on_cpu``): "auto" = where the processor has
    # bf16 units (AVX512-BF16 or AMX; 2.3x faster steps on the CPU box, BENCHMARKS.md "Training"), "on", "off".
    cpu_bf16: str = "auto"
    log_every: int = 10  # steps between log lines
    checkpoint_every: int = 100  # steps between checkpoints (also written at the end)
    val_every: int = 0  # steps between validations (0: never); a validation also records the confidence spread
    seed: int = 0  # seed of the pair sampling and the random initialisation
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda"
    num_threads: int | None = None  # torch CPU threads (None: torch's default); 1 is fastest on a busy CPU,
    #   where the LM's many small ops lose more to thread synchronisation than they gain
    amp: bool = True  # on CUDA: fp16 autocast for the network and a GradScaler
    loss: LossConfig = field(default_factory=LossConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


BATCHNORM_INITS = ("estimate", "estimate_preserve", "keep")
CPU_BF16_MODES = ("auto", "on", "off")
