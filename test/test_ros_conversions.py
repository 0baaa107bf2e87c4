"""Message <-> numpy conversions of the ROS layer (pixloc_ros/ros/conversions.py)."""
import math
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")
from geometry_msgs.msg import Pose as PoseMsg  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, NavSatStatus  # noqa: E402

from pixloc_ros.core.geometry.transforms import matrix_from_quat_xyzw, quat_xyzw_from_matrix  # noqa: E402
from pixloc_ros.ros import conversions as cv  # noqa: E402

pytestmark = pytest.mark.ros
RNG = np.random.default_rng(0)


def smooth_rgb(h=48, w=64):
    """A smooth colour image (demosaicing is exact-ish on it), uint8."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / 9), 128 + 100 * np.cos(y / 7), 128 + 60 * np.sin((x + y) / 11)], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image(pixels: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """Independent encoder: an Image message holding ``pixels`` (H, W[, C]) with ``pad`` bytes per row."""
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    if pixels.dtype == np.uint16 and big_endian != (sys.byteorder == "big"):
        pixels = pixels.byteswap()
    rows = pixels.reshape(h, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(big_endian), step=rows.shape[1])
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_decode_to_the_same_rgb(pad):
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    encoded = {
        "rgb8": rgb,
        "bgr8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
        "rgba8": cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA),
        "bgra8": cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA),
    }
    for enc, pixels in encoded.items():
        out = cv.image_to_rgb(make_image(pixels, enc, pad))
        assert out.shape == (6, 7, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, rgb, err_msg=enc)


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono_encodings(big_endian):
    gray = RNG.integers(0, 256, (5, 9), dtype=np.uint8)
    out = cv.image_to_rgb(make_image(gray, "mono8", pad=3))
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))
    # mono16: full 16-bit range maps to full 8-bit range; byte order from is_bigendian.
    gray16 = gray.astype(np.uint16) * 257  # 8-bit value v -> 16-bit v * 65535 / 255 exactly
    out16 = cv.image_to_rgb(make_image(gray16, "mono16", pad=2, big_endian=big_endian))
    np.testing.assert_array_equal(out16[..., 0], gray)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_demosaic_recovers_a_smooth_image(pattern, bits):
    rgb = smooth_rgb()
    channel = {"r": 0, "g": 1, "b": 2}
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[2 * dy + dx]]]
    if bits == 16:
        mosaic = mosaic.astype(np.uint16) * 257
    out = cv.image_to_rgb(make_image(mosaic, f"bayer_{pattern}{bits}"))
    inner = (slice(2, -2), slice(2, -2))
    err = np.abs(out[inner].astype(int) - rgb[inner].astype(int)).mean(axis=(0, 1))
    assert np.all(err < 6), f"{pattern}: mean error per channel {err}"  # a wrong pattern gives ~50+


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_pattern_of_a_uniform_colour_is_exact(pattern):
    """A known pattern: every 2x2 block holds the ROS-named layout (top-left block read row by row)
    of one colour; demosaicing a uniform colour is exact, so each pixel must come back as that
    colour. A pattern mapped to the wrong OpenCV code swaps red and blue or mixes green in."""
    colour = {"r": 200, "g": 100, "b": 30}
    mosaic = np.empty((8, 10), np.uint8)
    for dy in range(2):
        for dx in range(2):
            mosaic[dy::2, dx::2] = colour[pattern[2 * dy + dx]]
    out = cv.image_to_rgb(make_image(mosaic, f"bayer_{pattern}8"))
    assert out.shape == (8, 10, 3)
    np.testing.assert_array_equal(out[1:-1, 1:-1], np.broadcast_to([200, 100, 30], (6, 8, 3)))


def test_bad_images_raise_specific_errors():
    rgb = smooth_rgb(4, 4)
    with pytest.raises(ValueError, match="Unsupported image encoding 'yuv422'"):
        cv.image_to_rgb(make_image(rgb, "yuv422"))
    with pytest.raises(ValueError, match="Empty image"):
        cv.image_to_rgb(Image(encoding="rgb8"))
    truncated = make_image(rgb, "rgb8")
    truncated.data = bytes(truncated.data)[:-1]
    with pytest.raises(ValueError, match="expected step"):
        cv.image_to_rgb(truncated)
    short_step = make_image(rgb, "rgb8")
    short_step.step = 5
    with pytest.raises(ValueError, match="step 5"):
        cv.image_to_rgb(short_step)


def test_rgb_to_image_round_trip():
    rgb = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    msg = cv.rgb_to_image(rgb, 1_500_000_007, "cam")
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 15, "cam")
    assert cv.stamp_to_ns(msg.header.stamp) == 1_500_000_007
    np.testing.assert_array_equal(cv.image_to_rgb(msg), rgb)


def test_compressed_images():
    rgb = smooth_rgb()
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(format="rgb8; png compressed bgr8")
    msg.data = png.tobytes()
    np.testing.assert_array_equal(cv.compressed_image_to_rgb(msg), rgb)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    msg = CompressedImage(format="jpeg")
    msg.data = jpg.tobytes()
    assert np.abs(cv.compressed_image_to_rgb(msg).astype(int) - rgb).mean() < 3
    with pytest.raises(ValueError, match="Unsupported compressed image format"):
        cv.compressed_image_to_rgb(CompressedImage(format="h264"))
    with pytest.raises(ValueError, match="Empty compressed image"):
        cv.compressed_image_to_rgb(CompressedImage(format="jpeg"))
    garbage = CompressedImage(format="jpeg")
    garbage.data = bytes(100)
    with pytest.raises(ValueError, match="Cannot decode"):
        cv.compressed_image_to_rgb(garbage)


def test_stamps_round_trip():
    for ns in [0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789]:
        stamp = cv.ns_to_stamp(ns)
        assert 0 <= stamp.nanosec < 1_000_000_000
        assert cv.stamp_to_ns(stamp) == ns
    with pytest.raises(ValueError, match="negative"):
        cv.ns_to_stamp(-1)


def random_pose():
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=RNG.integers(1 << 30)).as_matrix()
    T[:3, 3] = RNG.normal(size=3) * 10
    return T


def test_pose_and_transform_round_trips():
    for _ in range(20):
        T = random_pose()
        np.testing.assert_allclose(cv.pose_msg_to_matrix(cv.matrix_to_pose_msg(T)), T, atol=1e-12)
        np.testing.assert_allclose(cv.transform_msg_to_matrix(cv.matrix_to_transform_msg(T)), T, atol=1e-12)
        q = quat_xyzw_from_matrix(T[:3, :3])
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12


def test_quaternion_is_xyzw_hamilton():
    # 90 degrees about z: x axis -> y axis.
    s = math.sqrt(0.5)
    R = matrix_from_quat_xyzw([0, 0, s, s])
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    # A message with a slightly denormalised quaternion is normalised; zero or NaN is rejected.
    msg = PoseMsg()
    msg.orientation.w = 2.0
    np.testing.assert_allclose(cv.pose_msg_to_matrix(msg), np.eye(4))
    msg.orientation.w = 0.0
    with pytest.raises(ValueError, match="Invalid quaternion"):
        cv.pose_msg_to_matrix(msg)
    msg.orientation.w = 1.0
    msg.position.x = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        cv.pose_msg_to_matrix(msg)


def test_covariance_checks():
    A = RNG.normal(size=(6, 6))
    C = A @ A.T + 1e-3 * np.eye(6)
    values = cv.covariance_to_msg(C)
    assert len(values) == 36
    np.testing.assert_allclose(cv.covariance_from_msg(values), C)
    assert not np.any(cv.covariance_from_msg([0.0] * 36))  # "unknown" is accepted on input
    with pytest.raises(ValueError, match="all zero"):
        cv.covariance_to_msg(np.zeros((6, 6)))
    bad = C.copy()
    bad[0, 1] += 1.0
    with pytest.raises(ValueError, match="not symmetric"):
        cv.covariance_from_msg(bad.reshape(36))
    with pytest.raises(ValueError, match="positive semi-definite"):
        cv.covariance_to_msg(C - 2 * np.linalg.eigvalsh(C).max() * np.eye(6))
    with pytest.raises(ValueError, match="non-finite"):
        cv.covariance_from_msg([math.nan] + [0.0] * 35)


def test_odometry_and_navsatfix():
    T = random_pose()
    msg = Odometry(child_frame_id="base_link")
    msg.header.frame_id = "odom"
    msg.header.stamp = cv.ns_to_stamp(42)
    msg.pose.pose = cv.matrix_to_pose_msg(T)
    msg.pose.covariance = np.eye(6).reshape(36) * 0.01
    sample = cv.odometry_to_sample(msg)
    assert (sample.stamp_ns, sample.frame_id, sample.child_frame_id) == (42, "odom", "base_link")
    np.testing.assert_allclose(sample.matrix, T, atol=1e-12)
    msg.pose.pose.position.y = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        cv.odometry_to_sample(msg)

    fix = NavSatFix(latitude=47.4, longitude=8.5, altitude=400.0)
    fix.status.status = NavSatStatus.STATUS_FIX
    fix.position_covariance = [4.0, 0, 0, 0, 4.0, 0, 0, 0, 9.0]
    fix.position_covariance_type = NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    out = cv.navsatfix_to_fix(fix)
    assert (out.latitude_deg, out.longitude_deg, out.altitude_m) == (47.4, 8.5, 400.0)
    np.testing.assert_allclose(np.diag(out.covariance), [4, 4, 9])
    assert out.covariance_type == NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    fix.position_covariance_type = NavSatFix.COVARIANCE_TYPE_UNKNOWN
    assert not np.any(cv.navsatfix_to_fix(fix).covariance)
    fix.status.status = NavSatStatus.STATUS_NO_FIX
    with pytest.raises(ValueError, match="no fix"):
        cv.navsatfix_to_fix(fix)
    # Jazzy's STATUS_UNKNOWN (-2), the default of its NavSatStatus: not a fix either.
    fix.status.status = -2
    with pytest.raises(ValueError, match="status -2 is unknown"):
        cv.navsatfix_to_fix(fix)
    fix.status.status = NavSatStatus.STATUS_FIX
    fix.latitude = math.nan
    with pytest.raises(ValueError, match="invalid position"):
        cv.navsatfix_to_fix(fix)


def camera_info(width=640, height=480, D=(0.1, -0.05, 0.001, -0.002, 0.01), model="plumb_bob"):
    from sensor_msgs.msg import CameraInfo
    msg = CameraInfo(width=width, height=height, distortion_model=model)
    msg.k = [500.0, 0, 319.5, 0, 505.0, 239.5, 0, 0, 1]
    msg.d = list(D)
    msg.p = [480.0, 0, 320.0, 0, 0, 485.0, 240.0, 0, 0, 0, 1, 0]
    return msg


def project_with_camera(camera, p_cam):
    import torch
    p2d, valid = camera.world2image(torch.as_tensor(p_cam, dtype=torch.float64))
    assert bool(valid.all())
    return p2d.numpy()


# The engine's Camera is torch: these three skip where torch is absent (the distro checks'
# environments, scripts/check_distro_pythons.sh); everything above runs there.
needs_torch = pytest.mark.skipif(__import__("importlib").util.find_spec("torch") is None,
                                 reason="the engine's Camera needs torch")


@needs_torch
def test_camera_info_projects_like_opencv():
    """Same pixel-centre convention as OpenCV/ROS: no 0.5 px shift at this boundary."""
    msg = camera_info()
    p_cam = RNG.uniform([-1, -1, 4], [1, 1, 8], size=(20, 3))
    expected, _ = cv2.projectPoints(p_cam, np.zeros(3), np.zeros(3), np.asarray(msg.k).reshape(3, 3), np.asarray(msg.d))
    np.testing.assert_allclose(project_with_camera(cv.camera_info_to_camera(msg), p_cam), expected[:, 0], atol=1e-6)
    # Rectified images: P, no distortion.
    P = np.asarray(msg.p).reshape(3, 4)[:, :3]
    expected, _ = cv2.projectPoints(p_cam, np.zeros(3), np.zeros(3), P, None)
    np.testing.assert_allclose(project_with_camera(cv.camera_info_to_camera(msg, use_projection=True), p_cam),
                               expected[:, 0], atol=1e-6)


@needs_torch
def test_camera_info_roi_shifts_the_principal_point():
    full = cv.camera_info_to_camera(camera_info(D=()))
    msg = camera_info(D=())
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 320, 240
    roi = cv.camera_info_to_camera(msg)
    p_cam = RNG.uniform([-0.2, -0.2, 4], [0.2, 0.2, 8], size=(10, 3))
    np.testing.assert_allclose(project_with_camera(roi, p_cam), project_with_camera(full, p_cam) - [100, 40], atol=1e-9)
    assert roi.size.tolist() == [320, 240]


@needs_torch
def test_bad_camera_info_raises():
    msg = camera_info()
    msg.k = [0.0] * 9
    with pytest.raises(ValueError, match="zero focal length"):
        cv.camera_info_to_camera(msg)
    with pytest.raises(ValueError, match="empty image size"):
        cv.camera_info_to_camera(camera_info(width=0))
    with pytest.raises(ValueError, match="Unsupported distortion model 'equidistant'"):
        cv.camera_info_to_camera(camera_info(D=(0.1, 0, 0, 0), model="equidistant"))
    nan = camera_info()
    nan.d = [math.nan] * 5
    with pytest.raises(ValueError, match="non-finite"):
        cv.camera_info_to_camera(nan)
    binned = camera_info()
    binned.binning_x = 2
    with pytest.raises(ValueError, match="binning"):
        cv.camera_info_to_camera(binned)
