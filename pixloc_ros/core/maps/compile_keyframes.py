"""One keyframe of a map compile: the network on its image, the reference features and confidences
sampled at its observations (``compile_map`` runs it for every keyframe, ``compile_tile`` per tile).

For every registered image (keyframe) the network runs once; the features and confidences of
all three levels are sampled (bilinearly) where the keyframe observes a 3D point with a track of
at least ``min_track_length`` images, and stored in half precision. The node then never runs the
network on reference images, unlike the reference implementation, which does it per query.

Where to sample (``sample_at``):
- "reprojection" (default, what PixLoc does): the 3D point projected into the keyframe with the
  keyframe's pose and camera. The localizer compares the query feature at the projection of the
  same 3D point, so sampling the reference at the projection makes the residual vanish at the
  true pose; the keypoint differs from it by the SfM reprojection error (~1 px), a bias that
  would pull the fine level's minimum away.
- "keypoint": the detected keypoint (COLMAP convention converted: x - 0.5).

How the reference features are sampled and which observations are kept follows the weights'
engine profile (``model.engine_profile``, recorded in the map header; the node refuses a map of
another profile):
- reference (the released weights; cvg/pixloc ``interp_sparse_observations``): the *raw* feature
  maps are sampled and each sample is L2-normalised once; an observation is kept only when it is
  in front of the camera, inside the distortion's range and inside [pad, size - 1 - pad] at every
  level (the checkpoint's pad, level pixels), as the reference drops it otherwise.
- native: the L2-normalised maps are sampled and the samples normalised again (interpolating unit
  vectors shortens them); an observation is kept when it is valid at the finest level, and at
  each coarser level where it falls into that level's pad band its stored confidence is 0 (no
  weight there, full weight where it is valid). Dropping it everywhere would cost, at stride 16
  on a 320x240 image, every observation within 64 px of the border (~65 % of them). The pads
  follow ``localizer.level_pads`` (4 px at CMU size, less on small maps).
"""
from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pixloc_ros import __version__
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.maps.colmap_io import SfmModel
from pixloc_ros.core.engine.profile import EngineProfile, native_profile
from pixloc_ros.core.engine.images import camera_scale, downscale_rgb, rgb_to_tensor
from pixloc_ros.core.engine.interpolation import BilinearSampler
from pixloc_ros.core.engine.localizer import level_pads
from pixloc_ros.core.maps.mapfile_format import KeyframeRecord, LevelInfo, MapCamera, Observations


SAMPLE_AT = ("reprojection", "keypoint")


@dataclass
class CompileConfig:
    """Options of ``compile_map``."""

    sample_at: str = "reprojection"  # "reprojection" (PixLoc) or "keypoint"; see the module docstring
    min_track_length: int = 3  # points seen by fewer SfM images are left out (PixLoc CMU: 3)
    # Downscale keyframes so the longer side is at most this: None = the weights' engine profile's
    # (reference 1024, native never), 0 = never.
    max_image_edge: int | None = None
    # Level pixels kept clear of each level's border: None = the weights' engine profile's (reference:
    # the checkpoint's pad; native: ``localizer.level_pads``' default, 4 at CMU size, less on small
    # maps), one value for every level, or one per level (finest first). See the module docstring
    # for what happens to an observation inside a pad.
    border_pad: float | tuple[float, ...] | None = None

    def __post_init__(self):
        if self.border_pad is not None:
            if not isinstance(self.border_pad, (int, float)):
                self.border_pad = tuple(float(v) for v in self.border_pad)
            pads = (self.border_pad,) if isinstance(self.border_pad, (int, float)) else self.border_pad
            if any(not (float(v) >= 0) for v in pads):
                raise ValueError(f"border_pad must be >= 0 level pixels, got {self.border_pad}")
        if self.sample_at not in SAMPLE_AT:
            raise ValueError(f"Unsupported sample_at {self.sample_at!r}, expected one of {SAMPLE_AT}")
        if self.max_image_edge is not None and self.max_image_edge != 0 and self.max_image_edge < 16:
            raise ValueError(f"max_image_edge must be >= 16 pixels (0: never resize), got {self.max_image_edge}")


