"""rosbag2 (MCAP) drive recordings, written and read with the ``rosbags`` library (pure Python
CDR, no rclpy): camera images and CameraInfo, wheel odometry, GNSS fixes, static transforms and
ground-truth poses.

Shared by the synthetic data generator, the dataset importers, the offline evaluator and the
bag player. Messages are built with the ``rosbags`` type store of ROS 2 Kilted, whose type
hashes (RIHS01) equal Jazzy's for every type used here, so ``ros2 bag`` and rclpy read the
bags. Reading uses the message definitions stored in the bag, so bags recorded by other ROS
distributions (and ROS 1 bags) read too.

Conventions at this boundary: quaternions are x, y, z, w; CameraInfo K/P use the pixel-centre
origin (OpenCV / ROS), the engine's convention; images come back as RGB uint8 (H, W, 3)
whatever encoding was recorded.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

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


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _qos(transient_local: bool):
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1 if transient_local else 10, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class DriveBagWriter:
    """Writes a drive as a rosbag2 (MCAP, version 9) folder; use as a context manager.

    Topics appear on first write. Every message's bag time equals its header stamp.
    """

    def __init__(self, bag_dir: str | Path, topics: DriveTopics = DriveTopics(), *, storage: str = "mcap",
                 overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer
        self.bag_dir = Path(bag_dir)
        self.topics = topics
        if self.bag_dir.exists():
            if not overwrite:
                raise FileExistsError(f"{self.bag_dir} exists; pass overwrite=True to replace it")
            if not (self.bag_dir / "metadata.yaml").exists() and any(self.bag_dir.iterdir()):
                raise FileExistsError(f"{self.bag_dir} exists and is not a rosbag2 folder; not replacing it")
            shutil.rmtree(self.bag_dir)
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"Unsupported storage {storage!r}; use one of {sorted(plugins)}")
        self.bag_dir.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.bag_dir, version=9, storage_plugin=plugins[storage])
        self._writer.open()
        self._connections: dict[str, object] = {}
        self._types = typestore().types

    def __enter__(self) -> "DriveBagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def close(self) -> None:
        """Finish the bag (index and metadata.yaml)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    @property
    def types(self) -> dict:
        """Message classes of the type store, by name ("sensor_msgs/msg/Image"), for ``write_message``."""
        return self._types

    def write_message(self, topic: str, msgtype: str, stamp_ns: int, msg, transient_local: bool = False) -> None:
        """Write any message built from ``types`` (bag time ``stamp_ns``); ``transient_local``
        records the topic as latched."""
        self._write(topic, msgtype, stamp_ns, msg, transient_local)

    def _write(self, topic: str, msgtype: str, stamp_ns: int, msg, transient_local: bool = False) -> None:
        if self._writer is None:
            raise RuntimeError(f"{self.bag_dir}: writer is closed")
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore(),
                                               offered_qos_profiles=[_qos(transient_local)])
            self._connections[topic] = conn
        self._writer.write(conn, int(stamp_ns), bytes(typestore().serialize_cdr(msg, msgtype)))

    def _header(self, stamp_ns: int, frame_id: str):
        T = self._types
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id)

    def write_image(self, stamp_ns: int, image: np.ndarray, encoding: str = "rgb8", frame_id: str = CAMERA_FRAME) -> None:
        """Write an RGB image (H, W, 3) uint8 (or (H, W) grey) as sensor_msgs/Image in ``encoding``
        (``rgb8``, ``bgr8`` or ``mono8``)."""
        data = encode_image(image, encoding)
        h, w = data.shape[:2]
        step = w * (1 if encoding == "mono8" else 3)
        msg = self._types[IMAGE_MSG](header=self._header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                                     is_bigendian=0, step=step, data=np.ascontiguousarray(data).reshape(-1))
        self._write(self.topics.image, IMAGE_MSG, stamp_ns, msg)

    def write_compressed_image(self, stamp_ns: int, image, fmt: str = "jpeg", frame_id: str = CAMERA_FRAME,
                               topic: str | None = None, jpeg_quality: int = 95) -> None:
        """Write sensor_msgs/CompressedImage on ``topic`` (default: the image topic + "/compressed",
        or the image topic itself when it already ends with "/compressed").

        ``image``: encoded bytes in ``fmt`` as they are (e.g. a dataset's JPEG file), or an RGB
        (H, W, 3) uint8 array, encoded here as ``fmt`` ("jpeg" or "png")."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = np.frombuffer(bytes(image), np.uint8)
        else:
            import cv2
            ext = {"jpeg": ".jpg", "png": ".png"}.get(fmt)
            if ext is None:
                raise ValueError(f"Unsupported compressed format {fmt!r}; use 'jpeg' or 'png'")
            params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpeg" else []
            ok, buf = cv2.imencode(ext, np.ascontiguousarray(np.asarray(image)[..., ::-1]), params)
            if not ok:
                raise ValueError(f"OpenCV could not encode the image as {fmt}")
            data = buf.reshape(-1)
        msg = self._types[COMPRESSED_IMAGE_MSG](header=self._header(stamp_ns, frame_id), format=fmt, data=data)
        if topic is None:
            topic = self.topics.image if self.topics.image.endswith("/compressed") else self.topics.image + "/compressed"
        self._write(topic, COMPRESSED_IMAGE_MSG, stamp_ns, msg)

    def write_camera_info(self, stamp_ns: int, info: CameraInfoData) -> None:
        """Write sensor_msgs/CameraInfo (P defaults to [K | 0])."""
        T = self._types
        p = info.p or tuple(np.hstack([info.K, np.zeros((3, 1))]).ravel())
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        msg = T[CAMERA_INFO_MSG](header=self._header(stamp_ns, info.frame_id), height=info.height, width=info.width,
                                 distortion_model=info.distortion_model, d=np.asarray(info.d, np.float64),
                                 k=np.asarray(info.k, np.float64), r=np.asarray(info.r, np.float64),
                                 p=np.asarray(p, np.float64), binning_x=0, binning_y=0, roi=roi)
        self._write(self.topics.camera_info, CAMERA_INFO_MSG, stamp_ns, msg)

    def _pose(self, position, orientation_xyzw):
        T = self._types
        return T["geometry_msgs/msg/Pose"](
            position=T["geometry_msgs/msg/Point"](x=float(position[0]), y=float(position[1]), z=float(position[2])),
            orientation=T["geometry_msgs/msg/Quaternion"](x=float(orientation_xyzw[0]), y=float(orientation_xyzw[1]),
                                                          z=float(orientation_xyzw[2]), w=float(orientation_xyzw[3])))

    def _vector(self, v):
        return self._types["geometry_msgs/msg/Vector3"](x=float(v[0]), y=float(v[1]), z=float(v[2]))

    def write_odometry(self, sample: OdometrySample) -> None:
        """Write nav_msgs/Odometry (pose in ``frame_id``, twist in ``child_frame_id``)."""
        T = self._types
        pose = T["geometry_msgs/msg/PoseWithCovariance"](
            pose=self._pose(sample.position, sample.orientation_xyzw),
            covariance=np.asarray(sample.pose_covariance, np.float64).reshape(36))
        twist = T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](linear=self._vector(sample.linear_velocity),
                                               angular=self._vector(sample.angular_velocity)),
            covariance=np.asarray(sample.twist_covariance, np.float64).reshape(36))
        msg = T[ODOMETRY_MSG](header=self._header(sample.stamp_ns, sample.frame_id), child_frame_id=sample.child_frame_id,
                              pose=pose, twist=twist)
        self._write(self.topics.odometry, ODOMETRY_MSG, sample.stamp_ns, msg)

    def write_gnss(self, fix: GnssFix) -> None:
        """Write sensor_msgs/NavSatFix (covariance in ENU, m^2)."""
        T = self._types
        status = T["sensor_msgs/msg/NavSatStatus"](status=int(fix.status), service=int(fix.service))
        msg = T[NAVSATFIX_MSG](header=self._header(fix.stamp_ns, fix.frame_id), status=status,
                               latitude=float(fix.latitude_deg), longitude=float(fix.longitude_deg),
                               altitude=float(fix.altitude_m),
                               position_covariance=np.asarray(fix.covariance, np.float64).reshape(9),
                               position_covariance_type=int(fix.covariance_type))
        self._write(self.topics.gnss, NAVSATFIX_MSG, fix.stamp_ns, msg)

    def write_static_transforms(self, stamp_ns: int, transforms: Sequence[StaticTransform]) -> None:
        """Write one tf2_msgs/TFMessage on the static topic (recorded as TRANSIENT_LOCAL)."""
        T = self._types
        stamped = [T["geometry_msgs/msg/TransformStamped"](
            header=self._header(stamp_ns, tr.parent_frame), child_frame_id=tr.child_frame,
            transform=T["geometry_msgs/msg/Transform"](
                translation=self._vector(tr.translation),
                rotation=T["geometry_msgs/msg/Quaternion"](x=tr.rotation_xyzw[0], y=tr.rotation_xyzw[1],
                                                           z=tr.rotation_xyzw[2], w=tr.rotation_xyzw[3])))
            for tr in transforms]
        self._write(self.topics.tf_static, TF_MSG, stamp_ns, T[TF_MSG](transforms=stamped), transient_local=True)

    def write_ground_truth(self, sample: PoseSample) -> None:
        """Write geometry_msgs/PoseStamped: the true pose of base_link in ``sample.frame_id``."""
        msg = self._types[POSE_STAMPED_MSG](header=self._header(sample.stamp_ns, sample.frame_id),
                                            pose=self._pose(sample.position, sample.orientation_xyzw))
        self._write(self.topics.ground_truth, POSE_STAMPED_MSG, sample.stamp_ns, msg)


def encode_image(image: np.ndarray, encoding: str) -> np.ndarray:
    """RGB (H, W, 3) or grey (H, W) uint8 -> pixel array in ``encoding`` (rgb8, bgr8, mono8)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if encoding not in ENCODINGS:
        raise ValueError(f"Unsupported image encoding {encoding!r}; the writer supports {ENCODINGS}")
    if image.ndim == 2:
        if encoding == "mono8":
            return image
        image = np.repeat(image[..., None], 3, -1)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W) grey image, got shape {image.shape}")
    if encoding == "rgb8":
        return image
    if encoding == "bgr8":
        return image[..., ::-1]
    import cv2
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

