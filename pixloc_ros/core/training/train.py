"""The PixLoc training recipe: learn features, confidences and damping end to end from poses.

One training example is a pair of images of a mapped place with known poses: a reference image
(the map) and a query. The query is localised from the reference's pose with the full
coarse-to-fine Levenberg-Marquardt of ``core/engine/lm/optimizer.py`` (differentiable: no detach inside a
level), using the reference's features sampled at the projections of the pair's 3D points. The
loss compares where the 3D points land in the query under the estimated and the true pose
(DESIGN.md "Training"):

- per level l: ``err_l = mean_points rho(|p(T_l P) - p(T_gt P)|)`` in network-input pixels,
  ``rho(e) = c (sqrt(1 + (e / c)^2) - 1)`` (Barron's alpha = 1, scale c = 2 px: quadratic below
  c, ~e above), clamped at 50 px (a clamped level gives no gradient: the pair failed there);
- levels run coarse (stride 16) -> fine (1); the coarse term always counts, a finer one only
  when the coarser level ended within ``3 px x its stride`` (no gradient from hopeless levels);
- the total is the sum over levels divided by the number of levels.
Gradients reach the query and reference features and confidences through the residuals, the
Jacobians and the weights, and the learned damping through the damped solve. As in the
reference, the pose is detached between levels. The damping thetas learn with a larger step
(x100 by default) than the network.

Pairs (``PairSampler``), from a COLMAP model and its images:
- "covisible": two registered images sharing at least ``min_covisible`` 3D points; the points are
  the shared ones; the initial pose is the reference's pose (plus optional noise);
- with a renderer (synthetic world, ``render_fn``): the query of a covisible pair can be
  re-rendered at its pose in another appearance condition, and "virtual" pairs render the query
  at a random car-like offset from the reference (forward/lateral shift and yaw, very little
  vertical motion, pitch or roll), keeping the reference's 3D points that the rendered depth
  shows are visible. Colour jitter applies to both kinds.

This module never imports the data layer: the renderer comes in as a function.
"""
from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.maps.colmap_io import SfmModel
from pixloc_ros.core.geometry.pose import Pose, pose_error
from pixloc_ros.core.engine.interpolation import BilinearSampler
from pixloc_ros.core.engine.localizer import level_pads
from pixloc_ros.core.geometry.metrics import CMU_THRESHOLDS
from pixloc_ros.core.engine.network import STRIDES, PixLocModel
from pixloc_ros.core.engine.lm.config import LMConfig
from pixloc_ros.core.engine.lm.optimizer import optimize_level

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
    conditions: tuple[str, ...] = ("summer", "overcast", "autumn")  # conditions queries may be rendered in
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
    batch_size: int = 1  # pairs per optimizer step (their gradients are averaged)
    lr: float = 1e-4  # Adam step of the network
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
    log_every: int = 10  # steps between log lines
    checkpoint_every: int = 100  # steps between checkpoints (also written at the end)
    val_every: int = 0  # steps between validations (0: never)
    seed: int = 0  # seed of the pair sampling and the random initialisation
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda"
    num_threads: int | None = None  # torch CPU threads (None: torch's default); 1 is fastest on a busy CPU,
    #   where the LM's many small ops lose more to thread synchronisation than they gain
    amp: bool = True  # on CUDA: fp16 autocast for the network and a GradScaler
    loss: LossConfig = field(default_factory=LossConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# ---------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainingPair:
    """One training example. Images and cameras are at the network-input size."""

    reference_image: np.ndarray  # (H, W, 3) uint8 RGB
    query_image: np.ndarray  # (H', W', 3) uint8 RGB
    reference_camera: Camera  # float64, pixel-centre origin
    query_camera: Camera
    reference_from_world: Pose  # float64, batch shape ()
    query_from_world: Pose  # true pose of the query, float64, ()
    init: Pose  # initial cam_from_world of the query, float64, ()
    xyz: np.ndarray  # (N, 3) float64 world points, metres
    kind: str  # "covisible" or "virtual"
    condition: str | None  # condition the query was rendered in (None: the map image itself)
    names: tuple[str, str]  # (reference image, query image or "virtual:<reference>")


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Random brightness, contrast, saturation, hue, white balance, gamma and noise.

    (H, W, 3) uint8 RGB -> same shape and dtype. Hand-written with numpy (torchvision is not a
    dependency); hue is a rotation of the chroma plane of YIQ, which keeps the luminance.
    """
    x = rgb.astype(np.float32) / 255.0
    x = x * rng.uniform(1 - config.brightness, 1 + config.brightness)
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - config.contrast, 1 + config.contrast) + mean
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = luma[..., None] + (x - luma[..., None]) * rng.uniform(1 - config.saturation, 1 + config.saturation)
    if config.hue_deg > 0:
        a = math.radians(rng.uniform(-config.hue_deg, config.hue_deg))
        to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        x = x @ (np.linalg.inv(to_yiq) @ rot @ to_yiq).T.astype(np.float32)
    x = x * rng.uniform(1 - config.white_balance, 1 + config.white_balance, 3).astype(np.float32)
    x = np.clip(x, 0.0, 1.0) ** math.exp(rng.uniform(-config.gamma, config.gamma))
    if config.noise_sigma > 0:
        x = x + rng.normal(0.0, rng.uniform(0, config.noise_sigma), x.shape).astype(np.float32)
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _pose_np(pose: Pose) -> np.ndarray:
    return pose.to_4x4_numpy()


def car_like_offset(rng: np.random.Generator, config: PairConfig) -> np.ndarray:
    """A random ``query_from_reference`` (4, 4) for a camera on a car (x right, y down, z forward).

    Shift: forward and lateral uniform, vertical small; rotation: yaw (about the camera y axis)
    uniform, pitch and roll small. This is the motion between two cars driving the same street.
    """
    centre = np.array([rng.uniform(-config.max_lateral_m, config.max_lateral_m),
                       rng.normal(0.0, config.vertical_sigma_m),
                       rng.uniform(-config.max_forward_m, config.max_forward_m)])
    yaw = math.radians(rng.uniform(-config.max_yaw_deg, config.max_yaw_deg))
    pitch = math.radians(rng.normal(0.0, config.pitch_sigma_deg))
    roll = math.radians(rng.normal(0.0, config.roll_sigma_deg))
    R = (Pose.exp(torch.tensor([0, 0, 0, pitch, 0, 0], dtype=torch.float64)).R
         @ Pose.exp(torch.tensor([0, 0, 0, 0, yaw, 0], dtype=torch.float64)).R
         @ Pose.exp(torch.tensor([0, 0, 0, 0, 0, roll], dtype=torch.float64)).R).numpy()
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ centre  # the query centre sits at ``centre`` in the reference camera frame
    return T


def _noisy(pose: Pose, rng: np.random.Generator, sigma_m: float, sigma_deg: float) -> Pose:
    """Left-perturb ``cam_from_world`` by Gaussian rotation and camera-centre noise (camera frame)."""
    if sigma_m <= 0 and sigma_deg <= 0:
        return pose
    w = torch.from_numpy(rng.normal(0.0, math.radians(sigma_deg), 3) if sigma_deg > 0 else np.zeros(3))
    c = torch.from_numpy(rng.normal(0.0, sigma_m, 3) if sigma_m > 0 else np.zeros(3))
    R = Pose.exp(torch.cat([torch.zeros(3, dtype=torch.float64), w])).R
    delta = Pose(R, -(R @ c))  # moves the centre by c (camera frame), rotates by w about it
    return delta @ pose


class PairSampler:
    """Draws :class:`TrainingPair` s from a COLMAP model, its images and optionally a renderer.

    The model's world frame must be the renderer's world frame (true for ``pixloc-ros synth``).
    Cameras are converted from COLMAP's pixel convention; images are resized to
    ``config.image_size`` (camera scaled with them).
    """

    def __init__(self, sfm: SfmModel, image_dir: str | Path, config: PairConfig | None = None,
                 augment: AugmentConfig | None = None, render_fn: RenderFn | None = None):
        self.sfm = sfm
        self.image_dir = Path(image_dir)
        self.config = config or PairConfig()
        self.augment = augment or AugmentConfig()
        self.render_fn = render_fn
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._depth_cache: dict[int, tuple] = {}  # image id -> (depth, candidate pixels (K, 2), their probabilities or None)
        cfg = self.config
        if render_fn is None and cfg.virtual_fraction >= 1.0:
            raise ValueError("virtual_fraction 1 needs a renderer (--synth-world)")
        self.image_ids = sorted(sfm.images)
        if not self.image_ids:
            raise ValueError("the SfM model has no registered images")
        keep = sfm.track_lengths >= cfg.min_track_length
        row_of_id = {int(pid): i for i, pid in enumerate(sfm.point_ids) if keep[i]}
        self._rows: dict[int, np.ndarray] = {}
        for iid in self.image_ids:
            ids = sfm.images[iid].point3D_ids
            rows = np.array([row_of_id.get(int(p), -1) for p in ids[ids >= 0]], np.int64)
            self._rows[iid] = np.unique(rows[rows >= 0])
        self.pairs = self._covisible_pairs()
        if not self.pairs and (render_fn is None or cfg.virtual_fraction <= 0):
            raise ValueError(f"no image pair of the SfM model shares >= {cfg.min_covisible} 3D points "
                             f"(track length >= {cfg.min_track_length}); lower --min-covisible")
        self.cameras: dict[int, Camera] = {}
        for cid, cam in sfm.cameras.items():
            camera = Camera.from_colmap(cam.model, cam.width, cam.height, cam.params)
            if cfg.image_size is not None:
                w, h = cfg.image_size
                camera = camera.scale((w / cam.width, h / cam.height))
            self.cameras[cid] = camera

    def _covisible_pairs(self) -> list[tuple[int, int]]:
        """Ordered (reference, query) image-id pairs sharing >= min_covisible points."""
        counts: dict[tuple[int, int], int] = {}
        images_of_row: dict[int, list[int]] = {}
        for iid, rows in self._rows.items():
            for r in rows.tolist():
                images_of_row.setdefault(r, []).append(iid)
        for ims in images_of_row.values():
            for a_i, a in enumerate(ims):
                for b in ims[a_i + 1:]:
                    key = (a, b) if a < b else (b, a)
                    counts[key] = counts.get(key, 0) + 1
        pairs = []
        for (a, b), n in sorted(counts.items()):
            if n >= self.config.min_covisible:
                pairs += [(a, b), (b, a)]
        return pairs

    # ---- images ------------------------------------------------------------------------
    def _map_image(self, image_id: int) -> np.ndarray:
        """The registered image as RGB uint8 at the network-input size (cached)."""
        if image_id in self._cache:
            self._cache.move_to_end(image_id)
            return self._cache[image_id]
        import cv2

        image = self.sfm.images[image_id]
        path = self.image_dir / image.name
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read map image {path}")
        cam = self.sfm.cameras[image.camera_id]
        if bgr.shape[:2] != (cam.height, cam.width):
            raise ValueError(f"{path} is {bgr.shape[1]}x{bgr.shape[0]} but its COLMAP camera says "
                             f"{cam.width}x{cam.height}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if self.config.image_size is not None and tuple(self.config.image_size) != (cam.width, cam.height):
            rgb = cv2.resize(rgb, tuple(self.config.image_size), interpolation=cv2.INTER_AREA)
        self._cache[image_id] = rgb
        while len(self._cache) > self.config.image_cache:
            self._cache.popitem(last=False)
        return rgb

    def _render(self, condition: str, camera: Camera, cam_from_world: np.ndarray, seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
        if np.any(camera.dist.numpy() != 0):
            raise ValueError("rendering a query needs a camera without distortion")
        w, h, fx, fy, cx, cy = (float(v) for v in camera.data[:6])
        return self.render_fn(condition, (fx, fy, cx, cy), cam_from_world, int(round(w)), int(round(h)), seed)

    def _pose(self, image_id: int) -> Pose:
        im = self.sfm.images[image_id]
        return Pose.from_numpy(im.R, im.t)

    # ---- sampling ----------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, conditions: Sequence[str] | None = None,
               max_tries: int = 200) -> TrainingPair:
        """Draw one pair; ``conditions`` overrides ``config.conditions`` (e.g. for validation).

        Redraws pairs with too few points or too large an initial error; RuntimeError after
        ``max_tries`` failed draws (the message says why the last one failed).
        """
        why = "no attempt"
        for _ in range(max_tries):
            pair, why = self._try_sample(rng, tuple(conditions or self.config.conditions))
            if pair is not None:
                return pair
        raise RuntimeError(f"no usable training pair in {max_tries} draws (last: {why})")

    def _try_sample(self, rng: np.random.Generator, conditions: tuple[str, ...]
                    ) -> tuple[TrainingPair | None, str]:
        cfg = self.config
        can_render = self.render_fn is not None
        virtual = can_render and (not self.pairs or rng.random() < cfg.virtual_fraction)
        if virtual:
            ref_id = int(self.image_ids[rng.integers(len(self.image_ids))])
            query_id = ref_id
        else:
            ref_id, query_id = self.pairs[int(rng.integers(len(self.pairs)))]
        ref_im, query_im = self.sfm.images[ref_id], self.sfm.images[query_id]
        ref_cam, query_cam = self.cameras[ref_im.camera_id], self.cameras[query_im.camera_id]
        ref_pose = self._pose(ref_id)
        seed = int(rng.integers(1 << 31))
        if virtual:
            query_pose = Pose.from_4x4(car_like_offset(rng, cfg) @ _pose_np(ref_pose))
            condition = str(conditions[int(rng.integers(len(conditions)))])
            query_image, depth = self._render(condition, query_cam, _pose_np(query_pose), seed)
            rows = self._rows[ref_id]
            names = (ref_im.name, f"virtual:{ref_im.name}")
            if cfg.depth_points is not None:
                rows = None
        else:
            query_pose = self._pose(query_id)
            rows = np.intersect1d(self._rows[ref_id], self._rows[query_id])
            depth, condition = None, None
            if can_render and rng.random() < cfg.condition_fraction:
                condition = str(conditions[int(rng.integers(len(conditions)))])
                query_image, depth = self._render(condition, query_cam, _pose_np(query_pose), seed)
            else:
                query_image = self._map_image(query_id)
            names = (ref_im.name, query_im.name)
        xyz = self.sfm.xyz[rows] if rows is not None else self._depth_points(ref_id, ref_cam, ref_pose, rng)
        keep = self._visible(xyz, ref_pose, ref_cam) & self._visible(xyz, query_pose, query_cam, depth)
        xyz = xyz[keep]
        if len(xyz) < cfg.min_points:
            return None, f"{len(xyz)} usable points < min_points {cfg.min_points} ({names[0]} -> {names[1]})"
        if len(xyz) > cfg.num_points:
            xyz = xyz[rng.choice(len(xyz), cfg.num_points, replace=False)]
        init = _noisy(ref_pose, rng, cfg.init_noise_m, cfg.init_noise_deg)
        err = initial_reprojection_error(xyz, init, query_pose, query_cam)
        if not err <= cfg.max_init_error_px:
            return None, f"initial error {err:.1f} px > {cfg.max_init_error_px} ({names[0]} -> {names[1]})"
        ref_image = self._map_image(ref_id)
        aug = self.augment
        if rng.random() < aug.reference_prob:
            ref_image = color_jitter(ref_image, rng, aug)
        if rng.random() < aug.query_prob:
            query_image = color_jitter(query_image, rng, aug)
        return TrainingPair(ref_image, query_image, ref_cam, query_cam, ref_pose, query_pose, init, xyz,
                            "virtual" if virtual else "covisible", condition, names), "ok"

    def _depth_points(self, image_id: int, camera: Camera, cam_from_world: Pose, rng: np.random.Generator
                      ) -> np.ndarray:
        """(M, 3) world points, M <= 2 num_points, at pixels of the map image lifted with its rendered
        depth (``config.depth_points`` says which pixels); sky, far and depth-edge pixels are skipped."""
        import cv2

        cfg = self.config
        if image_id not in self._depth_cache:
            _, depth = self._render(cfg.map_condition, camera, _pose_np(cam_from_world), None)
            grey = cv2.cvtColor(self._map_image(image_id), cv2.COLOR_RGB2GRAY)
            # A pixel is usable when its 3x3 neighbourhood lies on one surface (no depth edge), so
            # that a keypoint's sub-pixel position and its nearest pixel's depth agree.
            finite = np.where(np.isfinite(depth), depth, np.float32(1e9)).astype(np.float32)
            kernel = np.ones((3, 3), np.uint8)
            smooth = cv2.dilate(finite, kernel) <= 1.05 * cv2.erode(finite, kernel)
            usable = smooth & (depth < cfg.max_point_depth_m)
            if cfg.depth_points == "keypoints":
                sift = cv2.SIFT_create(nfeatures=4 * cfg.num_points)
                uv = np.array([kp.pt for kp in sift.detect(grey, None)], np.float64).reshape(-1, 2)
                px = np.round(uv).astype(np.int64)
                candidates = uv[usable[px[:, 1], px[:, 0]]]
                prob = None
            elif cfg.depth_points == "textured":
                g = grey.astype(np.float32)
                grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
                weight = np.where(usable, grad + 0.1 * grad.mean() + 1e-6, 0.0).ravel()
                v, u = np.divmod(np.arange(weight.size), depth.shape[1])
                candidates = np.stack([u, v], -1).astype(np.float64)
                prob = weight / weight.sum()
            else:
                raise ValueError(f"Unsupported depth_points {cfg.depth_points!r}, expected 'keypoints' or 'textured'")
            self._depth_cache[image_id] = (depth, candidates, prob)
            if len(self._depth_cache) > cfg.image_cache:
                self._depth_cache.pop(next(iter(self._depth_cache)))
        depth, candidates, prob = self._depth_cache[image_id]
        n = min(2 * cfg.num_points, int(np.count_nonzero(prob)) if prob is not None else len(candidates))
        uv = candidates[rng.choice(len(candidates), n, replace=False, p=prob)]
        px = np.round(uv).astype(np.int64)
        z = depth[px[:, 1], px[:, 0]].astype(np.float64)
        fx, fy, cx, cy = (float(x) for x in camera.data[2:6])
        p_cam = np.stack([(uv[:, 0] - cx) / fx * z, (uv[:, 1] - cy) / fy * z, z], -1)
        R, t = cam_from_world.numpy()
        return (p_cam - t) @ R  # world = R^T (p - t)

    def _visible(self, xyz: np.ndarray, cam_from_world: Pose, camera: Camera,
                 depth: np.ndarray | None = None) -> np.ndarray:
        """(N,) bool: in front, at least ``border_px`` inside the image, and not hidden in ``depth``."""
        p_cam = cam_from_world.transform(torch.from_numpy(xyz))
        p2d, valid = camera.world2image(p_cam)
        valid &= camera.in_image(p2d, self.config.border_px)
        valid = valid.numpy()
        if depth is not None:
            h, w = depth.shape
            uv = np.clip(np.round(p2d.numpy()).astype(np.int64), 0, [w - 1, h - 1])
            d = depth[uv[:, 1], uv[:, 0]]
            z = p_cam[:, 2].numpy()
            valid &= z <= d * (1 + self.config.depth_tolerance) + 0.1
        return valid


def initial_reprojection_error(xyz: np.ndarray, init: Pose, truth: Pose, camera: Camera) -> float:
    """Mean distance (pixels) between the projections of ``xyz`` (N, 3) under ``init`` and ``truth``,
    over the points in front of both; inf when there is none."""
    pts = torch.from_numpy(np.asarray(xyz, np.float64))
    p0, v0 = camera.world2image(init.double().transform(pts))
    p1, v1 = camera.world2image(truth.double().transform(pts))
    valid = v0 & v1
    if not bool(valid.any()):
        return math.inf
    return float((p0 - p1).norm(dim=-1)[valid].mean())


# ---------------------------------------------------------------------------------------------
# Forward pass and loss
# ---------------------------------------------------------------------------------------------

@dataclass
class PairOutput:
    """What one pair's forward pass and loss give."""

    loss: torch.Tensor  # scalar (graph attached when training); 0 for a pair without enough points
    level_errors: list[float]  # robust reprojection error per level after LM, finest first (clamped), px
    init_error: float  # same at the initial pose (not clamped), px
    level_success: list[bool]  # finest first: the level ended within success_thresh x stride
    pose: Pose  # final estimate (finest level run), detached, float64, ()
    rotation_error_deg: float  # of the final estimate vs the truth
    translation_error_m: float  # camera-centre distance of the final estimate vs the truth
    num_points: int  # points valid under both the true and the initial pose
    valid: bool  # enough points for the loss
    contrastive: float = math.nan  # the auxiliary contrastive term (mean over levels), nan when off


def robust_reprojection_error(pose: Pose, xyz: torch.Tensor, p_true: torch.Tensor, mask: torch.Tensor,
                              camera: Camera, scale_px: float) -> torch.Tensor:
    """Mean over ``mask`` of ``rho(|p(pose xyz) - p_true|)``, rho(e) = c (sqrt(1 + (e/c)^2) - 1).

    pose: (); xyz (N, 3); p_true (N, 2) pixels; mask (N,) bool; -> scalar tensor (pixels).
    Projections behind the camera are clamped to the near plane (finite, large errors).
    """
    p2d, _ = camera.world2image(pose.transform(xyz))
    e2 = ((p2d - p_true) ** 2).sum(-1)
    c = scale_px
    rho = c * (torch.sqrt(1 + e2 / (c * c)) - 1)
    m = mask.to(rho.dtype)
    return (rho * m).sum() / m.sum().clamp(min=1)


def reference_terms(features: list[torch.Tensor], confidences: list[torch.Tensor], xyz: torch.Tensor,
                    cam_from_world: Pose, camera: Camera, pads: Sequence[float]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Reference features and confidences of the points, sampled in the order the map compiler uses.

    features[l] (1, C_l, H_l, W_l) of the reference image: the raw maps for the reference profile
    (the reference trains on normalised samples of the raw maps), the normalised ones for the
    native profile; confidences[l] (1, 1, H_l, W_l);
    xyz (N, 3); pads: border of each level, level pixels, finest first (``localizer.level_pads``).
    Returns per level (N, C_l) L2-normalised features and (N,) confidences, the confidence set
    to 0 where the projection is behind the camera or within that level's pad of the border (so
    the point does not count at that level). Differentiable in the maps.
    """
    p_cam = cam_from_world.transform(xyz)
    feats, confs = [], []
    for level, stride in enumerate(STRIDES):
        cam_l = camera.scale(1.0 / stride)
        p2d, visible = cam_l.world2image(p_cam)
        table = torch.cat([features[level][0], confidences[level][0]], 0)
        s = BilinearSampler(table).sample(p2d[None].to(table.dtype), float(pads[level]), gradients=False)
        C = features[level].shape[1]
        feats.append(F.normalize(s.values[0, :, :C], dim=-1))
        confs.append(s.values[0, :, C] * (s.valid[0] & visible).to(table.dtype))
    return feats, confs


def contrastive_term(query_features: torch.Tensor, ref_features: torch.Tensor, p2d: torch.Tensor,
                     mask: torch.Tensor, temperature: float, min_sep: float) -> torch.Tensor:
    """InfoNCE of reference features against the query features at the points' true projections.

    query_features (C, H, W) of one level (L2-normalised); ref_features (N, C); p2d (N, 2) true
    projections in that level's pixels; mask (N,) points to use. Each point's positive is its own
    projection, its negatives the other points' projections at least ``min_sep`` pixels away.
    Returns a scalar (0 with fewer than 2 usable points). Differentiable in both feature sets.
    """
    s = BilinearSampler(query_features).sample(p2d[None].to(query_features.dtype), 0.0, gradients=False)
    use = mask & s.valid[0]
    if int(use.sum()) < 2:
        return query_features.new_zeros(())
    fq = F.normalize(s.values[0][use], dim=-1)
    fr = ref_features[use].to(fq.dtype)
    logits = fr @ fq.T / temperature  # (M, M): row i = reference i against every projection
    p = p2d[use]
    close = torch.cdist(p, p) < min_sep
    close.fill_diagonal_(False)
    logits = logits.masked_fill(close, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(fq), device=fq.device))


def _images_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    return batch.to(device).float() / 255.0


def pair_forward(model: PixLocModel, pair: TrainingPair, config: TrainConfig, device: torch.device,
                 lm_iterations: Sequence[int] | None = None, pose_loss: bool = True) -> PairOutput:
    """Network on both images, coarse-to-fine LM from ``pair.init``, and the loss.

    ``pose_loss`` False: only the contrastive term (no LM; the pose stays at the initial one).

    Differentiable when called with grad enabled (and ``model.train()``); use under
    ``torch.no_grad()`` for validation. ``lm_iterations`` (finest first) overrides the config.
    """
    iters = tuple(lm_iterations or config.lm_iterations)
    loss_cfg = config.loss
    # Training solves the system inference will solve: the Jacobian, the stopping rule, the pads
    # and the reference sampling order of the weights' engine profile.
    profile = model.engine_profile
    raw = profile.reference_sampling == "raw_then_normalize"
    same_size = pair.reference_image.shape == pair.query_image.shape
    if config.reference_grad and same_size:
        pyr = model(_images_tensor([pair.reference_image, pair.query_image], device), keep_raw=raw)
        ref_maps = pyr.raw_features if raw else pyr.features
        ref_f = [f[0:1] for f in ref_maps]
        ref_c = [c[0:1] for c in pyr.confidences]
        q_f = [f[1:2] for f in pyr.features]
        q_c = [c[1:2] for c in pyr.confidences]
    else:
        with torch.set_grad_enabled(config.reference_grad and torch.is_grad_enabled()):
            ref = model(_images_tensor([pair.reference_image], device), keep_raw=raw)
        query = model(_images_tensor([pair.query_image], device))
        ref_f = ref.raw_features if raw else ref.features
        ref_c, q_f, q_c = ref.confidences, query.features, query.confidences

    dt = torch.float32
    xyz = torch.from_numpy(pair.xyz).to(device=device, dtype=dt)
    ref_pose = pair.reference_from_world.to(device=device, dtype=dt)
    truth = pair.query_from_world.to(device=device, dtype=dt)
    init = pair.init.to(device=device, dtype=dt)
    ref_cam = pair.reference_camera.to(device=device, dtype=dt)
    q_cam = pair.query_camera.to(device=device, dtype=dt)
    pad = config.lm_pad if config.lm_pad is not None else profile.pad
    ref_pads = level_pads(pad, [f.shape[-2:] for f in ref_f])
    query_pads = level_pads(pad, [f.shape[-2:] for f in q_f])
    lm_settings = dict(gradient=profile.gradient, stopping=profile.stopping)
    if profile.stopping == "reference" and model.training:
        # The reference never stops early while training (``early_stop`` checks ``not self.training``);
        # its failure rule (too few valid points) still applies.
        lm_settings.update(stop_dt=0.0, stop_dw_deg=0.0, grad_stop=0.0)
    f_ref, c_ref = reference_terms(ref_f, ref_c, xyz, ref_pose, ref_cam, ref_pads)

    # Loss mask as in the reference: points in front of, and inside, the query under both the
    # true and the initial pose.
    p_cam_true = truth.transform(xyz)
    p_true, v_true = q_cam.world2image(p_cam_true)
    p_init, v_init = q_cam.world2image(init.transform(xyz))
    mask = v_true & v_init & q_cam.in_image(p_true) & q_cam.in_image(p_init)
    num_points = int(mask.sum())
    valid = num_points >= loss_cfg.min_points
    init_error = float(robust_reprojection_error(init, xyz, p_true, mask, q_cam, loss_cfg.robust_scale_px))

    pose = init[None]
    total = torch.zeros((), device=device)
    contrastive = math.nan
    if loss_cfg.contrastive_weight > 0 and valid:
        terms = []
        for level, stride in enumerate(STRIDES):
            p_l, _ = q_cam.scale(1.0 / stride).world2image(p_cam_true)
            terms.append(contrastive_term(q_f[level][0], f_ref[level], p_l, mask & (c_ref[level] > 0),
                                          loss_cfg.contrastive_temperature, loss_cfg.contrastive_min_sep))
        aux = torch.stack(terms).mean()
        total = total + loss_cfg.contrastive_weight * aux
        contrastive = float(aux.detach())
    errors: dict[int, float] = {}
    success: dict[int, bool] = {}
    previous_ok = True
    ran = [lv for lv in (2, 1, 0) if iters[lv] > 0] if pose_loss else []
    for level in ran:
        lm = LMConfig(num_iters=int(iters[level]), pad=query_pads[level], **lm_settings)
        res = optimize_level(q_f[level][0], q_c[level][0], xyz, f_ref[level], c_ref[level],
                             q_cam.scale(1.0 / STRIDES[level]), pose, model.optimizer[level].dampingnet(), lm)
        estimate = res.cam_from_world[0]
        err = robust_reprojection_error(estimate, xyz, p_true, mask, q_cam, loss_cfg.robust_scale_px)
        err = err.clamp(max=loss_cfg.clamp_px)
        if previous_ok and valid and bool(torch.isfinite(err)):
            total = total + err / len(ran)
        errors[level] = float(err.detach())
        success[level] = errors[level] < loss_cfg.success_thresh * STRIDES[level]
        previous_ok = previous_ok and success[level]
        pose = res.cam_from_world.detach()  # the reference detaches the pose between levels
    final = pose[0].to("cpu", torch.float64)
    rot, trans = pose_error(final, pair.query_from_world.double())
    return PairOutput(total, [errors.get(lv, math.nan) for lv in range(3)], init_error,
                      [success.get(lv, False) for lv in range(3)], final, float(rot), float(trans),
                      num_points, valid, contrastive)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

@dataclass
class ValidationResult:
    """Localisation of fixed validation pairs with eval-time LM iterations."""

    num_pairs: int
    mean_loss: float
    median_translation_m: float
    median_rotation_deg: float
    recall: list[float]  # at ``thresholds``
    thresholds: list[tuple[float, float]] = field(default_factory=lambda: list(CMU_THRESHOLDS))


def validate(model: PixLocModel, pairs: Sequence[TrainingPair], config: TrainConfig, device: torch.device,
             lm_iterations: Sequence[int] = (25, 25, 25)) -> ValidationResult:
    """Localise every pair (eval mode, no grad) and summarise errors and recall."""
    was_training = model.training
    model.eval()
    # restored below to train mode with the loop's BatchNorm setting
    losses, dts, drs = [], [], []
    with torch.no_grad():
        for pair in pairs:
            out = pair_forward(model, pair, config, device, lm_iterations)
            losses.append(float(out.loss.detach()))
            dts.append(out.translation_error_m)
            drs.append(out.rotation_error_deg)
    if was_training:
        set_train_mode(model, config.freeze_batchnorm)
    dts, drs = np.array(dts), np.array(drs)
    recall = [float(np.mean((dts <= m) & (drs <= d))) for m, d in CMU_THRESHOLDS]
    return ValidationResult(len(pairs), float(np.mean(losses)), float(np.median(dts)), float(np.median(drs)), recall)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """Where a ``train`` call stopped."""

    step: int  # optimizer steps done in total (including resumed ones)
    steps_this_run: int
    seconds: float  # wall time of this run
    checkpoint: Path
    stopped_by: str  # "steps" or "max_minutes"
    history: list[dict]  # the metric records of this run (also in metrics.jsonl)


def damping_parameters(model: PixLocModel) -> list[torch.nn.Parameter]:
    """The damping thetas ``optimizer.{l}.dampingnet.const``."""
    return [opt.dampingnet.const for opt in model.optimizer]


def set_train_mode(model: PixLocModel, freeze_batchnorm: bool) -> None:
    """``model.train()``, with the BatchNorm layers left in eval mode when ``freeze_batchnorm``
    (their affine parameters still learn; their running statistics stay as they are)."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def freeze_encoder(model: PixLocModel, blocks: int) -> None:
    """Stop gradients into the first ``blocks`` VGG blocks (0: train everything)."""
    encoder = model.extractor.encoder
    if not 0 <= blocks <= len(encoder):
        raise ValueError(f"freeze_encoder_blocks must be in [0, {len(encoder)}], got {blocks}")
    for i, block in enumerate(encoder):
        for p in block.parameters():
            p.requires_grad_(i >= blocks)


def make_optimizer(model: PixLocModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two groups: the network (lr, weight decay) and the damping (lr x scale, no decay)."""
    damping = damping_parameters(model)
    ids = {id(p) for p in damping}
    network = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    return torch.optim.AdamW([
        {"params": network, "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": damping, "lr": config.lr * config.damping_lr_scale, "weight_decay": 0.0},
    ], lr=config.lr)


def config_to_dict(config: TrainConfig) -> dict:
    """Plain containers (tuples as lists) for the checkpoint's ``conf.train``."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x
    return plain(asdict(config))


def official_conf(model: PixLocModel, config: TrainConfig, data: dict | None = None) -> dict:
    """The ``conf`` of a checkpoint written by ``train``: reference-style model part, our data/train."""
    from pixloc_ros.core.engine.checkpoint import default_official_conf

    conf = default_official_conf(model.encoder_name)
    conf["model"]["optimizer"]["num_iters"] = list(config.lm_iterations)
    conf["model"]["success_thresh"] = config.loss.success_thresh
    conf["model"]["clamp_error"] = config.loss.clamp_px
    conf["data"] = dict(data or {})
    conf["train"] = config_to_dict(config)
    return conf


def read_training_state(path: str | Path) -> dict:
    """The whole dict of a checkpoint written by ``train`` (restricted unpickler, as for weights)."""
    from pixloc_ros.core.engine.checkpoint import read_torch_checkpoint

    path = Path(path)
    state = read_torch_checkpoint(path)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a training checkpoint (no 'model' entry)")
    return state


def _rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def train(model: PixLocModel, sampler: PairSampler, config: TrainConfig, out_dir: str | Path, *,
          resume: bool = True, data_info: dict | None = None, validation_pairs: Sequence[TrainingPair] = (),
          log: Callable[[str], None] = print) -> TrainResult:
    """Train ``model`` in place on pairs from ``sampler``; checkpoints go to ``out_dir``.

    Resumes from ``out_dir/checkpoint_last.tar`` when it exists and ``resume`` (model, optimizer,
    step, sampling RNG, GradScaler). Writes ``metrics.jsonl`` (one record per ``log_every``
    steps) and calls ``log`` with one line per record. ``validation_pairs`` are localised every
    ``val_every`` steps (and at the start) with eval-time iterations.
    """
    from pixloc_ros.core.engine.checkpoint import save_official_checkpoint
    from pixloc_ros.core.engine.localizer import resolve_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    threads_before = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    use_amp = config.amp and device.type == "cuda"
    model.config.fp16_on_cuda = use_amp  # the network owns its autocast
    model.to(device)
    set_train_mode(model, config.freeze_batchnorm)
    freeze_encoder(model, config.freeze_encoder_blocks)
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    rng = np.random.default_rng(config.seed)
    step = 0
    ckpt_path = out / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        state = read_training_state(ckpt_path)
        model.load_state_dict(state["model"])
        if state.get("optimizer", {}).get("param_groups"):
            optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("rng"):
            rng.bit_generator.state = state["rng"]
        step = int(state.get("step", 0))
        log(f"resumed from {ckpt_path} at step {step}")
    conf = official_conf(model, config, data_info)

    saved_step = -1

    def save() -> Path:
        nonlocal saved_step
        if saved_step == step:
            return ckpt_path
        saved_step = step
        save_official_checkpoint(
            model, ckpt_path, conf, optimizer=optimizer.state_dict(), lr_scheduler={},
            epoch=0, losses=history[-1] if history else None, eval=last_eval, step=step,
            rng=_rng_state(rng), scaler=scaler.state_dict() if use_amp else {})
        return ckpt_path

    history: list[dict] = []
    last_eval: dict = {}
    start = time.perf_counter()
    first_step = step
    window: list[PairOutput] = []
    window_start = time.perf_counter()
    stopped_by = "steps"
    metrics = open(out / METRICS_NAME, "a")

    def run_validation() -> None:
        nonlocal last_eval
        if not validation_pairs:
            return
        tic = time.perf_counter()
        v = validate(model, validation_pairs, config, device)
        last_eval = {"step": step, "val_loss": v.mean_loss, "val_recall": v.recall,
                     "val_median_translation_m": v.median_translation_m,
                     "val_median_rotation_deg": v.median_rotation_deg}
        metrics.write(json.dumps({"type": "val", **last_eval}) + "\n")
        metrics.flush()
        log(f"val step {step}: loss {v.mean_loss:.2f}, recall "
            + "/".join(f"{100 * r:.0f}" for r in v.recall)
            + f" % at {'/'.join(f'{m:g}m,{d:g}deg' for m, d in CMU_THRESHOLDS)}, median "
              f"{v.median_translation_m:.3f} m {v.median_rotation_deg:.2f} deg ({time.perf_counter() - tic:.0f} s)")

    try:
        if config.val_every > 0 and step == 0:
            run_validation()
        while step < config.steps:
            if config.max_minutes is not None and time.perf_counter() - start > 60 * config.max_minutes:
                stopped_by = "max_minutes"
                break
            optimizer.zero_grad(set_to_none=True)
            outputs = []
            for _ in range(config.batch_size):
                pair = sampler.sample(rng)
                out_pair = pair_forward(model, pair, config, device,
                                        pose_loss=step >= config.contrastive_only_steps)
                loss = out_pair.loss / config.batch_size
                if out_pair.valid and loss.requires_grad and torch.isfinite(loss):
                    scaler.scale(loss).backward()
                outputs.append(out_pair)
            scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"]]
            grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
            if grads_ok:
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimizer)
            scaler.update()
            step += 1
            window += outputs
            if step % config.log_every == 0 or step == config.steps:
                record = _record(step, window, model, time.perf_counter() - window_start, grads_ok)
                history.append(record)
                metrics.write(json.dumps({"type": "train", **record}) + "\n")
                metrics.flush()
                log(_format_record(record))
                window, window_start = [], time.perf_counter()
            if config.val_every > 0 and step % config.val_every == 0:
                run_validation()
            if step % config.checkpoint_every == 0:
                save()
        save()
    finally:
        metrics.close()
        torch.set_num_threads(threads_before)
    return TrainResult(step, step - first_step, time.perf_counter() - start, ckpt_path, stopped_by, history)


def _record(step: int, window: list[PairOutput], model: PixLocModel, seconds: float, grads_ok: bool) -> dict:
    """Means over the pairs since the last record."""
    def mean(xs):
        xs = [x for x in xs if math.isfinite(x)]
        return float(np.mean(xs)) if xs else math.nan

    with torch.no_grad():
        damping = model.damping().double().cpu().tolist()
    return {
        "step": step,
        "loss": mean([float(o.loss.detach()) for o in window if o.valid]),
        "contrastive": mean([o.contrastive for o in window if o.valid]),
        "error_px": [mean([o.level_errors[lv] for o in window if o.valid]) for lv in range(3)],
        "init_error_px": mean([o.init_error for o in window if o.valid]),
        "success": [float(np.mean([o.level_success[lv] for o in window])) for lv in range(3)],
        "median_translation_m": float(np.median([o.translation_error_m for o in window])),
        "median_rotation_deg": float(np.median([o.rotation_error_deg for o in window])),
        "pairs": len(window),
        "seconds_per_step": seconds / max(1, len(window)),
        "damping": damping,
        "finite_gradients": grads_ok,
    }


def _format_record(r: dict) -> str:
    e = r["error_px"]
    s = r["success"]
    d = r["damping"]
    aux = f"  contrastive {r['contrastive']:.3f}" if math.isfinite(r.get("contrastive", math.nan)) else ""
    return (f"step {r['step']:6d}  loss {r['loss']:7.3f}{aux}  err px fine/mid/coarse {e[0]:6.2f} {e[1]:6.2f} {e[2]:6.2f}"
            f" (init {r['init_error_px']:6.2f})  success {s[0]:.2f} {s[1]:.2f} {s[2]:.2f}"
            f"  median {r['median_translation_m']:.3f} m {r['median_rotation_deg']:.2f} deg"
            f"  {r['seconds_per_step']:.2f} s/pair"
            f"  log10 damping coarse [{' '.join(f'{math.log10(v):.1f}' for v in d[2])}]")


__all__ = [
    "AugmentConfig", "PairConfig", "LossConfig", "TrainConfig", "TrainingPair", "PairSampler", "PairOutput",
    "ValidationResult", "TrainResult", "RenderFn", "color_jitter", "car_like_offset", "initial_reprojection_error",
    "robust_reprojection_error", "reference_terms", "contrastive_term", "pair_forward", "validate", "train", "make_optimizer",
    "freeze_encoder", "damping_parameters", "official_conf", "read_training_state", "CHECKPOINT_NAME",
]