def load_keyframe_image(path: Path, width: int, height: int, max_edge: int | None,
                        method: str = "area") -> np.ndarray:
    """Read an image as RGB (H', W', 3), check it has the camera's size, downscale it if asked
    (``images.downscale_rgb``: uint8, or float32 in [0, 255] for the reference's "linear")."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read keyframe image {path}")
    if bgr.shape[:2] != (height, width):
        raise ValueError(f"{path} is {bgr.shape[1]}x{bgr.shape[0]} but its COLMAP camera says {width}x{height}")
    return downscale_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), max_edge, method)


def sample_positions(sfm: SfmModel, image_id: int, point_xyz: np.ndarray, keypoints_colmap: np.ndarray,
                     sample_at: str) -> tuple[np.ndarray, np.ndarray]:
    """Where to sample each observation, full-resolution pixel-centre coordinates.

    point_xyz (N, 3) world points, keypoints_colmap (N, 2) their keypoints in COLMAP pixels.
    Returns (p2d (N, 2) float64, valid (N,) bool: in front of the camera and inside the
    distortion's monotonic range; always True for keypoints).
    """
    if sample_at == "keypoint":
        return keypoints_colmap - 0.5, np.ones(len(keypoints_colmap), bool)
    image = sfm.images[image_id]
    cam = sfm.cameras[image.camera_id]
    camera = Camera.from_colmap(cam.model, cam.width, cam.height, cam.params)
    p_cam = point_xyz @ image.R.T + image.t
    p2d, valid = camera.world2image(torch.from_numpy(p_cam))
    return p2d.numpy(), valid.numpy()


@dataclass
class KeyframeSamples:
    """Reference features of one keyframe's observations, before they are stored (float32)."""

    features: list[torch.Tensor]  # per level (N, C_l), L2-normalised
    confidences: torch.Tensor  # (N, L) reference confidence per level (0 where a level does not count)
    valid: torch.Tensor  # (N,) bool: the observation exists (see the module docstring)


def sample_keyframe(pyramid, uv: torch.Tensor, pad: float | tuple[float, ...] | None,
                    profile: EngineProfile) -> KeyframeSamples:
    """Sample a keyframe's ``pyramid`` (``model.extract``, with ``keep_raw`` for the reference
    order) at its observations ``uv`` (N, 2), pixel-centre coordinates of the network input, in
    the order and with the border rule of ``profile`` (module docstring). ``pad``: the border of
    every level or of each level (finest first), level pixels; None: ``localizer.level_pads``.
    """
    raw = profile.reference_sampling == "raw_then_normalize"
    maps = pyramid.raw_features if raw else pyramid.features
    if maps is None:
        raise ValueError("the reference sampling order needs the raw features: extract with keep_raw=True")
    pads = level_pads(pad, [f.shape[-2:] for f in pyramid.features])
    valid = torch.ones(len(uv), dtype=torch.bool, device=uv.device)
    features, confidences = [], []
    for level, stride in enumerate(pyramid.strides):
        p = ((uv + 0.5) / stride - 0.5)[None]
        # Features and confidence share one gather (the confidence as an extra channel).
        table = torch.cat([maps[level][0], pyramid.confidences[level][0]], 0)
        s = BilinearSampler(table).sample(p, pads[level], gradients=False)
        C = maps[level].shape[1]
        inside = s.valid[0]
        c = s.values[0, :, C]
        if level == 0 or profile.drop_partial_observations:
            valid &= inside  # outside this level's pad: no observation at all
        else:
            c = torch.where(inside, c, torch.zeros_like(c))  # no weight at this level only
        # One normalisation of the samples (reference: of the raw maps; native: of the normalised
        # maps, whose interpolated unit vectors are slightly shorter).
        features.append(torch.nn.functional.normalize(s.values[0, :, :C], dim=-1))
        confidences.append(c)
    return KeyframeSamples(features, torch.stack(confidences, -1), valid)


@dataclass
class PointSelection:
    """The SfM points a map keeps (track length >= ``min_track_length``) and their rows."""

    point_ids: np.ndarray  # (P,) int64
    xyz: np.ndarray  # (P, 3) float64
    track_lengths: np.ndarray  # (P,) int64
    row_of_id: dict[int, int]  # SfM point id -> row

    @classmethod
    def of(cls, sfm: SfmModel, min_track_length: int) -> "PointSelection":
        track_lengths = sfm.track_lengths
        keep = track_lengths >= min_track_length
        point_ids = sfm.point_ids[keep]
        return cls(point_ids, sfm.xyz[keep], track_lengths[keep], {int(pid): row for row, pid in enumerate(point_ids)})

    def rows_observed_by(self, image) -> tuple[np.ndarray, np.ndarray]:
        """(keypoint indices (n,), point rows (n,)) of ``image``'s observations of kept points."""
        obs = np.flatnonzero(image.point3D_ids >= 0)
        rows_idx = np.array([self.row_of_id.get(int(pid), -1) for pid in image.point3D_ids[obs]], np.int64)
        return obs[rows_idx >= 0], rows_idx[rows_idx >= 0]


@dataclass
class CompiledKeyframe:
    """One keyframe's share of a map: its row and its observations (point rows of the selection)."""

    record: KeyframeRecord
    observations: Observations
    num_dropped: int  # candidates in the finest level's pad band or behind the camera
    num_zero_confidence: np.ndarray  # (L,) stored observations with confidence 0, per level
    network_seconds: float


def map_levels(model) -> tuple[list[LevelInfo], tuple[int, ...]]:
    """Levels (stride, channels) of ``model``'s features, from a tiny forward pass (dims depend on the weights)."""
    with torch.no_grad():
        probe = model.extract(torch.zeros(1, 3, 32, 32, device=model.device))
    strides = tuple(int(s) for s in probe.strides)
    return [LevelInfo(s, int(f.shape[1])) for s, f in zip(strides, probe.features)], strides


def keyframe_plan(sfm: SfmModel, points: PointSelection) -> tuple[list[int], list[str], dict[int, int]]:
    """Which registered images become keyframes: (image ids in map order, names of the images
    skipped for observing no kept point, camera id -> camera index in order of first use)."""
    image_ids, skipped, camera_index = [], [], {}
    for image_id in sorted(sfm.images):
        image = sfm.images[image_id]
        if len(points.rows_observed_by(image)[0]) == 0:
            skipped.append(image.name)
            continue
        camera_index.setdefault(image.camera_id, len(camera_index))
        image_ids.append(image_id)
    return image_ids, skipped, camera_index


@dataclass
class KeyframeSettings:
    """How keyframes are compiled for one model: its strides, engine profile, pad and image size."""

    strides: tuple[int, ...]
    profile: EngineProfile
    pad: float | tuple[float, ...] | None  # CompileConfig.border_pad, else the profile's
    max_edge: int | None  # CompileConfig.max_image_edge, else the profile's

    @classmethod
    def of(cls, model, config: "CompileConfig") -> "KeyframeSettings":
        _, strides = map_levels(model)
        profile = getattr(model, "engine_profile", None) or native_profile()
        return cls(strides, profile, config.border_pad if config.border_pad is not None else profile.pad,
                   config.max_image_edge if config.max_image_edge is not None else profile.max_image_edge)


def compile_keyframe(sfm: SfmModel, image_id: int, image_dir: Path, model, points: PointSelection,
                     settings: KeyframeSettings, camera_index: int, config: CompileConfig) -> CompiledKeyframe:
    """Run ``model`` on keyframe ``image_id`` and sample its observations of ``points`` (see the
    module docstring). The one per-keyframe step of every compile path (one file, tiles, Ray)."""
    device = model.device
    profile = settings.profile
    image = sfm.images[image_id]
    cam = sfm.cameras[image.camera_id]
    obs, rows_idx = points.rows_observed_by(image)
    p2d, valid = sample_positions(sfm, image_id, points.xyz[rows_idx], image.xys[obs], config.sample_at)

    rgb = load_keyframe_image(image_dir / image.name, cam.width, cam.height, settings.max_edge, profile.resize)
    h, w = rgb.shape[:2]
    scale = np.array(camera_scale(cam.width, cam.height, w, h, profile.resize))
    uv = (p2d + 0.5) * scale - 0.5  # pixel centres of the (resized) network input

    t0 = time.perf_counter()
    pyramid = model.extract(rgb_to_tensor(rgb), keep_raw=profile.reference_sampling == "raw_then_normalize")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    net_seconds = time.perf_counter() - t0

    samples = sample_keyframe(pyramid, torch.from_numpy(uv).to(device=device, dtype=torch.float32),
                              settings.pad, profile)
    valid &= samples.valid.cpu().numpy()
    confidence = samples.confidences.cpu().numpy()[valid].astype(np.float16)
    observations = Observations(rows_idx[valid].astype(np.int32), uv[valid].astype(np.float32),
                                confidence, [f.cpu().numpy()[valid].astype(np.float16) for f in samples.features])
    record = KeyframeRecord(image_id, image.name, image.R, image.t, camera_index, (w, h))
    return CompiledKeyframe(record, observations, int((~valid).sum()), (confidence == 0).sum(0), net_seconds)


def map_cameras(sfm: SfmModel, camera_index: dict[int, int]) -> list[MapCamera]:
    """The header's camera list, in camera-index order."""
    return [MapCamera(cid, sfm.cameras[cid].model, sfm.cameras[cid].width, sfm.cameras[cid].height,
                      tuple(float(v) for v in sfm.cameras[cid].params))
            for cid, _ in sorted(camera_index.items(), key=lambda kv: kv[1])]


def compile_info(config: CompileConfig, device, dropped: int, skipped: list[str], zeroed: np.ndarray,
                 net_seconds: float) -> dict:
    """The header's ``compile_info``: options and statistics of a compile."""
    info = {"config": asdict(config), "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "device": str(device), "num_dropped_observations": dropped, "skipped_images": skipped,
            "num_zero_confidence_per_level": [int(v) for v in zeroed],
            "network_seconds": round(net_seconds, 3)}
    info["pixloc_ros_version"] = __version__
    return info