def decode_image(msgtype: str, msg) -> tuple[np.ndarray, str]:
    """A deserialised Image or CompressedImage -> (RGB (H, W, 3) uint8, encoding as recorded).

    Image encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16 (scaled to 8 bit). Compressed:
    whatever OpenCV decodes (jpeg, png). Anything else raises ValueError naming it."""
    if msgtype.endswith("CompressedImage"):
        import cv2
        buf = np.frombuffer(bytes(msg.data), np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"could not decode a CompressedImage of format {msg.format!r}")
        return np.ascontiguousarray(bgr[..., ::-1]), str(msg.format)
    enc = str(msg.encoding).lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "8uc3": 3, "mono16": 2, "16uc1": 2}
    if enc not in channels:
        raise ValueError(f"Unsupported image encoding {msg.encoding!r} (supported: {sorted(channels)} and CompressedImage)")
    bpp = channels[enc]
    rows = raw[: h * step].reshape(h, step)[:, : w * bpp]
    if enc in ("mono16", "16uc1"):
        order = ">u2" if msg.is_bigendian else "<u2"
        grey16 = np.frombuffer(rows.tobytes(), order).reshape(h, w)
        grey = (grey16 / max(int(grey16.max()), 1) * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, -1), str(msg.encoding)
    px = rows.reshape(h, w, bpp)
    if bpp == 1:
        rgb = np.repeat(px, 3, -1)
    elif enc in ("rgb8", "rgba8", "8uc3"):
        rgb = px[..., :3]
    else:  # bgr8, bgra8
        rgb = px[..., 2::-1]
    return np.ascontiguousarray(rgb), str(msg.encoding)


