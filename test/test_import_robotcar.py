"""``pixloc-ros import robotcar`` on a tiny dataset in the published RobotCar Seasons layout:
NVM reference poses (quaternion + centre, .png names), 4x4 camera-to-world query poses of the
rear camera, left/right poses through the extrinsics, one bag per condition and camera, the
published pinhole intrinsics in CameraInfo, base_link = the car (one pose for all cameras)."""
import json

import numpy as np
import pytest

from import_fixtures import ROBOTCAR_EXTRINSICS, make_robotcar, write_projected_model
from pixloc_ros.core.maps.colmap_io import read_model
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.bags import read_drive
from pixloc_ros.data.importers import GnssNoise, ImportOptions, write_import
from pixloc_ros.data.importers.common import BASE_FROM_OPTICAL
from pixloc_ros.core.geometry.transforms import make_transform as to_4x4
from pixloc_ros.data.importers.robotcar import ROBOTCAR_INTRINSICS, read_nvm_poses, read_robotcar
from pixloc_ros.data.sim.dataset import read_tum

PUBLISHED = {"left": (400.0, 400.0, 500.107605, 511.461426), "rear": (400.0, 400.0, 508.222931, 498.187378),
             "right": (400.0, 400.0, 502.503754, 490.259033)}
GEOREF = Georeference(51.7520, -1.2577, 70.0)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("RobotCar")
    fx = make_robotcar(root / "dataset")
    cams = {c: ("PINHOLE", 1024, 1024, PUBLISHED[c]) for c in PUBLISHED}
    # a model as hloc writes it from the NVM: same poses, .jpg names, one camera per side
    write_projected_model(root / "sfm", fx.reference, cams)
    out = root / "out"
    noise = GnssNoise(0.0, 0.0, 0.0, 0.0)  # exact fixes: the round trip through WGS84 is checked
    summary = write_import(read_robotcar(fx.root), out,
                           ImportOptions(georef=GEOREF, gnss=noise, sfm=root / "sfm", compressed_images=True,
                                         per_camera=True))  # the single-camera layout; rigs: test_import_rig.py
    meta = json.loads((out / "import.json").read_text())
    return fx, out, summary, np.array(meta["map_from_world"])


def test_published_intrinsics_constants():
    assert ROBOTCAR_INTRINSICS == PUBLISHED


def test_nvm_names_and_poses(imported):
    fx, *_ = imported
    poses = read_nvm_poses(fx.root / "3D-models" / "all-merged" / "all.nvm")
    truth = {p.name: p for p in fx.reference}
    assert set(poses) == set(truth)  # .png in the NVM -> the published .jpg
    for name, (R, t) in poses.items():
        assert np.allclose(R, truth[name].R, atol=1e-7) and np.allclose(t, truth[name].t, atol=1e-6)


def test_query_poses_rear_from_file_left_right_through_the_rig(imported):
    fx, *_ = imported
    plan = read_robotcar(fx.root)
    assert sorted(plan.queries) == [f"{c}_{s}" for c in ("night", "sun") for s in ("left", "rear", "right")]
    truth = {p.name: p for seq in fx.queries.values() for p in seq}
    for name, seq in plan.queries.items():
        assert [f.camera for f in seq] == [name.split("_")[-1]] * len(seq)
        assert np.all(np.diff([f.stamp_ns for f in seq]) > 0)
        for f in seq:
            p = truth[f.name]
            assert f.stamp_ns == int(f.name.split("/")[-1][:-4]) * 1000
            assert np.allclose(f.R, p.R, atol=1e-5) and np.allclose(f.t, p.t, atol=1e-5)
    unposed = read_robotcar(fx.root, include_unposed=True, conditions=["night"], cameras=["rear"])
    assert len(unposed.queries["night_rear"]) == len(plan.queries["night_rear"]) + 1


