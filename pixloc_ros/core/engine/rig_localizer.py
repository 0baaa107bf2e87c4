"""PixLoc localization of a camera rig: the network once per camera, then ONE coarse-to-fine LM
whose hypotheses are poses of the whole vehicle and whose residuals come from every camera
(issue 30; the rig and its pose convention: ``geometry.rig``, the LM: ``lm.rig``).

``localize_rig(localizer, images, rig, points, init_base_from_world)`` takes one image and one
point set per camera (each camera's points come from retrieval around the rig pose for that
camera) and initial ``base_from_world`` hypotheses; ``localize_rig_features`` does the same on
given feature maps. The levels, the stopping rule, the hypothesis choice, the covariance and the
failure reasons are the single-camera localizer's (``Localizer.coarse_to_fine``), so a rig of one
camera gives exactly ``Localizer.localize_features``' result.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry.camera import MIN_DEPTH
from ..geometry.pose import Pose
from ..geometry.rig import Rig, RigCamera
from .localizer import DEFAULT_STRIDES, Localizer, level_pads
from .lm.config import LMConfig
from .lm.rig import RigView, optimize_rig_level, split_per_camera
from .query_points import QueryPoints
from .results import Failure, LocalizationResult, NetworkOutput, StageClock, Timings, failure_result


@dataclass
class RigLocalizationResult:
    """Outcome of one rig localization."""

    # The single-camera result type for the rig's pose: ``cam_from_world`` is the anchor camera's
    # pose, ``covariance`` engine order in the anchor frame (``covariance.engine_to_ros_covariance``
    # with the anchor's ``base_from_camera`` moves it to base_link), ``num_valid`` / ``point_weights``
    # over all cameras' points (camera after camera).
    result: LocalizationResult
    rig: Rig  # the cameras that took part (their order is the order of the per-camera fields)
    base_from_world: np.ndarray | None  # (4, 4) chosen pose of base_link, None when no hypothesis ran
    num_weighted: dict[str, int]  # fine-level points of the chosen hypothesis with a non-zero weight, per camera
    point_weights: dict[str, np.ndarray]  # (N_k,) float32 fine-level weights per camera (chosen hypothesis)
    hypotheses_base_from_world: np.ndarray | None  # (B, 4, 4) every hypothesis' final base pose
    # Per camera: per level (H_l, W_l) float32 query confidence for display (the anchor's is
    # ``result.confidences``); empty when ``LocalizerConfig.return_confidences`` is off.
    confidences: dict[str, list[np.ndarray]] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.result.success


def _check_inputs(rig: Rig, per_camera: list, what: str) -> None:
    if len(per_camera) != len(rig):
        raise ValueError(f"{len(per_camera)} {what} for a rig of {len(rig)} cameras {list(rig.names)}")


def _base_poses(rig: Rig, anchor_from_world: Pose) -> np.ndarray:
    """(B,) anchor poses -> (B, 4, 4) base_from_world."""
    return rig.to_base(anchor_from_world.to("cpu", torch.float64).to_4x4().numpy())


def localize_rig_features(localizer: Localizer, pyramids: list, rig: Rig, points: list[QueryPoints],
                          init_base_from_world: Pose, damping: torch.Tensor) -> RigLocalizationResult:
    """Coarse-to-fine LM of one rig pose on given feature maps (no network).

    pyramids: one per camera, in rig order (``network.FeaturePyramid`` or anything with
    ``features`` / ``confidences`` / optional ``strides``, as ``Localizer.localize_features``);
    rig: its cameras' intrinsics at the pyramids' input size and their extrinsics; points: one
    ``QueryPoints`` per camera (may be empty for a camera); init_base_from_world: Pose (B,) or ();
    damping: (3, 6) lambda per level, finest first, applied in the anchor camera's frame.
    ValueError for malformed input; degenerate problems come back as ``success=False``.
    """
    _check_inputs(rig, pyramids, "feature pyramids")
    _check_inputs(rig, points, "point sets")
    if tuple(damping.shape) != (3, 6):
        raise ValueError(f"damping must be (3, 6), got {tuple(damping.shape)}")
    if init_base_from_world.shape == ():
        init_base_from_world = init_base_from_world[None]
    if len(init_base_from_world.shape) != 1 or init_base_from_world.shape[0] == 0:
        raise ValueError(f"init_base_from_world must be a Pose of shape (B,) with B >= 1, "
                         f"got {tuple(init_base_from_world.shape)}")
    threads, previous = localizer.config.lm_cpu_threads, torch.get_num_threads()
    if localizer.device.type != "cpu" or not threads or threads == previous:
        return _localize(localizer, pyramids, rig, points, init_base_from_world, damping)
    torch.set_num_threads(int(threads))  # as Localizer.localize_features: small tensors, one thread
    try:
        return _localize(localizer, pyramids, rig, points, init_base_from_world, damping)
    finally:
        torch.set_num_threads(previous)


def _localize(localizer: Localizer, pyramids: list, rig: Rig, points: list[QueryPoints], init_base: Pose,
              damping: torch.Tensor) -> RigLocalizationResult:
    cfg = localizer.config
    dev = localizer.device
    dt = cfg.lm.dtype
    clock = StageClock(dev)
    feats, confs, strides = [], [], []
    for name, pyr in zip(rig.names, pyramids):
        f, c = list(pyr.features), list(pyr.confidences)
        s = tuple(getattr(pyr, "strides", None) or DEFAULT_STRIDES)
        if len(f) != 3 or len(c) != 3 or len(s) != 3:
            raise ValueError(f"camera {name!r}: a pyramid needs 3 levels of features, confidences and strides")
        feats.append([x.to(dev) for x in f])
        confs.append([None if x is None else x.to(dev) for x in c])
        strides.append(s)
    pts = [p.to(dev) for p in points]
    cameras = [c.camera.to("cpu", torch.float64) for c in rig.cameras]
    for cam in cameras:
        cam.max_r2  # distortion bound computed once; every scaled level camera inherits it
    # One conversion, in float64 (``Rig.to_anchor``): a one-camera rig starts where the single-camera
    # localizer starts from the same poses converted by the caller.
    anchor_T = rig.to_anchor(init_base.to("cpu", torch.float64).to_4x4().numpy())
    poses = Pose.from_4x4(torch.from_numpy(anchor_T)).to(device=dev, dtype=dt)
    chains = [None if k == rig.anchor else Pose.from_4x4(torch.from_numpy(rig.cam_from_anchor(k))).to(dev, dt)
              for k in range(len(rig))]
    pre = clock.lap()

    def displays(anchor: list[np.ndarray] | None) -> dict[str, list[np.ndarray]]:
        """Every camera's display maps; the anchor's as given (``coarse_to_fine`` makes them on
        success: each map is a device-to-host copy, so none is made twice)."""
        maps = {name: anchor if k == rig.anchor else localizer.display_confidences(confs[k])
                for k, name in enumerate(rig.names)}
        return {name: m for name, m in maps.items() if m is not None}

    def failed(code: Failure, detail: str) -> RigLocalizationResult:
        display = localizer.display_confidences(confs[rig.anchor])
        return _wrap(failure_result(code, detail, clock, pre, display), rig, [0] * (len(rig) + 1), displays(display))

    n = sum(len(p) for p in pts)
    if n == 0:
        return failed(Failure.NO_POINTS, f"the map returned no points for any of the rig's cameras {list(rig.names)}")
    in_front = 0
    for k, p in enumerate(pts):
        cam_poses = poses if chains[k] is None else chains[k] @ poses
        in_front += int(((cam_poses.transform(p.xyz.to(dt))[..., 2] > MIN_DEPTH) & torch.isfinite(p.xyz).all(-1)).sum())
    if in_front == 0:
        return failed(Failure.POINTS_BEHIND_CAMERA, f"none of the {n} points is in front of its camera for any of "
                      f"the {poses.shape[0]} initial poses")
    pad_setting = cfg.pad if cfg.pad is not None else localizer.profile.pad
    pads = [level_pads(pad_setting, [f.shape[-2:] for f in fk]) for fk in feats]

    def views(level: int) -> list[RigView]:
        return [RigView(feats[k][level], confs[k][level], pts[k].xyz, pts[k].features[level],
                        pts[k].confidences[level], cameras[k].scale(1.0 / strides[k][level]), chains[k], pads[k][level])
                for k in range(len(rig)) if len(pts[k]) > 0]

    def run_level(level: int, level_poses: Pose, lm: LMConfig, damping_level: torch.Tensor):
        v = views(level)
        if len(v) == 1 and v[0].cam_from_anchor is None:
            # The anchor alone: the single-camera localizer's own call (fused path and its guard included).
            res = localizer.lm_guard.optimize_level(v[0].features, v[0].confidence, v[0].xyz, v[0].ref_features,
                                                    v[0].ref_confidence, v[0].camera, level_poses, damping_level,
                                                    LMConfig(**{**lm.__dict__, "pad": v[0].pad}))
            return res, localizer.lm_guard.last_path or ""
        return optimize_rig_level(v, level_poses, damping_level, lm), "torch"

    result = localizer.coarse_to_fine(run_level, poses, damping, confs[rig.anchor], clock, pre)
    offsets = [0]
    for p in pts:
        offsets.append(offsets[-1] + len(p))
    return _wrap(result, rig, offsets, displays(result.confidences))


def _wrap(result: LocalizationResult, rig: Rig, offsets: list[int],
          confidences: dict[str, list[np.ndarray]]) -> RigLocalizationResult:
    """The rig's view of a coarse-to-fine result: base poses and per-camera figures."""
    base = None if result.cam_from_world is None else _base_poses(rig, result.cam_from_world[None])[0]
    hyps = None if result.hypotheses is None else _base_poses(rig, result.hypotheses.cam_from_world)
    weights, counts = {}, {}
    if result.point_weights is not None:
        for name, w in zip(rig.names, split_per_camera(torch.from_numpy(result.point_weights), offsets)):
            weights[name] = w.numpy()
            counts[name] = int((w > 0).sum())
    return RigLocalizationResult(result, rig, base, counts, weights, hyps, confidences)


