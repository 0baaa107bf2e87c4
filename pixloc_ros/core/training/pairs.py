"""Training pairs for PixLoc's recipe.

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

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.maps.colmap_io import SfmModel
from pixloc_ros.core.geometry.pose import Pose
from .config import AugmentConfig, PairConfig, RenderFn


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

    def map_images(self, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Up to ``count`` distinct map images (H, W, 3) uint8 at the network-input size, drawn at
        random (for ``batchnorm.estimate_batchnorm_statistics``)."""
        picked = rng.choice(len(self.image_ids), min(count, len(self.image_ids)), replace=False)
        return [self._map_image(int(self.image_ids[i])) for i in sorted(picked.tolist())]

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


class MultiSampler:
    """Pairs from several maps (e.g. several synthetic worlds): each draw picks one map uniformly,
    then a pair of it (``PairSampler.sample``). Same interface as ``PairSampler`` for ``train``."""

    def __init__(self, samplers: Sequence[PairSampler]):
        if not samplers:
            raise ValueError("MultiSampler needs at least one PairSampler")
        sizes = {tuple(s.config.image_size) if s.config.image_size else None for s in samplers}
        if len(sizes) > 1:
            raise ValueError(f"the maps' samplers have different image sizes {sorted(map(str, sizes))}: "
                             "set one --image-size")
        self.samplers = list(samplers)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Every map's covisible pairs (image ids are per map; for counting)."""
        return [p for s in self.samplers for p in s.pairs]

    def sample(self, rng: np.random.Generator, conditions: Sequence[str] | None = None,
               max_tries: int = 200) -> TrainingPair:
        """One pair of a map drawn uniformly."""
        sampler = self.samplers[int(rng.integers(len(self.samplers)))]
        return sampler.sample(rng, conditions, max_tries)

    def map_images(self, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        """About ``count`` map images, the same number from each map."""
        per_map = max(1, -(-count // len(self.samplers)))
        return [im for s in self.samplers for im in s.map_images(per_map, rng)]


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
