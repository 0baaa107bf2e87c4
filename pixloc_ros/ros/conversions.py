"""Pure conversions between ROS 2 messages and the engine's and data layer's types.

No node, no state: every function takes a message (or array) and returns a value, and raises
``ValueError`` with a specific message on bad input (the node logs it and skips the frame).

Conventions at this boundary (docs/architecture.md):
- quaternions are xyzw, as in ROS messages and scipy;
- poses are 4x4 homogeneous ``a_from_b`` matrices (float64), as the pipeline takes them;
- covariances are (6, 6) in ROS order (x, y, z, rot_x, rot_y, rot_z);
- stamps are integer nanoseconds.

Images: cv_bridge is used where it is installed and imports (a ROS 2 install); the PyPI wheels have
none, and apt's cv_bridge fails to import under numpy 2, so the same encodings are also converted
here with numpy + OpenCV >= 4.5.4 (``_raw_image_to_rgb``), tested in test/test_ros_conversions.py.
"""
from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose as PoseMsg, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix, NavSatStatus
from std_msgs.msg import Header

from pixloc_ros.core.geometry.transforms import make_transform, matrix_from_quat_xyzw, quat_xyzw_from_matrix
from pixloc_ros.data.bags import GnssFix, OdometrySample
from pixloc_ros.ros import compat

if TYPE_CHECKING:
    from pixloc_ros.core.geometry.camera import Camera

# Raw encodings of sensor_msgs/Image that image_to_rgb accepts (REP-2004 names, as cv_bridge).
# ROS names a Bayer pattern by its top-left 2x2 block read row by row; OpenCV's original names use
# the 2nd and 3rd pixels of the *second* row, so ROS rggb is OpenCV's "BG" (cv_bridge's own table
# maps them the same way). OpenCV >= 4.5.5 has RGGB-style aliases of the same codes; 4.5.4
# (Ubuntu 22.04, Humble) has only these.
_BAYER_CODES = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}
# encoding -> (channels, numpy dtype)
_RAW_LAYOUTS = {
    "rgb8": (3, np.uint8), "bgr8": (3, np.uint8), "rgba8": (4, np.uint8), "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8), "8UC1": (1, np.uint8), "8UC3": (3, np.uint8),
    "mono16": (1, np.uint16), "16UC1": (1, np.uint16),
    "rgb16": (3, np.uint16), "bgr16": (3, np.uint16),
    **{f"bayer_{p}8": (1, np.uint8) for p in _BAYER_CODES},
    **{f"bayer_{p}16": (1, np.uint16) for p in _BAYER_CODES},
}
SUPPORTED_ENCODINGS = tuple(sorted(_RAW_LAYOUTS))

_CV_BRIDGE_FIX = "apt's cv_bridge needs numpy < 2 (README, install)"


class _Bridge:
    """cv_bridge when it is installed and works, else nothing (the built-in conversion runs).

    Loaded at the first image, not at import; any failure (an import that raises anything, a
    bridge that raises something other than a conversion error) switches to the built-in
    conversion for good, with one log line."""

    def __init__(self):
        self._loaded = False
        self.bridge = None
        self.error_types: tuple = ()

    def get(self):
        if not self._loaded:
            self._loaded = True
            module = compat.optional_module("cv_bridge", fix=_CV_BRIDGE_FIX)
            try:
                if module is not None:
                    self.bridge = module.CvBridge()
                    self.error_types = (module.CvBridgeError, TypeError, cv2.error)
            except Exception as err:  # noqa: BLE001 - a broken install: fall back (module doc)
                self.disable(err)
        return self.bridge

    def disable(self, err: BaseException) -> None:
        self.bridge = None
        compat.warn_once("cv_bridge", f"cv_bridge failed ({type(err).__name__}: {err}); converting images with "
                                      f"pixloc_ros' built-in conversion from now on. {_CV_BRIDGE_FIX}")


_cv_bridge = _Bridge()