def _camera_info_from_msg(msg) -> CameraInfoData:
    return CameraInfoData(int(msg.width), int(msg.height), str(msg.distortion_model),
                          tuple(float(v) for v in msg.d), tuple(float(v) for v in msg.k),
                          tuple(float(v) for v in msg.r), tuple(float(v) for v in msg.p), str(msg.header.frame_id))


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


_ROLE_TYPES = {
    "image": (IMAGE_MSG, COMPRESSED_IMAGE_MSG),
    "camera_info": (CAMERA_INFO_MSG,),
    "odometry": (ODOMETRY_MSG,),
    "gnss": (NAVSATFIX_MSG,),
    "tf_static": (TF_MSG,),
    "ground_truth": (POSE_STAMPED_MSG,),
}


def _resolve_topics(reader, topics: DriveTopics) -> DriveTopics:
    """Keep each named topic that exists; otherwise take the only topic of the right type."""
    by_topic = {c.topic: c.msgtype for c in reader.connections}
    resolved = {}
    for role, types in _ROLE_TYPES.items():
        name = getattr(topics, role)
        if name in by_topic and by_topic[name] in types:
            resolved[role] = name
            continue
        candidates = sorted({t for t, m in by_topic.items() if m in types and (role != "tf_static" or "static" in t)})
        resolved[role] = candidates[0] if len(candidates) == 1 else None
    return DriveTopics(**resolved)


