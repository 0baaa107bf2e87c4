"""Writing drive recordings: ``DriveBagWriter`` puts images (rgb8, bgr8, mono8 or jpeg), CameraInfo,
odometry, GNSS fixes, static transforms and ground-truth poses into a rosbag2 (MCAP) with the
``rosbags`` type store of ROS 2 Kilted, whose type hashes (RIHS01) equal Jazzy's for every type used
here, so ``ros2 bag`` and rclpy read the bags.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from .messages import (CAMERA_FRAME, CAMERA_INFO_MSG, COMPRESSED_IMAGE_MSG, CameraInfoData, DriveTopics,
    ENCODINGS, GnssFix, IMAGE_MSG, NAVSATFIX_MSG, ODOMETRY_MSG, OdometrySample, POSE_STAMPED_MSG, PoseSample,
    StaticTransform, TF_MSG, typestore)


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

    def write_image(self, stamp_ns: int, image: np.ndarray, encoding: str = "rgb8", frame_id: str = CAMERA_FRAME,
                    topic: str | None = None) -> None:
        """Write an RGB image (H, W, 3) uint8 (or (H, W) grey) as sensor_msgs/Image in ``encoding``
        (``rgb8``, ``bgr8`` or ``mono8``) on ``topic`` (default: the drive's image topic; a rig's
        other cameras have their own)."""
        data = encode_image(image, encoding)
        h, w = data.shape[:2]
        step = w * (1 if encoding == "mono8" else 3)
        msg = self._types[IMAGE_MSG](header=self._header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                                     is_bigendian=0, step=step, data=np.ascontiguousarray(data).reshape(-1))
        self._write(topic or self.topics.image, IMAGE_MSG, stamp_ns, msg)

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

    def write_camera_info(self, stamp_ns: int, info: CameraInfoData, topic: str | None = None) -> None:
        """Write sensor_msgs/CameraInfo (P defaults to [K | 0]) on ``topic`` (default: the drive's)."""
        T = self._types
        p = info.p or tuple(np.hstack([info.K, np.zeros((3, 1))]).ravel())
        roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        msg = T[CAMERA_INFO_MSG](header=self._header(stamp_ns, info.frame_id), height=info.height, width=info.width,
                                 distortion_model=info.distortion_model, d=np.asarray(info.d, np.float64),
                                 k=np.asarray(info.k, np.float64), r=np.asarray(info.r, np.float64),
                                 p=np.asarray(p, np.float64), binning_x=0, binning_y=0, roi=roi)
        self._write(topic or self.topics.camera_info, CAMERA_INFO_MSG, stamp_ns, msg)

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