# ---------------------------------------------------------------------------------------- stamps
def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time."""
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"A ROS time cannot be negative: {ns} ns")
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    """std_msgs/Header with the given stamp (ns) and frame id."""
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------------------------------- images
def _to_uint8(img: np.ndarray) -> np.ndarray:
    """uint16 images are scaled to the full 8-bit range (x * 255 / 65535, as cv_bridge does)."""
    if img.dtype == np.uint8:
        return img
    return np.round(img.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def _raw_image_to_rgb(msg: Image) -> np.ndarray:
    """Hand-written equivalent of cv_bridge's ``imgmsg_to_cv2(msg, "rgb8")`` (none on PyPI)."""
    layout = _RAW_LAYOUTS.get(msg.encoding)
    if layout is None:
        raise ValueError(f"Unsupported image encoding {msg.encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
    channels, dtype = layout
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width == 0 or height == 0:
        raise ValueError(f"Empty image ({width}x{height}, encoding {msg.encoding})")
    row_bytes = width * channels * np.dtype(dtype).itemsize
    if step < row_bytes:
        raise ValueError(f"Image step {step} is smaller than a row of {width} {msg.encoding} pixels "
                         f"({row_bytes} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ValueError(f"Image data holds {data.size} bytes, expected step*height = {step}*{height} = "
                         f"{step * height}")
    # Rows may be padded to `step` bytes: cut the padding, then view as pixels.
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype)
    if pixels.itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == "big"):
        pixels = pixels.byteswap()
    pixels = pixels.reshape(height, width, channels)
    enc = msg.encoding
    if enc.startswith("bayer_"):
        # Demosaic at full depth, then scale: keeps the interpolation exact for 16-bit sensors.
        return _to_uint8(cv2.cvtColor(pixels[..., 0], _BAYER_CODES[enc[6:10]]))
    pixels = _to_uint8(pixels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if enc in ("bgr8", "bgra8", "bgr16", "8UC3"):  # 8UC3 is OpenCV's BGR by convention
        pixels = pixels[..., 2::-1]
    return np.ascontiguousarray(pixels[..., :3])


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB. Raises ValueError on unsupported or malformed data."""
    bridge = _cv_bridge.get()
    if bridge is not None:
        if msg.width == 0 or msg.height == 0:
            raise ValueError(f"Empty image ({msg.width}x{msg.height}, encoding {msg.encoding})")
        try:
            return np.ascontiguousarray(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except _cv_bridge.error_types as err:
            raise ValueError(f"Cannot convert image with encoding {msg.encoding!r}: {err}") from err
        except Exception as err:  # noqa: BLE001 - the bridge itself is broken, not the image
            _cv_bridge.disable(err)
    return _raw_image_to_rgb(msg)


def compressed_image_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png; image_transport's "rgb8; jpeg compressed bgr8"
    spellings too) -> (H, W, 3) uint8 RGB."""
    fmt = msg.format.lower()
    if not any(name in fmt for name in ("jpeg", "jpg", "png")):
        raise ValueError(f"Unsupported compressed image format {msg.format!r} (jpeg or png expected)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ValueError("Empty compressed image (no data)")
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0:
        raise ValueError(f"Cannot decode compressed image ({msg.format!r}, {data.size} bytes)")
    if decoded.ndim == 2:
        decoded = decoded[..., None]
    decoded = _to_uint8(decoded)
    if decoded.shape[2] == 1:
        return np.repeat(decoded, 3, axis=2)
    # imdecode returns BGR(A) whatever the format string says.
    return np.ascontiguousarray(decoded[..., 2::-1])


def rgb_to_image(rgb: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8 (dense rows, step = 3 W)."""
    rgb = np.ascontiguousarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb_to_image expects (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    msg = Image(header=make_header(stamp_ns, frame_id), height=rgb.shape[0], width=rgb.shape[1],
                encoding="rgb8", is_bigendian=0, step=3 * rgb.shape[1])
    msg.data = rgb.tobytes()
    return msg


# ---------------------------------------------------------------------------------------- camera
def camera_info_to_camera(msg: CameraInfo, use_projection: bool = False) -> Camera:
    """sensor_msgs/CameraInfo -> engine ``Camera`` (pixel-centre origin, as OpenCV/ROS).

    use_projection: take the intrinsics from P with no distortion (the image topic is rectified,
    e.g. image_rect) instead of K and D. A region of interest shifts the principal point; binning
    is not supported (raise), as the engine has no use for it.
    """
    from pixloc_ros.core.geometry.camera import Camera  # torch: imported where needed (the player does without)

    width, height = int(msg.width), int(msg.height)
    if width == 0 or height == 0:
        raise ValueError(f"CameraInfo has an empty image size ({width}x{height})")
    if use_projection:
        P = np.asarray(msg.p, np.float64).reshape(3, 4)
        K, D, model = P[:, :3].copy(), np.zeros(0), "plumb_bob"
    else:
        K = np.asarray(msg.k, np.float64).reshape(3, 3).copy()
        D, model = np.asarray(msg.d, np.float64), msg.distortion_model
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(D))):
        raise ValueError("CameraInfo holds non-finite intrinsics or distortion")
    if msg.binning_x > 1 or msg.binning_y > 1:
        raise ValueError(f"CameraInfo binning {msg.binning_x}x{msg.binning_y} is not supported")
    roi = msg.roi
    if roi.width and roi.height and (roi.width, roi.height) != (width, height):
        # The image is the ROI: its pixel (0, 0) is pixel (x_offset, y_offset) of the full sensor.
        K[0, 2] -= roi.x_offset
        K[1, 2] -= roi.y_offset
        width, height = int(roi.width), int(roi.height)
    return Camera.from_camera_info(width, height, K, D, model)


def camera_frame_to_rgb(image, info: CameraInfo, compressed: bool = False,
                        use_projection: bool = False) -> tuple[np.ndarray, Camera]:
    """One camera frame (Image, or CompressedImage with ``compressed``, and its CameraInfo) ->
    ((H, W, 3) uint8 RGB, ``Camera``); ValueError naming what is wrong (encoding, CameraInfo, or
    an image whose size is not its CameraInfo's)."""
    rgb = compressed_image_to_rgb(image) if compressed else image_to_rgb(image)
    try:
        camera = camera_info_to_camera(info, use_projection=use_projection)
    except ValueError as err:
        raise ValueError(f"bad CameraInfo: {err}") from err
    if (rgb.shape[1], rgb.shape[0]) != tuple(int(round(float(v))) for v in camera.size):
        raise ValueError(f"the image is {rgb.shape[1]}x{rgb.shape[0]} but its CameraInfo says "
                         f"{info.width}x{info.height}")
    return rgb, camera


# ----------------------------------------------------------------------------------------- poses
def _finite_xyz(v, what: str) -> np.ndarray:
    xyz = np.array([v.x, v.y, v.z], np.float64)
    if not np.all(np.isfinite(xyz)):
        raise ValueError(f"{what} holds a non-finite value {xyz.tolist()}")
    return xyz


def pose_msg_to_matrix(msg: PoseMsg) -> np.ndarray:
    """geometry_msgs/Pose (of frame b in frame a) -> a_from_b (4, 4) float64."""
    o = msg.orientation
    return make_transform(matrix_from_quat_xyzw([o.x, o.y, o.z, o.w]), _finite_xyz(msg.position, "Pose position"))


def _translation_and_quaternion(T: np.ndarray) -> tuple[dict, Quaternion]:
    """(4, 4) rigid transform -> ({x, y, z} of its translation, its rotation as a Quaternion msg)."""
    T = np.asarray(T, np.float64)
    q = quat_xyzw_from_matrix(T[:3, :3])
    xyz = dict(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3]))
    return xyz, Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def matrix_to_pose_msg(T: np.ndarray) -> PoseMsg:
    """a_from_b (4, 4) -> geometry_msgs/Pose of frame b in frame a."""
    xyz, q = _translation_and_quaternion(T)
    return PoseMsg(position=Point(**xyz), orientation=q)


def transform_msg_to_matrix(msg: Transform) -> np.ndarray:
    """geometry_msgs/Transform (child in parent) -> parent_from_child (4, 4) float64."""
    r = msg.rotation
    return make_transform(matrix_from_quat_xyzw([r.x, r.y, r.z, r.w]), _finite_xyz(msg.translation, "Transform translation"))


def matrix_to_transform_msg(T: np.ndarray) -> Transform:
    """parent_from_child (4, 4) -> geometry_msgs/Transform."""
    xyz, q = _translation_and_quaternion(T)
    return Transform(translation=Vector3(**xyz), rotation=q)


# ------------------------------------------------------------------------------------ covariance
def covariance_from_msg(values, name: str = "covariance", allow_zero: bool = True) -> np.ndarray:
    """ROS row-major float64[36] -> (6, 6), checked finite, symmetric and positive semi-definite.

    allow_zero: an all-zero matrix means "unknown" in many drivers; False rejects it.
    """
    C = np.asarray(values, np.float64).reshape(6, 6)
    check_covariance(C, name, allow_zero=allow_zero)
    return C


def covariance_to_msg(C: np.ndarray) -> list[float]:
    """(6, 6) -> ROS row-major list of 36 floats (checked: robot_localization rejects bad ones)."""
    C = np.asarray(C, np.float64)
    check_covariance(C, "output covariance", allow_zero=False)
    return [float(v) for v in C.reshape(36)]


def check_covariance(C: np.ndarray, name: str, allow_zero: bool = True, tol: float = 1e-9) -> None:
    """Raise ValueError unless C (n, n) is finite, symmetric and positive semi-definite."""
    if not np.all(np.isfinite(C)):
        raise ValueError(f"{name} holds non-finite values")
    if not np.any(C):
        if allow_zero:
            return
        raise ValueError(f"{name} is all zero")
    scale = max(float(np.max(np.abs(C))), 1e-300)
    if np.max(np.abs(C - C.T)) > tol * scale + 1e-12:
        raise ValueError(f"{name} is not symmetric")
    if float(np.linalg.eigvalsh(C).min()) < -tol * scale:
        raise ValueError(f"{name} is not positive semi-definite")


# -------------------------------------------------------------------------------- other sensors
def odometry_to_sample(msg) -> OdometrySample:
    """nav_msgs/Odometry -> ``data.bags.OdometrySample`` (the data layer's type); ValueError on
    NaN/Inf, a bad quaternion or a bad covariance."""
    o, p = msg.pose.pose.orientation, msg.pose.pose.position
    pose_msg_to_matrix(msg.pose.pose)  # validates position and quaternion
    return OdometrySample(stamp_to_ns(msg.header.stamp), (p.x, p.y, p.z), (o.x, o.y, o.z, o.w),
                          covariance_from_msg(msg.pose.covariance, "odometry covariance"),
                          frame_id=msg.header.frame_id, child_frame_id=msg.child_frame_id)


def navsatfix_to_fix(msg: NavSatFix) -> GnssFix:
    """sensor_msgs/NavSatFix -> ``data.bags.GnssFix``; ValueError when there is no fix or data is bad.
    An unknown covariance comes back as zeros with ``covariance_type`` 0 (the pipeline then
    uses its floor)."""
    status = int(msg.status.status)
    if status == NavSatStatus.STATUS_NO_FIX:
        raise ValueError("NavSatFix reports no fix")
    if status < NavSatStatus.STATUS_FIX:  # Jazzy's STATUS_UNKNOWN (-2), also its messages' default
        raise ValueError(f"NavSatFix status {status} is unknown (not a fix; is the driver setting status?)")
    lat, lon, alt = float(msg.latitude), float(msg.longitude), float(msg.altitude)
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        raise ValueError(f"NavSatFix holds an invalid position (lat={lat}, lon={lon})")
    if not math.isfinite(alt):
        alt = 0.0  # NaN altitude means "unknown" (REP-145); the map's height is used downstream
    cov = np.zeros((3, 3))
    if msg.position_covariance_type != NavSatFix.COVARIANCE_TYPE_UNKNOWN:
        cov = np.asarray(msg.position_covariance, np.float64).reshape(3, 3)
        check_covariance(cov, "NavSatFix covariance", allow_zero=False)
    return GnssFix(stamp_to_ns(msg.header.stamp), lat, lon, alt, cov, int(msg.position_covariance_type),
                   int(msg.status.status), int(msg.status.service), msg.header.frame_id)
