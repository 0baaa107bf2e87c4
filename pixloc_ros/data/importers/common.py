"""Shared types and pose maths of the dataset importers.

An importer (CMU Seasons, RobotCar Seasons, a generic image sequence) only *reads* a dataset
into an :class:`ImportPlan`: cameras in COLMAP's terms, the posed reference images of the map,
the query sequences, the camera extrinsics. ``output.write_import`` turns any plan into the
synthetic world's layout (docs/architecture.md), so the rest of the tools accept both.

Conventions: poses are ``cam_from_world`` (R (3, 3), t (3,)) float64 in the *dataset's* world
frame until ``write_import`` moves them into the map frame; stamps are integer nanoseconds;
camera parameters keep COLMAP's pixel convention (origin at the corner of the top-left pixel)
and are converted to CameraInfo's pixel-centre convention by ``core.camera.Camera``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.transforms import make_transform

# base_link (REP-103: x forward, y left, z up) from a camera optical frame (x right, y down,
# z forward): the camera's z is base x, its x is -base y, its y is -base z. Used as the
# extrinsic when a dataset publishes none, so that base_link is the camera, upright.
BASE_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                              [-1.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class CameraSpec:
    """One physical camera, as COLMAP stores it (pixel origin at the top-left pixel's corner)."""

    name: str  # dataset's camera id ("c0", "rear", ...); also the ROS frame suffix
    model: str  # COLMAP model name: "OPENCV", "PINHOLE", ...
    width: int  # pixels
    height: int  # pixels
    params: tuple[float, ...]  # COLMAP order and pixel convention


@dataclass
class Frame:
    """One image of the dataset with its (optional) ground-truth pose."""

    image_path: Path  # the source image file
    name: str  # its name in the map (relative path, '/' separated), unique in the import
    stamp_ns: int  # capture time, nanoseconds (Unix epoch where the dataset gives one)
    camera: str  # key into ImportPlan.cameras
    R: np.ndarray | None = None  # (3, 3) rotation of cam_from_world; None when the pose is unknown
    t: np.ndarray | None = None  # (3,) translation of cam_from_world, metres

    @property
    def has_pose(self) -> bool:
        """True when the frame carries a ground-truth pose."""
        return self.R is not None and self.t is not None

    @property
    def center(self) -> np.ndarray:
        """Camera centre in the world, (3,) metres."""
        if not self.has_pose:
            raise ValueError(f"frame {self.name!r} has no pose")
        return -self.R.T @ self.t


@dataclass
class ImportPlan:
    """Everything an importer read; ``output.write_import`` writes it out."""

    source: str  # "cmu", "robotcar", "sequence"
    dataset_root: Path
    cameras: dict[str, CameraSpec]
    reference: list[Frame]  # posed images that make the map
    queries: dict[str, list[Frame]]  # sequence name -> frames in timestamp order
    # camera name -> (4, 4) base_from_cam; cameras not listed get base_link = camera (upright).
    base_from_cam: dict[str, np.ndarray] = field(default_factory=dict)
    # COLMAP model(s) of the reference images, in the dataset's world (several: merged slices)
    sfm_model: Path | list[Path] | None = None
    notes: dict[str, str] = field(default_factory=dict)  # provenance lines for import.json
    # A vehicle with several cameras (issue 30): the rig's cameras, the first the anchor (its
    # base_from_cam_of is the rig's base_link), and its drives: name -> every camera's frames of
    # one drive in timestamp order. Empty: one camera, ``queries`` only.
    rig_cameras: list[str] = field(default_factory=list)
    rig_queries: dict[str, list[Frame]] = field(default_factory=dict)

    def base_from_cam_of(self, camera: str) -> np.ndarray:
        """(4, 4) base_from_cam of ``camera``: the published extrinsic, or the upright identity."""
        if camera in self.base_from_cam:
            return np.asarray(self.base_from_cam[camera], np.float64)
        T = np.eye(4)
        T[:3, :3] = BASE_FROM_OPTICAL
        return T

    def map_name(self, frame: Frame) -> str:
        """A reference image's name in the map: ``<camera>/<name>`` for a rig (the rig pipeline reads
        a keyframe's camera from the head of its name, ``core.tracking.rig_observe.keyframe_camera``),
        else the dataset's name."""
        return f"{frame.camera}/{frame.name}" if self.rig_cameras else frame.name


# ---------------------------------------------------------------------------------------------
# Pose helpers of the importers (numpy, float64; the general ones are core/geometry/transforms.py)
# ---------------------------------------------------------------------------------------------

def center_to_translation(R: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Camera centre c (3,) of a cam_from_world rotation R (3, 3) -> translation t = -R c."""
    return -np.asarray(R, np.float64) @ np.asarray(center, np.float64)


def invert_rigid(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of the rigid transform x -> R x + t, as (R^T, -R^T t)."""
    R = np.asarray(R, np.float64)
    return R.T, -R.T @ np.asarray(t, np.float64)


@dataclass(frozen=True)
class RigidTransform:
    """``a_from_b`` as (R (3, 3), t (3,)): x_a = R x_b + t."""

    R: np.ndarray
    t: np.ndarray

    @classmethod
    def identity(cls) -> "RigidTransform":
        return cls(np.eye(3), np.zeros(3))

    def inverse(self) -> "RigidTransform":
        R, t = invert_rigid(self.R, self.t)
        return RigidTransform(R, t)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points (..., 3) -> (..., 3)."""
        return np.asarray(points, np.float64) @ self.R.T + self.t

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        return make_transform(self.R, self.t)


def cam_from_new_world(R: np.ndarray, t: np.ndarray, new_from_old: RigidTransform
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Re-express a cam_from_world pose in another world: cam_from_new = cam_from_old @ old_from_new."""
    old_from_new = new_from_old.inverse()
    R_new = np.asarray(R, np.float64) @ old_from_new.R
    t_new = np.asarray(R, np.float64) @ old_from_new.t + np.asarray(t, np.float64)
    return R_new, t_new


def leveling_transform(frames: list[Frame], min_agreement: float = 0.8) -> RigidTransform:
    """``map_from_world`` that puts the world's "up" on +z and the origin at the frames' centroid.

    Car datasets publish poses in an arbitrary SfM frame (or a camera frame, as KITTI); the map
    frame of this project is z-up (REP-103), which the GNSS prior, RViz and the 2D initial pose
    rely on. Up is estimated as the mean of the cameras' "up" direction (-y of the optical frame,
    in the world: -R[1, :]); car cameras are level to a few degrees. The rotation is the
    smallest one taking that direction to +z (heading kept). Raises ValueError when the cameras
    disagree on up (mean length < ``min_agreement``: not a car-mounted, upright rig).
    """
    posed = [f for f in frames if f.has_pose]
    if not posed:
        raise ValueError("cannot level the world: no posed frame")
    ups = np.stack([-f.R[1, :] for f in posed])
    mean_up = ups.mean(0)
    agreement = float(np.linalg.norm(mean_up))
    if agreement < min_agreement:
        raise ValueError(f"the cameras disagree on the up direction (|mean up| = {agreement:.2f} < "
                         f"{min_agreement}); import with --frame keep")
    up = mean_up / agreement
    rot, _ = Rotation.align_vectors([[0.0, 0.0, 1.0]], [up])
    R = rot.as_matrix()
    centroid = np.stack([f.center for f in posed]).mean(0)
    return RigidTransform(R, -R @ centroid)


# ---------------------------------------------------------------------------------------------
# Small parsing helpers
# ---------------------------------------------------------------------------------------------

def read_table(path: Path) -> list[tuple[int, list[str]]]:
    """Whitespace-split, non-empty, non-comment ('#') lines of a text file, with 1-based line numbers."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append((i, line.split()))
    return rows


def parse_floats(values: list[str], where: str) -> list[float]:
    """Floats of ``values``; ValueError naming ``where`` (file:line) on a bad number."""
    try:
        return [float(v) for v in values]
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def split_by_gap(frames: list[Frame], gap_s: float | None) -> list[list[Frame]]:
    """Sort ``frames`` by stamp and cut them where consecutive stamps are more than ``gap_s`` apart.

    ``gap_s`` None keeps one sequence. Each sub-list is in timestamp order.
    """
    ordered = sorted(frames, key=lambda f: (f.stamp_ns, f.name))
    if not ordered:
        return []
    if gap_s is None:
        return [ordered]
    out, current = [], [ordered[0]]
    for prev, f in zip(ordered, ordered[1:]):
        if (f.stamp_ns - prev.stamp_ns) > gap_s * 1e9:
            out.append(current)
            current = []
        current.append(f)
    out.append(current)
    return out
