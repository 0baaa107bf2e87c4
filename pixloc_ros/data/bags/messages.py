"""What a drive recording holds, as plain Python types: topic names, frame ids, message type names,
and one dataclass per message kind (CameraInfo, static transform, odometry, GNSS, pose, image frame),
converted at this boundary: quaternions are x, y, z, w; CameraInfo K/P use the pixel-centre origin
(OpenCV / ROS), the engine's convention; images are RGB uint8 (H, W, 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pixloc_ros.core.geometry.transforms import (invert_transform, make_transform, matrix_from_quat_xyzw,
    quat_xyzw_from_matrix)


MAP_FRAME = "map"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
CAMERA_FRAME = "camera_optical_frame"
IMAGE_MSG = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_MSG = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_MSG = "sensor_msgs/msg/CameraInfo"
ODOMETRY_MSG = "nav_msgs/msg/Odometry"
NAVSATFIX_MSG = "sensor_msgs/msg/NavSatFix"
TF_MSG = "tf2_msgs/msg/TFMessage"
POSE_STAMPED_MSG = "geometry_msgs/msg/PoseStamped"
ENCODINGS = ("rgb8", "bgr8", "mono8")  # what the writer produces
# sensor_msgs/NavSatStatus and NavSatFix constants
NAVSAT_STATUS_FIX = 0
NAVSAT_SERVICE_GPS = 1
COVARIANCE_TYPE_DIAGONAL_KNOWN = 2


def typestore():
    """The ``rosbags`` type store used to build messages (ROS 2 Kilted; cached)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore
        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE


_TYPESTORE = None


@dataclass(frozen=True)
class DriveTopics:
    """Topic names of a drive recording."""

    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    odometry: str = "/odom"
    gnss: str = "/gnss/fix"
    tf_static: str = "/tf_static"
    ground_truth: str = "/ground_truth/pose"


def rig_camera_topics(name: str) -> DriveTopics:
    """The topics of camera ``name`` in a rig recording (``/<name>/image_raw``, ``/<name>/camera_info``;
    the drive's other topics as usual): the layout ``synth --rig`` writes and rig replays read."""
    return DriveTopics(image=f"/{name}/image_raw", camera_info=f"/{name}/camera_info")


def rig_camera_frame(name: str) -> str:
    """The optical frame id of camera ``name`` in a rig recording."""
    return f"{name}_camera_optical_frame"


# ---------------------------------------------------------------------------------------------
# Typed contents
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CameraInfoData:
    """The fields of sensor_msgs/CameraInfo (pixel-centre origin, as OpenCV and the engine)."""

    width: int
    height: int
    distortion_model: str
    d: tuple[float, ...]
    k: tuple[float, ...]  # 9 values, row-major 3x3
    r: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    p: tuple[float, ...] = ()  # 12 values, row-major 3x4; empty: derived from k
    frame_id: str = CAMERA_FRAME

    @classmethod
    def from_pinhole(cls, width: int, height: int, fx: float, fy: float, cx: float, cy: float,
                     dist: Sequence[float] = (), frame_id: str = CAMERA_FRAME) -> "CameraInfoData":
        """A ``plumb_bob`` CameraInfo from engine intrinsics (pixel-centre cx, cy; k1 k2 p1 p2 k3)."""
        if len(dist) > 5:
            raise ValueError(f"plumb_bob takes at most 5 distortion values, got {len(dist)}")
        d = tuple(float(v) for v in dist) + (0.0,) * (5 - len(dist))
        k = (float(fx), 0.0, float(cx), 0.0, float(fy), float(cy), 0.0, 0.0, 1.0)
        p = (float(fx), 0.0, float(cx), 0.0, 0.0, float(fy), float(cy), 0.0, 0.0, 0.0, 1.0, 0.0)
        return cls(int(width), int(height), "plumb_bob", d, k, p=p, frame_id=frame_id)

    @classmethod
    def from_camera(cls, camera, frame_id: str = CAMERA_FRAME) -> "CameraInfoData":
        """From an engine ``pixloc_ros.core.geometry.camera.Camera`` (one camera, pixel-centre convention,
        OpenCV k1 k2 p1 p2 k3 -> plumb_bob)."""
        w, h, fx, fy, cx, cy, *dist = (float(v) for v in np.asarray(camera.data.detach().cpu(), np.float64).reshape(-1))
        return cls.from_pinhole(int(round(w)), int(round(h)), fx, fy, cx, cy, dist, frame_id)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix."""
        return np.asarray(self.k, np.float64).reshape(3, 3)

    @property
    def fx(self) -> float:
        return float(self.k[0])

    @property
    def fy(self) -> float:
        return float(self.k[4])

    @property
    def cx(self) -> float:
        return float(self.k[2])

    @property
    def cy(self) -> float:
        return float(self.k[5])


@dataclass(frozen=True)
class StaticTransform:
    """``parent_from_child`` as translation (metres) and quaternion (x, y, z, w)."""

    parent_frame: str
    child_frame: str
    translation: tuple[float, float, float]
    rotation_xyzw: tuple[float, float, float, float]

    @classmethod
    def from_matrix(cls, parent_frame: str, child_frame: str, parent_from_child: np.ndarray) -> "StaticTransform":
        """From a (4, 4) rigid transform."""
        T = np.asarray(parent_from_child, np.float64)
        return cls(parent_frame, child_frame, tuple(float(v) for v in T[:3, 3]),
                   tuple(float(v) for v in quat_xyzw_from_matrix(T[:3, :3])))

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) ``parent_from_child``."""
        return make_transform(matrix_from_quat_xyzw(self.rotation_xyzw), self.translation)