def _open_reader(bag_dir: Path):
    from rosbags.highlevel import AnyReader
    bag_dir = Path(bag_dir)
    if not bag_dir.exists():
        raise FileNotFoundError(f"no bag at {bag_dir}")
    reader = AnyReader([bag_dir], default_typestore=typestore())
    reader.open()
    return reader


def iter_frames(bag_dir: str | Path, topics: DriveTopics = DriveTopics()) -> Iterator[ImageFrame]:
    """Yield the camera frames one by one (RGB), each with the latest CameraInfo at or before it.

    Memory stays at one image, for long recordings."""
    reader = _open_reader(Path(bag_dir))
    try:
        resolved = _resolve_topics(reader, topics)
        if resolved.image is None:
            return
        wanted = [c for c in reader.connections if c.topic in (resolved.image, resolved.camera_info)]
        infos: list[tuple[int, CameraInfoData]] = []
        pending: list[tuple[int, str, object, str]] = []
        for conn, _, raw in reader.messages(connections=wanted):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == resolved.camera_info:
                infos.append((_stamp_ns(msg.header), _camera_info_from_msg(msg)))
                continue
            pending.append((_stamp_ns(msg.header), str(msg.header.frame_id), msg, conn.msgtype))
            # CameraInfo is published with (or just after) its image: hold a frame until a
            # message with a later log time arrives.
            while len(pending) > 1:
                yield _frame(*pending.pop(0), infos)
        for item in pending:
            yield _frame(*item, infos)
    finally:
        reader.close()


def _frame(stamp, frame_id, msg, msgtype, infos) -> ImageFrame:
    image, encoding = decode_image(msgtype, msg)
    return ImageFrame(stamp, image, frame_id, encoding, _frame_info(stamp, infos))