def localize_rig(localizer: Localizer, images: list, rig: Rig, points: list[QueryPoints],
                 init_base_from_world: Pose) -> RigLocalizationResult:
    """Localize a rig from one image per camera (rig order; each (H, W, 3) uint8 RGB or a float
    tensor, sized as its camera): the network once per camera (``Localizer.extract``), then
    ``localize_rig_extracted``. ``Timings.network_s`` is the sum over the cameras."""
    _check_inputs(rig, images, "images")
    networks = [localizer.extract(image, rc.camera) for image, rc in zip(images, rig.cameras)]
    return localize_rig_extracted(localizer, networks, rig, points, init_base_from_world)


def localize_rig_extracted(localizer: Localizer, networks: list[NetworkOutput], rig: Rig, points: list[QueryPoints],
                           init_base_from_world: Pose) -> RigLocalizationResult:
    """The LM's half of ``localize_rig`` on each camera's ``Localizer.extract`` output (rig order;
    extracted beforehand, e.g. on another thread): the same result as ``localize_rig``. Timings:
    the networks' preprocess and network seconds summed over the cameras, total = all the work,
    not any wait between the halves."""
    _check_inputs(rig, networks, "network outputs")
    scaled = Rig([RigCamera(rc.name, n.camera, rc.base_from_camera) for rc, n in zip(rig.cameras, networks)],
                 rig.anchor)
    out = localize_rig_features(localizer, [n.pyramid for n in networks], scaled, points, init_base_from_world,
                                localizer.model.damping().detach())
    pre, network = sum(n.preprocess_s for n in networks), sum(n.network_s for n in networks)
    t = out.result.timings
    out.result.timings = Timings(t.preprocess_s + pre, network, t.levels_s, t.postprocess_s, t.total_s + pre + network)
    return out


__all__ = ["RigLocalizationResult", "localize_rig", "localize_rig_extracted", "localize_rig_features"]