@dataclass(frozen=True)
class OdometrySample:
    """nav_msgs/Odometry: pose of ``child_frame_id`` in ``frame_id`` plus twist in the child frame."""

    stamp_ns: int
    position: tuple[float, float, float]
    orientation_xyzw: tuple[float, float, float, float]
    pose_covariance: np.ndarray  # (6, 6) x y z rx ry rz
    linear_velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    angular_velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    twist_covariance: np.ndarray = field(default_factory=lambda: np.zeros((6, 6)))
    frame_id: str = ODOM_FRAME
    child_frame_id: str = BASE_FRAME

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) ``frame_from_child`` (odom_from_base)."""
        return make_transform(matrix_from_quat_xyzw(self.orientation_xyzw), self.position)


@dataclass(frozen=True)
class GnssFix:
    """sensor_msgs/NavSatFix; ``covariance`` is the position covariance in ENU, m^2."""

    stamp_ns: int
    latitude_deg: float
    longitude_deg: float
    altitude_m: float
    covariance: np.ndarray  # (3, 3)
    covariance_type: int = COVARIANCE_TYPE_DIAGONAL_KNOWN
    status: int = NAVSAT_STATUS_FIX
    service: int = NAVSAT_SERVICE_GPS
    frame_id: str = BASE_FRAME


@dataclass(frozen=True)
class PoseSample:
    """geometry_msgs/PoseStamped: pose of the robot (``frame_from_base``) in ``frame_id``."""

    stamp_ns: int
    position: tuple[float, float, float]
    orientation_xyzw: tuple[float, float, float, float]
    frame_id: str = MAP_FRAME

    @classmethod
    def from_matrix(cls, stamp_ns: int, frame_from_base: np.ndarray, frame_id: str = MAP_FRAME) -> "PoseSample":
        T = np.asarray(frame_from_base, np.float64)
        return cls(int(stamp_ns), tuple(float(v) for v in T[:3, 3]),
                   tuple(float(v) for v in quat_xyzw_from_matrix(T[:3, :3])), frame_id)

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) ``frame_from_base``."""
        return make_transform(matrix_from_quat_xyzw(self.orientation_xyzw), self.position)


@dataclass
class ImageFrame:
    """One camera image as RGB, with the CameraInfo of the same stamp (or the latest before it)."""

    stamp_ns: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    frame_id: str
    encoding: str  # as recorded ("rgb8", "bgr8", "mono8", "jpeg", ...)
    camera_info: CameraInfoData | None = None


@dataclass
class Drive:
    """Everything a drive recording holds, typed and sorted by stamp."""

    bag_dir: Path
    topics: DriveTopics  # the topics actually read (None fields: absent)
    frames: list[ImageFrame]
    odometry: list[OdometrySample]
    gnss: list[GnssFix]
    static_transforms: list[StaticTransform]
    ground_truth: list[PoseSample]

    @property
    def camera_info(self) -> CameraInfoData | None:
        """The first CameraInfo of the recording (most cameras never change theirs)."""
        return next((f.camera_info for f in self.frames if f.camera_info is not None), None)

    def static_transform(self, parent_frame: str, child_frame: str) -> np.ndarray:
        """(4, 4) ``parent_from_child`` chained through the static transforms; KeyError if unknown."""
        return static_transform_chain(self.static_transforms, parent_frame, child_frame)

    def base_from_camera(self, base_frame: str = BASE_FRAME) -> np.ndarray:
        """(4, 4) extrinsic of the camera (frame of the images) on ``base_frame``."""
        if not self.frames:
            raise KeyError("the drive has no images, so no camera frame")
        return self.static_transform(base_frame, self.frames[0].frame_id)


@dataclass(frozen=True)
class RawMessage:
    """A serialised message as stored: what a player republishes."""

    topic: str
    msgtype: str  # e.g. "sensor_msgs/msg/Image"
    stamp_ns: int  # the bag's receive (log) time
    data: bytes  # CDR


@dataclass(frozen=True)
class BagTopic:
    name: str
    msgtype: str
    count: int
    transient_local: bool  # offered with TRANSIENT_LOCAL durability (latched, e.g. /tf_static)


def static_transform_chain(transforms: Sequence[StaticTransform], parent_frame: str, child_frame: str) -> np.ndarray:
    """(4, 4) ``parent_from_child`` through a tree of static transforms (either direction)."""
    edges: dict[str, list[tuple[str, np.ndarray]]] = {}
    for tr in transforms:
        T = tr.matrix
        edges.setdefault(tr.parent_frame, []).append((tr.child_frame, T))
        edges.setdefault(tr.child_frame, []).append((tr.parent_frame, invert_transform(T)))
    # Breadth-first search from the parent frame.
    frontier = [(parent_frame, np.eye(4))]
    seen = {parent_frame}
    while frontier:
        frame, parent_from_frame = frontier.pop(0)
        if frame == child_frame:
            return parent_from_frame
        for nxt, frame_from_next in edges.get(frame, []):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, parent_from_frame @ frame_from_next))
    raise KeyError(f"no static transform chain from {parent_frame!r} to {child_frame!r}")
