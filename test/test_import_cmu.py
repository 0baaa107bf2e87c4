"""``pixloc-ros import cmu`` on a tiny slice in the published Extended CMU Seasons layout: the
poses survive (quaternion world->camera + camera centre -> cam_from_map and back), bags are in
timestamp order, CameraInfo is the published OPENCV camera in ROS's pixel-centre convention,
the given COLMAP model is moved into the map frame consistently, the GNSS noise is as asked."""
import json

import numpy as np
import pytest
import torch

from import_fixtures import CMU_QUERY_DAYS_US, make_cmu_slice, write_projected_model
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.maps.colmap_io import read_model
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.bags import read_drive
from pixloc_ros.data.importers import GnssNoise, ImportOptions, write_import
from pixloc_ros.data.importers.cmu import CMU_CAMERAS, parse_image_name, read_cmu_slice
from pixloc_ros.core.geometry.transforms import make_transform as to_4x4
from pixloc_ros.data.sim.dataset import read_mapping_poses, read_tum

PUBLISHED = {  # the issue / pixloc's cmu.py: OPENCV fx fy cx cy k1 k2 p1 p2 at 1024x768
    "c0": (868.993378, 866.063001, 525.942323, 420.042529, -0.399431, 0.188924, 0.000153, 0.000571),
    "c1": (873.382641, 876.489513, 529.324138, 397.272397, -0.397066, 0.181925, 0.000176, -0.000579),
}
NOISE = GnssNoise(white_horizontal_m=0.5, white_up_m=0.8, bias_horizontal_m=0.8, bias_up_m=1.2, seed=3)
GEOREF = Georeference(40.4406, -79.9959, 300.0, 75.0)


def _cmu_cameras():
    return {c.name: (c.model, c.width, c.height, c.params) for c in CMU_CAMERAS.values()}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("CMU")
    fx = make_cmu_slice(root)
    write_projected_model(fx.slice_dir / "sparse", fx.reference, _cmu_cameras())
    out = root / "out"
    # the single-camera layout (--per-camera); the rig bags: test_import_rig.py
    summary = write_import(read_cmu_slice(fx.slice_dir), out, ImportOptions(georef=GEOREF, gnss=NOISE, per_camera=True))
    meta = json.loads((out / "import.json").read_text())
    return fx, out, summary, np.array(meta["map_from_world"])


def _cam_from_world(cam_from_map: np.ndarray, map_from_world: np.ndarray) -> np.ndarray:
    return cam_from_map @ map_from_world


def test_image_names_carry_camera_and_microseconds():
    assert parse_image_name("img_00122_c1_1303398474779487us.jpg") == ("c1", 1303398474779487000)
    with pytest.raises(ValueError, match="not an Extended CMU Seasons image name"):
        parse_image_name("img_00122_1303398474779487.jpg")


def test_pose_lines_are_rotation_and_camera_centre(tmp_path):
    fx = make_cmu_slice(tmp_path, n_ref=2, n_query=1)
    plan = read_cmu_slice(fx.slice_dir)
    truth = {p.name: p for p in fx.reference + fx.queries}
    frames = plan.reference + [f for seq in plan.queries.values() for f in seq]
    assert len(frames) == len(truth)
    for f in frames:
        p = truth[f.name]
        assert np.allclose(f.R, p.R, atol=1e-5)
        assert np.allclose(f.center, p.center, atol=1e-5)  # the file's (cx cy cz) is the centre ...
        assert np.allclose(f.t, -f.R @ p.center, atol=1e-9)  # ... and t = -R c


def test_queries_split_per_camera_and_day_in_time_order(tmp_path):
    fx = make_cmu_slice(tmp_path)
    plan = read_cmu_slice(fx.slice_dir)
    assert sorted(plan.queries) == ["c0_20100901", "c0_20101019", "c1_20100901", "c1_20101019"]
    for name, seq in plan.queries.items():
        assert {f.camera for f in seq} == {name[:2]}
        assert all(f.has_pose for f in seq)
        assert np.all(np.diff([f.stamp_ns for f in seq]) > 0)
    with_unposed = read_cmu_slice(fx.slice_dir, include_unposed=True)
    names = {f.name for seq in with_unposed.queries.values() for f in seq}
    assert set(fx.unposed) <= names
    assert sum(len(s) for s in with_unposed.queries.values()) == len(fx.queries) + len(fx.unposed)


def test_published_intrinsics_when_the_file_is_absent(tmp_path):
    fx = make_cmu_slice(tmp_path, n_ref=1, n_query=1, write_intrinsics=False)
    plan = read_cmu_slice(fx.slice_dir)
    for name, params in PUBLISHED.items():
        cam = plan.cameras[name]
        assert (cam.model, cam.width, cam.height) == ("OPENCV", 1024, 768)
        assert cam.params == params


