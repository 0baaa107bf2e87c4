"""A camera rig: several cameras fixed to one vehicle, one pose to estimate (issue 30).

``Rig(cameras, anchor)``: each ``RigCamera`` has a name (its topic / frame group), its intrinsics
(``Camera``, pixel-centre origin) and ``base_from_camera`` (4x4, metres; base_link -> camera optical
frame, REP-103/105: the optical frame has z forward, x right, y down).

One pose convention for the whole rig. The localizer estimates ONE rigid pose per hypothesis.
It is parametrised as the pose of the **anchor** camera, ``anchor_from_world`` (the first camera,
by convention the front one), and every other camera k sees the world through the fixed chain
``cam_k_from_world = cam_k_from_anchor @ anchor_from_world``. This is the same rigid motion as a
``base_from_world`` pose (``base_from_world = base_from_anchor @ anchor_from_world``); the anchor
frame is chosen because PixLoc's learned damping is per axis of a camera's optical frame (vertical
translation ``ty`` and roll about the optical axis ``rz`` damped hard: the upright-car prior), so
the LM update and its damping stay in an optical frame, and a rig of one camera is exactly today's
single-camera LM (``cam_from_anchor`` = identity). ``to_base`` / ``to_anchor`` convert the poses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Camera
from .transforms import (check_transform, invert_transform, make_transform, matrix_from_quat_xyzw,
                         quat_xyzw_from_matrix)

# Values per camera in the flat ``rig_extrinsics`` parameter: x y z (m) qx qy qz qw (base_from_camera).
EXTRINSIC_VALUES = 7
QUAT_NORM_TOL = 1e-2  # |q| may differ from 1 by this much (values typed with 3-4 decimals)


@dataclass(frozen=True)
class RigCamera:
    """One camera of a rig."""

    name: str  # unique within the rig (e.g. "front", "left"); names its topics and heatmaps
    camera: Camera  # single camera (batch shape ()), pixel-centre origin
    base_from_camera: np.ndarray  # (4, 4) float64, base_link -> camera optical frame

    def __post_init__(self):
        if not self.name:
            raise ValueError("a rig camera needs a non-empty name")
        if self.camera.shape != ():
            raise ValueError(f"rig camera {self.name!r}: expected a single Camera, got batch shape "
                             f"{tuple(self.camera.shape)}")
        object.__setattr__(self, "base_from_camera",
                           check_transform(self.base_from_camera, f"base_from_camera of rig camera {self.name!r}"))


class Rig:
    """Cameras rigidly mounted on one base; camera ``anchor`` carries the estimated pose."""

    def __init__(self, cameras, anchor: str | int = 0):
        """cameras: a sequence of ``RigCamera`` (order kept: heatmaps, statuses); anchor: the name
        or index of the camera whose optical frame the LM estimates (module docstring)."""
        self.cameras: tuple[RigCamera, ...] = tuple(cameras)
        if not self.cameras:
            raise ValueError("a rig needs at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"rig camera names must be unique, got {names}")
        self.anchor = self.index(anchor) if isinstance(anchor, str) else int(anchor)
        if not 0 <= self.anchor < len(self.cameras):
            raise ValueError(f"anchor index {anchor} out of range for {len(self.cameras)} cameras")

    def __len__(self) -> int:
        return len(self.cameras)

    def __repr__(self) -> str:
        return f"Rig({list(self.names)}, anchor={self.names[self.anchor]!r})"

    @property
    def names(self) -> tuple[str, ...]:
        """Camera names in rig order."""
        return tuple(c.name for c in self.cameras)

    def index(self, name: str) -> int:
        """Position of the camera called ``name``; ValueError naming the known ones."""
        for i, c in enumerate(self.cameras):
            if c.name == name:
                return i
        raise ValueError(f"no camera {name!r} in the rig (cameras: {list(self.names)})")

    def base_from_anchor(self) -> np.ndarray:
        """(4, 4) base_link -> anchor camera optical frame."""
        return self.cameras[self.anchor].base_from_camera

    def cam_from_anchor(self, k: int) -> np.ndarray:
        """(4, 4) camera k optical frame <- anchor optical frame (identity for the anchor itself)."""
        if k == self.anchor:
            return np.eye(4)
        return invert_transform(self.cameras[k].base_from_camera) @ self.base_from_anchor()

    def to_base(self, anchor_from_world: np.ndarray) -> np.ndarray:
        """(..., 4, 4) anchor_from_world -> (..., 4, 4) base_from_world."""
        return self.base_from_anchor() @ np.asarray(anchor_from_world, np.float64)

    def to_anchor(self, base_from_world: np.ndarray) -> np.ndarray:
        """(..., 4, 4) base_from_world -> (..., 4, 4) anchor_from_world."""
        return invert_transform(self.base_from_anchor()) @ np.asarray(base_from_world, np.float64)

    def subset(self, names) -> "Rig":
        """The rig of the cameras in ``names`` (rig order kept), e.g. those whose frame arrived.
        The anchor stays when present, else the first camera present becomes the anchor."""
        wanted = set(names)
        unknown = wanted - set(self.names)
        if unknown:
            raise ValueError(f"no camera {sorted(unknown)} in the rig (cameras: {list(self.names)})")
        kept = [c for c in self.cameras if c.name in wanted]
        if not kept:
            raise ValueError("a rig subset needs at least one camera")
        anchor = self.names[self.anchor]
        return Rig(kept, anchor if anchor in wanted else kept[0].name)


def extrinsics_from_parameters(names, values) -> dict[str, np.ndarray]:
    """Camera extrinsics from a flat parameter list (ROS parameters cannot nest lists).

    names: N camera names; values: 7 N floats, per camera ``x y z qx qy qz qw`` of
    ``base_from_camera`` (metres; quaternion xyzw, as ROS messages). -> {name: (4, 4) float64}.
    ValueError with the camera's name for a wrong count, a non-finite value or a quaternion
    whose norm is not within ``QUAT_NORM_TOL`` of 1 (rounded values are normalised).
    """
    names = [str(n) for n in names]
    values = np.asarray(list(values), np.float64).reshape(-1)
    if values.size != EXTRINSIC_VALUES * len(names):
        raise ValueError(f"rig extrinsics need {EXTRINSIC_VALUES} values (x y z qx qy qz qw) per camera: "
                         f"{len(names)} cameras {names} -> {EXTRINSIC_VALUES * len(names)} values, got {values.size}")
    out = {}
    for name, row in zip(names, values.reshape(len(names), EXTRINSIC_VALUES)):
        if not np.isfinite(row).all():
            raise ValueError(f"rig extrinsic of camera {name!r} has NaN/inf: {row.tolist()}")
        norm = float(np.linalg.norm(row[3:]))
        if abs(norm - 1.0) > QUAT_NORM_TOL:
            # Far from unit: more likely values in the wrong order than rounding; do not normalise it away.
            raise ValueError(f"rig extrinsic of camera {name!r}: quaternion (qx qy qz qw) {row[3:].tolist()} "
                             f"has norm {norm:.4f}, expected 1 (values per camera: x y z qx qy qz qw)")
        R = matrix_from_quat_xyzw(row[3:])
        out[name] = check_transform(make_transform(R, row[:3]), f"base_from_camera of {name!r}")
    return out


def extrinsics_to_parameters(rig: Rig) -> list[float]:
    """The flat ``x y z qx qy qz qw`` list of every camera's ``base_from_camera`` in rig order
    (the inverse of ``extrinsics_from_parameters``; quaternions with w >= 0)."""
    values: list[float] = []
    for rc in rig.cameras:
        T = rc.base_from_camera
        values += [float(v) for v in T[:3, 3]] + [float(v) for v in quat_xyzw_from_matrix(T[:3, :3])]
    return values


__all__ = ["EXTRINSIC_VALUES", "QUAT_NORM_TOL", "Rig", "RigCamera", "extrinsics_from_parameters",
           "extrinsics_to_parameters"]
