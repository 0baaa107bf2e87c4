"""One instant of a camera rig through the pipeline (issue 30): the frame type, each camera's map
points, and the rig localization whose result the rest of the pipeline takes like a single
camera's.

The pipeline's poses are the anchor camera's (``geometry.rig``): its seeds, hypotheses and judged
candidates use the anchor's ``base_from_cam``, exactly as for one camera; only the points (each
camera retrieves around its own pose on the rig, ``frame_points``) and the localization
(``engine.rig_localizer``: one pose, every camera's residuals) see the other cameras.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..engine.localizer import Localizer
from ..engine.query_points import QueryPoints
from ..engine.results import NetworkOutput
from ..engine.rig_localizer import RigLocalizationResult, localize_rig, localize_rig_extracted
from ..geometry.pose import Pose
from ..geometry.rig import Rig
from ..geometry.metrics import pose_errors
from ..maps.retrieval import MapIndex, RetrievalConfig
from .frame_points import frame_points
from .frames import CameraView, FrameInput, check_frame
from .seeds import Seed, SeedKind


@dataclass
class RigFrameInput:
    """The frames of one instant of a rig: ``images_rgb[k]`` (H, W, 3) uint8 is camera k of ``rig``
    (whose intrinsics are those images'; a camera that dropped out is simply not in ``rig``, see
    ``Rig.subset`` and ``rig_frames.RigFrameGrouper``)."""

    stamp_ns: int
    rig: Rig
    images_rgb: list[np.ndarray]

    def anchor_frame(self) -> FrameInput:
        """The anchor camera's frame: what the pipeline's seeds and judgement work with. ValueError
        for a malformed image of any camera (named) or a count that does not match the rig."""
        if len(self.images_rgb) != len(self.rig):
            raise ValueError(f"{len(self.images_rgb)} images for a rig of {len(self.rig)} cameras {list(self.rig.names)}")
        frames = [FrameInput(self.stamp_ns, image, rc.camera, rc.base_from_camera)
                  for image, rc in zip(self.images_rgb, self.rig.cameras)]
        for name, f in zip(self.rig.names, frames):
            try:
                check_frame(f)
            except ValueError as err:
                raise ValueError(f"camera {name!r}: {err}") from None
        return frames[self.rig.anchor]


def keyframe_camera(name: str, camera_names) -> str | None:
    """The rig camera that took a map keyframe, from its name: ``<camera>_...`` or ``<camera>/...``
    (``synth --rig`` writes ``left_00012.png``); None when the name starts with no camera's name."""
    for sep in ("/", "_"):
        head = name.split(sep, 1)[0]
        if head != name and head in camera_names:
            return head
    return None


def anchor_seeds(seeds: list[Seed], rig: Rig, keyframe_names: list[str], max_seeds: int | None = None,
                 same_m: float = 0.05, same_deg: float = 0.5) -> list[Seed]:
    """Seeds as anchor poses. A keyframe seed is the pose of the camera that took the keyframe: it
    becomes ``map_from_anchor = map_from_keyframe @ cam_k_from_anchor``; keyframes of no camera of
    ``rig`` (another camera's, or one that dropped out) are left out. Other seeds are anchor poses
    already (made from base poses with the anchor's extrinsic).

    A rig's map holds every camera's keyframe of one place (one instant of the mapping drive), and
    they all give the same anchor pose: a keyframe seed within ``same_m`` / ``same_deg`` of an
    earlier seed is left out (it would spend one of the frame's few LM starts on a pose already
    tried), and at most ``max_seeds`` keyframe seeds are kept (None: all), nearest first."""
    out, kept = [], 0
    for seed in seeds:
        if seed.kind != SeedKind.KEYFRAME or seed.keyframe < 0:
            out.append(seed)
            continue
        cam = keyframe_camera(keyframe_names[seed.keyframe], rig.names)
        if cam is None or (max_seeds is not None and kept >= max_seeds):
            continue
        moved = replace(seed, map_from_cam=seed.map_from_cam @ rig.cam_from_anchor(rig.index(cam)))
        if not any(_same_pose(moved.map_from_cam, s.map_from_cam, same_m, same_deg) for s in out):
            out.append(moved)
            kept += 1
    return out


def _same_pose(a: np.ndarray, b: np.ndarray, metres: float, degrees: float) -> bool:
    """Two (4, 4) poses within ``metres`` and ``degrees`` of each other."""
    dt, dr = pose_errors(a[:3, :3], a[:3, 3], b[:3, :3], b[:3, 3])
    return float(dt) <= metres and float(dr) <= degrees


def rig_frame_points(index: MapIndex, config: RetrievalConfig, starts_map_from_anchor: list[np.ndarray], rig: Rig,
                     stamp_ns: int, tracking: bool, max_points: int, seed: int
                     ) -> tuple[list[QueryPoints], list[int]]:
    """Each camera's rows (``frame_points`` around its own pose on the rig, at most ``max_points``
    per camera) for the initial anchor poses ((4, 4) ``map_from_anchor`` each), and the keyframe
    ids of all of them (first seen first)."""
    per_camera, keyframes = [], []
    for k, rc in enumerate(rig.cameras):
        anchor_from_cam = np.linalg.inv(rig.cam_from_anchor(k))
        points, ids = frame_points(index, config, [T @ anchor_from_cam for T in starts_map_from_anchor], rc.camera,
                                   stamp_ns, tracking, max_points, seed + k)
        per_camera.append(points)
        keyframes += [i for i in ids if i not in keyframes]
    return per_camera, keyframes


def concat_points(parts: list[QueryPoints]) -> QueryPoints:
    """The rows of several cameras one after the other (``LocalizationResult.point_weights`` order)."""
    return QueryPoints(torch.cat([p.xyz for p in parts]), [torch.cat([p.features[l] for p in parts]) for l in range(3)],
                       [torch.cat([p.confidences[l] for p in parts]) for l in range(3)],
                       torch.cat([p.point_ids for p in parts]), torch.cat([p.keyframe_ids for p in parts]))


def localize_rig_frame(localizer: Localizer, frame: RigFrameInput, points: list[QueryPoints],
                       starts_map_from_anchor: list[np.ndarray],
                       networks: list[NetworkOutput] | None = None) -> RigLocalizationResult:
    """The rig localized from the initial anchor poses: ``.result`` is the anchor's
    ``LocalizationResult`` (``cam_from_world`` = anchor_from_map, covariance in the anchor frame,
    weights over all cameras' rows). networks: every camera's ``Localizer.extract`` output (rig
    order) when the network already ran (``RelocalizationPipeline.extract``); None: it runs here."""
    base_from_map = frame.rig.to_base(np.linalg.inv(np.stack(starts_map_from_anchor)))
    init = Pose.from_4x4(torch.from_numpy(base_from_map))
    if networks is None:
        return localize_rig(localizer, list(frame.images_rgb), frame.rig, points, init)
    return localize_rig_extracted(localizer, networks, frame.rig, points, init)


def camera_views(out: RigLocalizationResult, points: list[QueryPoints]) -> list[CameraView]:
    """Each camera's points, weights and display maps (rig order; ``points`` as localized)."""
    return [CameraView(rc.name, rc.base_from_camera, p.xyz.numpy(), out.point_weights.get(rc.name),
                       out.confidences.get(rc.name)) for rc, p in zip(out.rig.cameras, points)]


__all__ = ["RigFrameInput", "anchor_seeds", "camera_views", "concat_points", "keyframe_camera", "localize_rig_frame",
           "rig_frame_points"]