def test_bags_share_one_car_pose_and_carry_the_extrinsics(imported):
    fx, out, summary, map_from_world = imported
    truth = {p.stamp_ns: p for seq in fx.queries.values() for p in seq if p.camera == "rear"}
    car_poses = {}
    for seq in summary.sequences:
        drive = read_drive(out / "queries" / seq.name)
        cam = seq.camera
        assert drive.topics.image == "/camera/image_raw/compressed"
        stamps = [f.stamp_ns for f in drive.frames]
        condition = seq.name.rsplit("_", 1)[0]
        assert stamps == sorted(p.stamp_ns for p in fx.queries[condition] if p.camera == cam)
        assert np.all(np.diff(stamps) > 0)
        info = drive.camera_info
        fx_, fy_, cx, cy = PUBLISHED[cam]
        assert (info.width, info.height) == (1024, 1024)
        assert np.allclose(info.K, [[fx_, 0, cx - 0.5], [0, fy_, cy - 0.5], [0, 0, 1]], atol=1e-9)
        assert np.allclose(info.d, 0.0)
        assert drive.frames[0].image.shape == (1024, 1024, 3)
        # /tf_static: base_link (REP-103) from camera = base_from_car @ car_from_cam (published extrinsic)
        base_from_cam = drive.base_from_camera()
        assert np.allclose(base_from_cam, to_4x4(BASE_FROM_OPTICAL, np.zeros(3)) @ ROBOTCAR_EXTRINSICS[cam], atol=1e-5)
        for g in drive.ground_truth:
            car_poses.setdefault(g.stamp_ns, []).append(g.matrix)
            # and the rear camera's ground truth comes back as the file's pose
            if cam == "rear":
                p = truth[g.stamp_ns]
                assert np.allclose(np.linalg.inv(g.matrix @ base_from_cam) @ map_from_world, to_4x4(p.R, p.t), atol=1e-5)
        # GNSS without noise: the fix is the ground-truth base_link position, through WGS84 and back
        gt = {g.stamp_ns: g.matrix[:3, 3] for g in drive.ground_truth}
        for fix in drive.gnss:
            p = GEOREF.to_map(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
            assert np.linalg.norm(p - gt[fix.stamp_ns]) < 1e-6
        tum_stamps, tum_poses = read_tum(out / "queries" / f"{seq.name}_gt.txt")
        assert np.allclose(tum_poses, [g.matrix for g in drive.ground_truth], atol=1e-8)
    # left, rear and right bags agree on where the car was
    assert len(car_poses) == 4
    for poses in car_poses.values():
        assert len(poses) == 3 and all(np.allclose(T, poses[0], atol=1e-5) for T in poses)


def test_map_model_round_trip(imported):
    fx, out, summary, map_from_world = imported
    model = read_model(out / "sfm")
    truth = {p.name: p for p in fx.reference}
    # map names: <camera>/ + the dataset's condition/camera/stamp.jpg (the rig reads the camera from the head)
    assert {im.name for im in model.images.values()} == {f"{p.camera}/{n}" for n, p in truth.items()}
    for im in model.images.values():
        p = truth[im.name.split("/", 1)[1]]
        assert np.allclose(to_4x4(im.R, im.t) @ map_from_world, to_4x4(p.R, p.t), atol=1e-5)
        assert (out / "mapping" / "images" / im.name).is_file()


def test_missing_reference_image_is_reported(tmp_path):
    fx = make_robotcar(tmp_path / "dataset", n_ref=1, n_query=1)
    (fx.root / "images" / fx.reference[0].name).unlink()
    with pytest.raises(FileNotFoundError, match="all.nvm lists"):
        read_robotcar(fx.root)


def test_reference_poses_from_a_colmap_model(imported, tmp_path):
    """PixLoc's RobotCar download has no 3D-models/: the reference poses then come from a model."""
    fx, *_ = imported
    root = imported[1].parent
    plan = read_robotcar(fx.root, reference_poses=root / "sfm", conditions=["night"], cameras=["rear"])
    truth = {p.name: p for p in fx.reference if p.camera == "rear"}
    assert {f.name for f in plan.reference} == set(truth)
    for f in plan.reference:
        assert np.allclose(f.R, truth[f.name].R, atol=1e-9) and np.allclose(f.t, truth[f.name].t, atol=1e-9)
