"""Compile a COLMAP model, its images and the network weights into a map file (``core/mapfile.py``).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from pixloc_ros import __version__
from pixloc_ros.core.camera import Camera
from pixloc_ros.core.colmap_io import SfmModel
from pixloc_ros.core.engine_profile import EngineProfile, native_profile
from pixloc_ros.core.georef import Georeference
from pixloc_ros.core.images import camera_scale, downscale_rgb, resized_size, rgb_to_tensor  # noqa: F401 (resized_size: re-export)
from pixloc_ros.core.interpolation import BilinearSampler
from pixloc_ros.core.localizer import level_pads
from pixloc_ros.core.mapfile import LevelInfo, MapCamera, MapHeader, MapWriter, Observations

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


@dataclass
class CompileStats:
    """What ``compile_map`` did."""

    path: Path
    num_keyframes: int
    num_points: int
    num_observations: int
    num_dropped_observations: int  # candidates in the finest level's pad band or behind the camera
    skipped_images: list[str] = field(default_factory=list)  # registered images without usable points
    seconds: float = 0.0  # whole compile
    network_seconds: float = 0.0  # time in the network (synchronised on CUDA)
    file_size_bytes: int = 0
    num_zero_confidence: tuple[int, ...] = ()  # stored observations with confidence 0 (border), per level

    @property
    def images_per_s(self) -> float:
        return self.num_keyframes / self.seconds if self.seconds > 0 else float("nan")


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


def compile_map(sfm: SfmModel, image_dir: str | Path, model, out_path: str | Path,
                weights_fingerprint: str, georef: Georeference | None = None,
                config: CompileConfig | None = None, progress: bool = True) -> CompileStats:
    """Run ``model`` (a ``PixLocModel`` in eval mode, on its device) on every registered image of
    ``sfm`` found under ``image_dir`` (by the image's name) and write the map to ``out_path``.

    ``weights_fingerprint``: ``checkpoint.weights_fingerprint(model)``, stored so the node can
    refuse a map built with other weights. Returns CompileStats. Raises FileNotFoundError for
    a missing image, ValueError for an image whose size differs from its camera.
    """
    config = config or CompileConfig()
    image_dir = Path(image_dir)
    start = time.perf_counter()
    device = model.device

    # Points kept: track length >= min; their rows in the map's point table.
    track_lengths = sfm.track_lengths
    keep = track_lengths >= config.min_track_length
    point_ids = sfm.point_ids[keep]
    point_xyz = sfm.xyz[keep]
    row_of_id = {int(pid): row for row, pid in enumerate(point_ids)}

    # Levels: channel counts from a tiny forward pass (dims depend on the weights' layout).
    with torch.no_grad():
        probe = model.extract(torch.zeros(1, 3, 32, 32, device=device))
    strides = tuple(int(s) for s in probe.strides)
    levels = [LevelInfo(s, int(f.shape[1])) for s, f in zip(strides, probe.features)]

    profile = getattr(model, "engine_profile", None) or native_profile()
    pad_setting = config.border_pad if config.border_pad is not None else profile.pad
    max_edge = config.max_image_edge if config.max_image_edge is not None else profile.max_image_edge

    image_ids = sorted(sfm.images)
    kf_ids, kf_names, kf_R, kf_t, kf_cam, kf_size = [], [], [], [], [], []
    camera_index: dict[int, int] = {}
    skipped, dropped, net_seconds = [], 0, 0.0
    zeroed = np.zeros(len(levels), np.int64)
    iterator = image_ids
    if progress:
        from tqdm import tqdm
        iterator = tqdm(image_ids, desc="build-map", unit="image")

    with MapWriter(out_path, levels) as writer:
        for image_id in iterator:
            image = sfm.images[image_id]
            cam = sfm.cameras[image.camera_id]
            obs = np.flatnonzero(image.point3D_ids >= 0)
            rows_idx = np.array([row_of_id.get(int(pid), -1) for pid in image.point3D_ids[obs]], np.int64)
            obs, rows_idx = obs[rows_idx >= 0], rows_idx[rows_idx >= 0]
            if len(obs) == 0:
                skipped.append(image.name)
                continue
            p2d, valid = sample_positions(sfm, image_id, point_xyz[rows_idx], image.xys[obs], config.sample_at)

            rgb = load_keyframe_image(image_dir / image.name, cam.width, cam.height, max_edge, profile.resize)
            h, w = rgb.shape[:2]
            scale = np.array(camera_scale(cam.width, cam.height, w, h, profile.resize))
            uv = (p2d + 0.5) * scale - 0.5  # pixel centres of the (resized) network input

            t0 = time.perf_counter()
            pyramid = model.extract(rgb_to_tensor(rgb), keep_raw=profile.reference_sampling == "raw_then_normalize")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            net_seconds += time.perf_counter() - t0

            samples = sample_keyframe(pyramid, torch.from_numpy(uv).to(device=device, dtype=torch.float32),
                                      pad_setting, profile)
            valid &= samples.valid.cpu().numpy()
            dropped += int((~valid).sum())
            confidence = samples.confidences.cpu().numpy()[valid].astype(np.float16)
            zeroed += (confidence == 0).sum(0)
            writer.add_keyframe_observations(Observations(
                rows_idx[valid].astype(np.int32), uv[valid].astype(np.float32),
                confidence, [f.cpu().numpy()[valid].astype(np.float16) for f in samples.features]))

            camera_index.setdefault(image.camera_id, len(camera_index))
            kf_ids.append(image_id)
            kf_names.append(image.name)
            kf_R.append(image.R)
            kf_t.append(image.t)
            kf_cam.append(camera_index[image.camera_id])
            kf_size.append((w, h))

        if not kf_ids:
            raise ValueError(f"no registered image observes a point with track length >= {config.min_track_length}")
        cameras = [MapCamera(cid, sfm.cameras[cid].model, sfm.cameras[cid].width, sfm.cameras[cid].height,
                             tuple(float(v) for v in sfm.cameras[cid].params))
                   for cid, _ in sorted(camera_index.items(), key=lambda kv: kv[1])]
        num_obs = writer.num_observations
        info = {"config": asdict(config), "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "device": str(device), "num_dropped_observations": dropped, "skipped_images": skipped,
                "num_zero_confidence_per_level": [int(v) for v in zeroed],
                "network_seconds": round(net_seconds, 3)}
        info["pixloc_ros_version"] = __version__
        header = MapHeader(weights_fingerprint, getattr(model, "encoder_name", "unknown"), levels, cameras,
                           kf_names, georef, info, engine_profile=profile.to_json())
        path = writer.finish(
            header,
            {"keyframe_ids": np.array(kf_ids), "keyframe_camera_index": np.array(kf_cam),
             "keyframe_R": np.stack(kf_R), "keyframe_t": np.stack(kf_t), "keyframe_image_size": np.array(kf_size)},
            {"point_ids": point_ids, "point_xyz": point_xyz, "point_track_length": track_lengths[keep]})
    return CompileStats(path, len(kf_ids), len(point_ids), num_obs, dropped, skipped,
                        time.perf_counter() - start, net_seconds, path.stat().st_size,
                        tuple(int(v) for v in zeroed))
