"""Drive recordings: rosbag2 (MCAP) written with rosbags, read back with rosbags and rclpy;
the synthetic query bags hold what world.json and the ground truth say."""
import json
import math

import numpy as np
import pytest

from pixloc_ros.data import bags
from pixloc_ros.core.geometry.transforms import invert_transform
from pixloc_ros.data.sim.render import render
from pixloc_ros.data.sim.synth import _noise_seed
from pixloc_ros.data.sim.dataset import load_dataset, read_tum


def _image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (18, 26, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_image_encodings_round_trip(tmp_path, encoding):
    image = _image()
    info = bags.CameraInfoData.from_pinhole(26, 18, 20.0, 21.0, 12.5, 8.5, dist=(0.1, -0.01))
    with bags.DriveBagWriter(tmp_path / "bag") as writer:
        writer.write_image(5, image, encoding)
        writer.write_camera_info(5, info)
    drive = bags.read_drive(tmp_path / "bag")
    (frame,) = drive.frames
    assert frame.encoding == encoding and frame.stamp_ns == 5 and frame.frame_id == bags.CAMERA_FRAME
    if encoding == "mono8":
        grey = frame.image[..., 0].astype(int)
        expected = image @ np.array([0.299, 0.587, 0.114])
        assert np.all(frame.image[..., 0] == frame.image[..., 2]) and np.abs(grey - expected).max() <= 1
    else:
        assert np.array_equal(frame.image, image)
    assert frame.camera_info == info and drive.camera_info.K[0, 2] == 12.5
    (raw_image, raw_info) = list(bags.iter_raw(tmp_path / "bag"))
    assert raw_image.msgtype == bags.IMAGE_MSG and raw_info.topic == "/camera/camera_info"


def test_compressed_images_read_back_as_rgb(tmp_path):
    image = _image()
    with bags.DriveBagWriter(tmp_path / "bag") as writer:
        writer.write_compressed_image(1, image, fmt="png")
        writer.write_compressed_image(2, image, fmt="jpeg")
    frames = bags.read_drive(tmp_path / "bag").frames  # found by type on /camera/image_raw/compressed
    assert [f.encoding for f in frames] == ["png", "jpeg"]
    assert np.array_equal(frames[0].image, image)  # lossless
    assert frames[1].image.shape == image.shape


def test_camera_info_round_trips_the_engine_camera(tmp_path):
    torch = pytest.importorskip("torch")
    from pixloc_ros.core.geometry.camera import Camera
    camera = Camera.from_params(640, 480, 500.0, 502.0, 319.5, 241.25, [0.1, -0.02, 0.001, 0.002, 0.003])
    with bags.DriveBagWriter(tmp_path / "bag") as writer:
        writer.write_image(7, np.zeros((480, 640, 3), np.uint8))
        writer.write_camera_info(7, bags.CameraInfoData.from_camera(camera))
    info = bags.read_drive(tmp_path / "bag").camera_info
    assert info.distortion_model == "plumb_bob" and len(info.d) == 5
    assert np.allclose(np.reshape(info.p, (3, 4)), np.hstack([info.K, np.zeros((3, 1))]))
    again = Camera.from_camera_info(info.width, info.height, info.k, info.d, info.distortion_model)
    assert torch.allclose(again.data, camera.data)


def test_writer_refuses_to_clobber(tmp_path):
    (tmp_path / "notabag").mkdir()
    (tmp_path / "notabag" / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError):
        bags.DriveBagWriter(tmp_path / "notabag", overwrite=True)
    with pytest.raises(ValueError, match="Unsupported image encoding"):
        bags.encode_image(_image(), "yuv422")


def test_synthetic_query_bags_match_world_json_and_ground_truth(synth_small):
    info = json.loads((synth_small / "world.json").read_text())
    base_from_cam = np.array(info["base_from_cam"]["matrix"])
    cam = info["camera"]
    for condition in info["query_conditions"]:
        drive = bags.read_drive(synth_small / "queries" / condition)
        assert len(drive.frames) == info["queries"][condition]["frames"] > 0
        ci = drive.camera_info
        assert (ci.width, ci.height) == (info["image"]["width"], info["image"]["height"])
        assert ci.distortion_model == "plumb_bob" and not any(ci.d)
        assert np.allclose(ci.K, [[cam["fx"], 0, cam["cx"]], [0, cam["fy"], cam["cy"]], [0, 0, 1]])
        assert np.allclose(np.reshape(ci.p, (3, 4))[:, :3], ci.K) and ci.frame_id == bags.CAMERA_FRAME
        assert np.allclose(drive.base_from_camera(), base_from_cam, atol=1e-9)
        assert all(f.image.shape == (ci.height, ci.width, 3) and f.image.dtype == np.uint8 for f in drive.frames)
        # Ground truth: one pose per image, same stamps, same as the TUM side file.
        stamps, poses = read_tum(synth_small / "queries" / f"{condition}_gt.txt")
        assert [g.stamp_ns for g in drive.ground_truth] == [f.stamp_ns for f in drive.frames] == stamps.tolist()
        assert np.allclose(np.stack([g.matrix for g in drive.ground_truth]), poses, atol=1e-8)
        assert all(g.frame_id == bags.MAP_FRAME for g in drive.ground_truth)
        # Sensors run before the first image, at their rates, in stamp order.
        for series in (drive.odometry, drive.gnss):
            s = np.array([m.stamp_ns for m in series])
            assert len(s) > 3 and np.all(np.diff(s) > 0) and s[0] < drive.frames[0].stamp_ns
        assert drive.odometry[0].frame_id == bags.ODOM_FRAME and drive.odometry[0].child_frame_id == bags.BASE_FRAME


def test_streaming_reader_matches_the_full_reader(synth_small):
    bag = synth_small / "queries" / "snow"
    drive = bags.read_drive(bag)
    streamed = list(bags.iter_frames(bag))
    assert [f.stamp_ns for f in streamed] == [f.stamp_ns for f in drive.frames]
    assert all(np.array_equal(a.image, b.image) and a.camera_info == b.camera_info for a, b in zip(streamed, drive.frames))
    light = bags.read_drive(bag, load_images=False)
    assert [f.stamp_ns for f in light.frames] == [f.stamp_ns for f in drive.frames] and light.frames[0].image.size == 0
    assert light.camera_info == drive.camera_info and len(light.odometry) == len(drive.odometry)


def test_images_are_renders_of_the_ground_truth_pose(synth_small):
    """The picture in the bag is what the world looks like from the recorded ground truth."""
    data = load_dataset(synth_small)
    condition = data.query_conditions[0]
    drive = bags.read_drive(data.bag_dir(condition))
    for k in (0, len(drive.frames) - 1):
        cam_from_world = invert_transform(drive.ground_truth[k].matrix @ data.base_from_cam)
        rgb, _ = render(data.world, condition, data.camera, cam_from_world,
                        noise_seed=_noise_seed(data.info["seed"], condition, k))
        diff = np.abs(rgb.astype(int) - drive.frames[k].image.astype(int))
        assert diff.mean() < 0.5 and np.mean(diff <= 2) > 0.99
        # A pose half a metre off gives a clearly different picture.
        shifted = drive.ground_truth[k].matrix.copy()
        shifted[:3, 3] += shifted[:3, 1] * 0.5
        off, _ = render(data.world, condition, data.camera, invert_transform(shifted @ data.base_from_cam),
                        noise_seed=_noise_seed(data.info["seed"], condition, k))
        assert np.abs(off.astype(int) - drive.frames[k].image.astype(int)).mean() > 5 * max(diff.mean(), 0.5)


def test_ground_truth_odometry_and_gnss_agree_within_stated_noise(synth_small):
    data = load_dataset(synth_small)
    sigma_h = data.info["noise"]["gnss"]["horizontal_sigma_m"]
    sigma_v = data.info["noise"]["gnss"]["vertical_sigma_m"]
    for condition in data.query_conditions:
        drive = bags.read_drive(data.bag_dir(condition), load_images=False)
        gt_stamps = np.array([g.stamp_ns for g in drive.ground_truth])
        gt_xyz = np.stack([g.matrix[:3, 3] for g in drive.ground_truth])
        # GNSS: each fix near the true position (interpolated to its stamp), as stated.
        for fix in drive.gnss:
            assert np.allclose(fix.covariance, np.diag([sigma_h ** 2, sigma_h ** 2, sigma_v ** 2]))
            if not gt_stamps[0] <= fix.stamp_ns <= gt_stamps[-1]:
                continue
            truth = np.array([np.interp(fix.stamp_ns, gt_stamps, gt_xyz[:, i]) for i in range(3)])
            err = data.georef.to_map(fix.latitude_deg, fix.longitude_deg, fix.altitude_m) - truth
            assert np.all(np.abs(err) < 5 * np.array([sigma_h, sigma_h, sigma_v])), err
        # Odometry: motion between two images matches the true motion within the growth of
        # the stated covariance (odometry is relative: compare displacements).
        odo_stamps = np.array([o.stamp_ns for o in drive.odometry])
        i0, i1 = (int(np.argmin(np.abs(odo_stamps - s))) for s in (gt_stamps[0], gt_stamps[-1]))
        o0, o1 = drive.odometry[i0].matrix, drive.odometry[i1].matrix
        g0, g1 = (drive.ground_truth[int(np.argmin(np.abs(gt_stamps - odo_stamps[i])))].matrix for i in (i0, i1))
        d_odo = (invert_transform(o0) @ o1)[:2, 3]
        d_gt = (invert_transform(g0) @ g1)[:2, 3]
        assert abs(odo_stamps[i0] - gt_stamps[0]) < 3e7  # odometry at 20 Hz: within 30 ms
        var = drive.odometry[i1].pose_covariance[0, 0]
        travelled = np.linalg.norm(d_gt)
        assert travelled > 5.0
        # 30 ms of timing offset at up to 11 m/s is up to 0.35 m per end.
        assert np.linalg.norm(d_odo - d_gt) < 4 * math.sqrt(var) + 0.7, (condition, d_odo, d_gt, var)
        yaw = lambda T: math.atan2(T[1, 0], T[0, 0])
        dyaw = math.remainder((yaw(o1) - yaw(o0)) - (yaw(g1) - yaw(g0)), 2 * math.pi)
        assert abs(dyaw) < 4 * math.sqrt(drive.odometry[i1].pose_covariance[5, 5]) + math.radians(3.0)


def test_bags_deserialise_with_rclpy(synth_small):
    serialization = pytest.importorskip("rclpy.serialization")
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, Image, NavSatFix
    from tf2_msgs.msg import TFMessage
    classes = {bags.IMAGE_MSG: Image, bags.CAMERA_INFO_MSG: CameraInfo, bags.ODOMETRY_MSG: Odometry,
               bags.NAVSATFIX_MSG: NavSatFix, bags.TF_MSG: TFMessage, bags.POSE_STAMPED_MSG: PoseStamped}
    bag = synth_small / "queries" / json.loads((synth_small / "world.json").read_text())["query_conditions"][0]
    drive = bags.read_drive(bag)
    seen = {}
    for raw in bags.iter_raw(bag):
        msg = serialization.deserialize_message(raw.data, classes[raw.msgtype])
        seen.setdefault(raw.msgtype, msg)
    assert set(seen) == set(classes)
    image = seen[bags.IMAGE_MSG]
    assert image.encoding == "rgb8" and (image.height, image.width) == drive.frames[0].image.shape[:2]
    assert np.array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3),
                          drive.frames[0].image)
    assert np.allclose(np.array(seen[bags.CAMERA_INFO_MSG].k), drive.camera_info.k)
    tf = seen[bags.TF_MSG].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == (bags.BASE_FRAME, bags.CAMERA_FRAME)
    assert seen[bags.NAVSATFIX_MSG].position_covariance_type == bags.COVARIANCE_TYPE_DIAGONAL_KNOWN
    odom = seen[bags.ODOMETRY_MSG]
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    assert seen[bags.POSE_STAMPED_MSG].header.frame_id == "map"
    topics = {t.name: t for t in bags.bag_topics(bag)}
    assert topics["/tf_static"].transient_local and not topics["/camera/image_raw"].transient_local
    # The recorded type hashes are those of ROS 2 Jazzy/Kilted (what `ros2 bag` checks).
    meta = (bag / "metadata.yaml").read_text()
    assert "RIHS01_" in meta and bags.typestore().hash_rihs01(bags.IMAGE_MSG) in meta