def test_map_model_and_reference_poses_round_trip(imported):
    fx, out, summary, map_from_world = imported
    model = read_model(out / "sfm")
    truth = {p.name: p for p in fx.reference}
    assert summary.sfm_source.startswith("given:") and len(model.images) == len(truth)
    assert summary.model_pose_deviation[0] < 1e-4
    for im in model.images.values():
        camera, name = im.name.split("/")  # the map names carry the camera (the rig reads it from there)
        p = truth[name]
        assert camera == p.camera
        assert np.allclose(_cam_from_world(to_4x4(im.R, im.t), map_from_world), to_4x4(p.R, p.t), atol=1e-5)
        assert (out / "mapping" / "images" / im.name).is_file()
    for mp in read_mapping_poses(out / "mapping" / "poses.txt"):
        p = truth[mp.name.split("/")[1]]
        assert mp.stamp_ns == parse_image_name(mp.name.split("/")[1])[1]
        assert np.allclose(_cam_from_world(mp.cam_from_world, map_from_world), to_4x4(p.R, p.t), atol=1e-5)
    # the map frame is z-up: the cameras' up (-y) points along +z within the fixture's 2 deg tilt
    ups = np.stack([-im.R[1] for im in model.images.values()])
    assert np.degrees(np.arccos(np.clip(ups[:, 2], -1, 1))).max() < 4.0


def test_given_model_moves_rigidly_into_the_map(imported):
    """Points of the map model still project onto their keypoints (COLMAP pixels, with distortion)."""
    _, out, _, _ = imported
    model = read_model(out / "sfm")
    index = {pid: i for i, pid in enumerate(model.point_ids)}
    for im in model.images.values():
        cam = model.cameras[im.camera_id]
        engine = Camera.from_colmap(cam.model, cam.width, cam.height, cam.params)
        ok = im.point3D_ids >= 0
        xyz = model.xyz[[index[i] for i in im.point3D_ids[ok]]]
        uv, _ = engine.world2image(torch.from_numpy(xyz @ im.R.T + im.t))
        assert np.abs(uv.numpy() + 0.5 - im.xys[ok]).max() < 1e-6


def test_bags_camera_info_timestamps_and_ground_truth(imported):
    fx, out, summary, map_from_world = imported
    truth = {p.name: p for p in fx.queries}
    by_stamp = {p.stamp_ns: p for p in fx.queries}
    assert sorted(s.name for s in summary.sequences) == ["c0_20100901", "c0_20101019", "c1_20100901", "c1_20101019"]
    for seq in summary.sequences:
        drive = read_drive(out / "queries" / seq.name)
        stamps = [f.stamp_ns for f in drive.frames]
        expected = sorted(p.stamp_ns for p in truth.values() if p.camera == seq.camera
                          and str(p.stamp_ns // 1000)[:5] == str(CMU_QUERY_DAYS_US[seq.name.endswith("1019")])[:5])
        assert stamps == expected and np.all(np.diff(stamps) > 0)
        # CameraInfo: published OPENCV -> plumb_bob, principal point moved to the pixel-centre origin
        fx_, fy_, cx, cy, k1, k2, p1, p2 = PUBLISHED[seq.camera]
        for frame in drive.frames:
            info = frame.camera_info
            assert (info.width, info.height, info.distortion_model) == (1024, 768, "plumb_bob")
            assert np.allclose(info.K, [[fx_, 0, cx - 0.5], [0, fy_, cy - 0.5], [0, 0, 1]], atol=1e-9)
            assert np.allclose(info.d, [k1, k2, p1, p2, 0.0], atol=1e-12)
            assert frame.image.shape == (768, 1024, 3)
        # ground truth: map_from_base @ base_from_cam = map_from_cam = inverse of the dataset pose
        base_from_cam = drive.base_from_camera()
        assert [g.stamp_ns for g in drive.ground_truth] == stamps
        for g in drive.ground_truth:
            p = by_stamp[g.stamp_ns]
            cam_from_map = np.linalg.inv(g.matrix @ base_from_cam)
            assert np.allclose(cam_from_map @ map_from_world, to_4x4(p.R, p.t), atol=1e-5)
        tum_stamps, tum_poses = read_tum(out / "queries" / f"{seq.name}_gt.txt")
        assert list(tum_stamps) == stamps
        assert np.allclose(tum_poses, [g.matrix for g in drive.ground_truth], atol=1e-8)


def test_gnss_fixes_carry_the_requested_noise(imported):
    _, out, summary, _ = imported
    sigma = NOISE.sigma_enu
    errors = []
    for seq in summary.sequences:
        drive = read_drive(out / "queries" / seq.name, load_images=False)
        truth = {g.stamp_ns: g.matrix[:3, 3] for g in drive.ground_truth}
        assert [g.stamp_ns for g in drive.gnss] == sorted(truth)
        for fix in drive.gnss:
            assert np.allclose(fix.covariance, np.diag(sigma ** 2))
            p = GEOREF.to_map(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
            errors.append((p - truth[fix.stamp_ns]) @ GEOREF.map_from_enu)  # back to ENU
    errors = np.abs(np.array(errors))
    assert np.all(errors < 5 * sigma) and errors.max() > 1e-3  # noise was added, and within bounds


def test_a_model_in_another_frame_is_rejected(tmp_path):
    fx = make_cmu_slice(tmp_path, n_ref=2, n_query=1)
    shifted = [type(p)(p.name, p.stamp_ns, p.camera, p.R, p.t + np.array([0.0, 0.0, 1.0])) for p in fx.reference]
    write_projected_model(tmp_path / "other_model", shifted, _cmu_cameras())
    with pytest.raises(ValueError, match="disagrees with the dataset's reference poses"):
        write_import(read_cmu_slice(fx.slice_dir), tmp_path / "out",
                     ImportOptions(georef=GEOREF, sfm=tmp_path / "other_model"))