def read_drive(bag_dir: str | Path, topics: DriveTopics = DriveTopics(), *, load_images: bool = True) -> Drive:
    """Read a drive recording into typed, stamp-sorted lists.

    Topics not found under their names are looked up by message type (when exactly one topic
    has it). With ``load_images=False`` frames carry an empty (0, 0, 3) image (fast metadata).
    """
    bag_dir = Path(bag_dir)
    reader = _open_reader(bag_dir)
    try:
        resolved = _resolve_topics(reader, topics)
        roles = {getattr(resolved, r): r for r in _ROLE_TYPES if getattr(resolved, r) is not None}
        odometry, gnss, tfs, truth, infos, images = [], [], [], [], [], []
        for conn, _, raw in reader.messages(connections=[c for c in reader.connections if c.topic in roles]):
            role = roles[conn.topic]
            msg = reader.deserialize(raw, conn.msgtype)
            if role == "image":
                # Without load_images only the header is kept (decoding pixels is the slow part).
                images.append((_stamp_ns(msg.header), str(msg.header.frame_id), msg if load_images else None, conn.msgtype))
            elif role == "camera_info":
                infos.append((_stamp_ns(msg.header), _camera_info_from_msg(msg)))
            elif role == "odometry":
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                tl, ta = msg.twist.twist.linear, msg.twist.twist.angular
                odometry.append(OdometrySample(
                    _stamp_ns(msg.header), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w),
                    np.asarray(msg.pose.covariance, np.float64).reshape(6, 6), (tl.x, tl.y, tl.z), (ta.x, ta.y, ta.z),
                    np.asarray(msg.twist.covariance, np.float64).reshape(6, 6), str(msg.header.frame_id),
                    str(msg.child_frame_id)))
            elif role == "gnss":
                gnss.append(GnssFix(_stamp_ns(msg.header), float(msg.latitude), float(msg.longitude), float(msg.altitude),
                                    np.asarray(msg.position_covariance, np.float64).reshape(3, 3),
                                    int(msg.position_covariance_type), int(msg.status.status), int(msg.status.service),
                                    str(msg.header.frame_id)))
            elif role == "tf_static":
                for tr in msg.transforms:
                    t, q = tr.transform.translation, tr.transform.rotation
                    tfs.append(StaticTransform(str(tr.header.frame_id), str(tr.child_frame_id), (t.x, t.y, t.z),
                                               (q.x, q.y, q.z, q.w)))
            elif role == "ground_truth":
                p, q = msg.pose.position, msg.pose.orientation
                truth.append(PoseSample(_stamp_ns(msg.header), (p.x, p.y, p.z), (q.x, q.y, q.z, q.w), str(msg.header.frame_id)))
    finally:
        reader.close()
    infos.sort(key=lambda x: x[0])
    frames = []
    for stamp, frame_id, msg, msgtype in sorted(images, key=lambda x: x[0]):
        if msg is None:
            frames.append(ImageFrame(stamp, np.zeros((0, 0, 3), np.uint8), frame_id, "", _frame_info(stamp, infos)))
        else:
            frames.append(_frame(stamp, frame_id, msg, msgtype, infos))
    key = lambda x: x.stamp_ns
    return Drive(bag_dir, resolved, frames, sorted(odometry, key=key), sorted(gnss, key=key), tfs, sorted(truth, key=key))


def _frame_info(stamp: int, infos: list[tuple[int, CameraInfoData]]) -> CameraInfoData | None:
    """The CameraInfo with the latest stamp at or before ``stamp`` (``infos`` sorted by stamp)."""
    info = None
    for s, candidate in infos:
        if s <= stamp:
            info = candidate
        else:
            break
    return info


def iter_raw(bag_dir: str | Path, topics: Sequence[str] | None = None) -> Iterator[RawMessage]:
    """Yield every message (or those on ``topics``) in log-time order as serialised CDR."""
    reader = _open_reader(Path(bag_dir))
    try:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, stamp, raw in reader.messages(connections=conns):
            yield RawMessage(conn.topic, conn.msgtype, int(stamp), bytes(raw))
    finally:
        reader.close()


def bag_topics(bag_dir: str | Path) -> list[BagTopic]:
    """The topics of a recording with their type, message count and latching (for a player)."""
    from rosbags.interfaces import QosDurability
    reader = _open_reader(Path(bag_dir))
    try:
        out = {}
        for c in reader.connections:
            qos = getattr(c.ext, "offered_qos_profiles", []) or []
            latched = any(q.durability == QosDurability.TRANSIENT_LOCAL for q in qos) or c.topic == "/tf_static"
            prev = out.get(c.topic)
            count = c.msgcount + (prev.count if prev else 0)
            out[c.topic] = BagTopic(c.topic, c.msgtype, count, latched or (prev.transient_local if prev else False))
        return sorted(out.values(), key=lambda t: t.name)
    finally:
        reader.close()


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
