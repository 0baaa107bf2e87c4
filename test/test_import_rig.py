"""``pixloc-ros import cmu`` / ``import robotcar`` as camera rigs (issue 30): one bag per drive with every
camera on ``/<camera>/image_raw`` + ``/<camera>/camera_info``, the extrinsics computed from the
dataset's per-image poses on /tf_static (round trip to the fixtures' rigid rigs), one ground truth per
instant, frames that ``evaluate --rig``'s grouping (``RigFrameGrouper``) puts into full instants, and
one map whose keyframes carry the camera that took them; a rig that is not rigid is refused."""
import json

import numpy as np
import pytest

from import_fixtures import (CMU_CAR_FROM_CAM, CMU_QUERY_DAYS_US, ROBOTCAR_EXTRINSICS, make_cmu_slice, make_robotcar,
                             write_projected_model)
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.geometry.transforms import invert_transform, make_transform
from pixloc_ros.core.maps.colmap_io import read_model
from pixloc_ros.core.tracking.rig_observe import keyframe_camera
from pixloc_ros.data.evaluation.rig_replay import group_rig_frames, read_rig_drive
from pixloc_ros.data.importers import GnssNoise, ImportOptions, write_import
from pixloc_ros.data.importers.cmu import CMU_CAMERAS, read_cmu_slice
from pixloc_ros.data.importers.common import BASE_FROM_OPTICAL
from pixloc_ros.data.importers.rig_output import RigCheck
from pixloc_ros.data.importers.robotcar import read_robotcar
from pixloc_ros.data.sim.dataset import read_mapping_poses, read_tum

UPRIGHT = make_transform(BASE_FROM_OPTICAL, np.zeros(3))  # base_link = the anchor camera, REP-103 axes
EXACT = GnssNoise(0.0, 0.0, 0.0, 0.0)
CMU_GEOREF = Georeference(40.4406, -79.9959, 300.0, 75.0)
RC_GEOREF = Georeference(51.7520, -1.2577, 70.0)


@pytest.fixture(scope="module")
def cmu(tmp_path_factory):
    root = tmp_path_factory.mktemp("CMU")
    fx = make_cmu_slice(root)
    cams = {c.name: (c.model, c.width, c.height, c.params) for c in CMU_CAMERAS.values()}
    write_projected_model(fx.slice_dir / "sparse", fx.reference, cams)
    out = root / "out"
    summary = write_import(read_cmu_slice(fx.slice_dir), out, ImportOptions(georef=CMU_GEOREF, gnss=EXACT))
    meta = json.loads((out / "import.json").read_text())
    return fx, out, summary, np.array(meta["map_from_world"]), meta


@pytest.fixture(scope="module")
def robotcar(tmp_path_factory):
    root = tmp_path_factory.mktemp("RobotCar")
    fx = make_robotcar(root / "dataset")
    out = root / "out"
    cams = {c: ("PINHOLE", 1024, 1024, v) for c, v in
            {"left": (400.0, 400.0, 500.107605, 511.461426), "rear": (400.0, 400.0, 508.222931, 498.187378),
             "right": (400.0, 400.0, 502.503754, 490.259033)}.items()}
    write_projected_model(root / "sfm", fx.reference, cams)
    summary = write_import(read_robotcar(fx.root), out,
                           ImportOptions(georef=RC_GEOREF, gnss=EXACT, sfm=root / "sfm", compressed_images=True))
    meta = json.loads((out / "import.json").read_text())
    return fx, out, summary, np.array(meta["map_from_world"]), meta


def _assert_same_pose(cam_from_world: np.ndarray, R: np.ndarray, t: np.ndarray) -> None:
    """Rotation and camera centre (the fixtures' poses are printed with 6 decimals far from the
    dataset's origin: t = -R c moves by 1e-6 rad x 400 m, the centre does not)."""
    np.testing.assert_allclose(cam_from_world[:3, :3], R, atol=2e-5)
    np.testing.assert_allclose(-cam_from_world[:3, :3].T @ cam_from_world[:3, 3], -R.T @ t, atol=2e-5)


def _day(stamp_ns: int) -> int:
    return int(np.argmin([abs(stamp_ns // 1000 - d) for d in CMU_QUERY_DAYS_US]))


def test_cmu_rig_bag_has_every_camera_and_the_extrinsics_of_the_rig(cmu):
    fx, out, summary, map_from_world, meta = cmu
    assert [s.name for s in summary.sequences] == ["20100901", "20101019"]  # one drive per day, both cameras
    # base_link = c0 upright; c1 where the fixture's car put it: base_from_c0 @ c0_from_car @ car_from_c1
    expected = {"c0": UPRIGHT, "c1": UPRIGHT @ np.linalg.inv(CMU_CAR_FROM_CAM["c0"]) @ CMU_CAR_FROM_CAM["c1"]}
    for seq in summary.sequences:
        assert seq.camera == "c0,c1" and seq.rig.instants == 3 and seq.rig.posed_instants == 3
        rig, drives = read_rig_drive(out / "queries" / seq.name, ["c0", "c1"])
        for cam in rig.cameras:  # /tf_static round trip: the extrinsics computed from the poses
            np.testing.assert_allclose(cam.base_from_camera, expected[cam.name], atol=2e-5)
            frames = drives[cam.name].frames
            want = sorted(p.stamp_ns for p in fx.queries if p.camera == cam.name and _day(p.stamp_ns) == int(seq.name == "20101019"))
            assert [f.stamp_ns for f in frames] == want
            assert all(f.frame_id == f"{cam.name}_camera_optical_frame" == f.camera_info.frame_id for f in frames)
            assert frames[0].image.shape == (768, 1024, 3)
            assert abs(frames[0].camera_info.fx - CMU_CAMERAS[cam.name].params[0]) < 1e-9
        # one ground truth per instant, at c0's stamp; through each camera's extrinsic it is that camera's pose
        truth = {p.name: p for p in fx.queries}
        c0 = drives["c0"].frames
        gt = drives["c0"].ground_truth
        assert [g.stamp_ns for g in gt] == [f.stamp_ns for f in c0]
        for g in gt:
            for cam in rig.cameras:
                p = next(q for q in truth.values() if q.camera == cam.name and abs(q.stamp_ns - g.stamp_ns) < 10**6)
                cam_from_world = invert_transform(g.matrix @ cam.base_from_camera) @ map_from_world
                _assert_same_pose(cam_from_world, p.R, p.t)
        # exact GNSS: the fix is the base_link position
        for fix, g in zip(drives["c0"].gnss, gt):
            assert fix.stamp_ns == g.stamp_ns
            assert np.linalg.norm(CMU_GEOREF.to_map(fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
                                  - g.matrix[:3, 3]) < 1e-6
        tum_stamps, tum_poses = read_tum(out / "queries" / f"{seq.name}_gt.txt")
        assert list(tum_stamps) == [g.stamp_ns for g in gt]
        # evaluate --rig's grouping (RigFrameGrouper at the node's 10 ms): every instant with both cameras
        groups = group_rig_frames(rig, drives, 10_000_000)
        assert len(groups) == 3 and all(not g.missing and set(g.frames) == {"c0", "c1"} for g in groups)
        assert [g.stamp_ns for g in groups] == [f.stamp_ns for f in c0]
        info = next(s for s in meta["sequences"] if s["name"] == seq.name)["rig"]
        assert info["cameras"] == ["c0", "c1"] and info["max_deviation_m_deg"][0] < 1e-4


def test_cmu_map_holds_every_cameras_keyframes_named_by_camera(cmu):
    fx, out, _, map_from_world, _ = cmu
    model = read_model(out / "sfm")
    poses = read_mapping_poses(out / "mapping" / "poses.txt")
    truth = {p.name: p for p in fx.reference}
    for names in ([im.name for im in model.images.values()], [p.name for p in poses]):
        assert sorted(names) == sorted(f"{p.camera}/{p.name}" for p in fx.reference)
        # the rig pipeline (keyframe seeds) reads each keyframe's camera from its name
        assert all(keyframe_camera(n, ["c0", "c1"]) == truth[n.split("/")[1]].camera for n in names)
    assert {keyframe_camera(p.name, ["c0", "c1"]) for p in poses} == {"c0", "c1"}
    for p in poses:
        assert (out / "mapping" / "images" / p.name).is_file()
        q = truth[p.name.split("/")[1]]
        _assert_same_pose(p.cam_from_world @ map_from_world, q.R, q.t)


def test_robotcar_rig_bag_compressed_with_the_published_extrinsics(robotcar):
    fx, out, summary, map_from_world, meta = robotcar
    assert [s.name for s in summary.sequences] == ["night", "sun"]
    names = ["left", "rear", "right"]
    for seq in summary.sequences:
        rig, drives = read_rig_drive(out / "queries" / seq.name, names)  # /<camera>/image_raw/compressed
        for cam in rig.cameras:
            # base_link = the car (extrinsics/): the poses' relative extrinsics agree with the published ones
            published = make_transform(BASE_FROM_OPTICAL, np.zeros(3)) @ ROBOTCAR_EXTRINSICS[cam.name]
            np.testing.assert_allclose(cam.base_from_camera, published, atol=2e-5)
            frames = drives[cam.name].frames
            assert [f.stamp_ns for f in frames] == sorted(p.stamp_ns for p in fx.queries[seq.name] if p.camera == cam.name)
            assert frames[0].image.shape == (1024, 1024, 3)  # the jpeg bytes decode
        rear = {p.stamp_ns: p for p in fx.queries[seq.name] if p.camera == "rear"}
        for g in drives["left"].ground_truth:
            cam_from_world = invert_transform(g.matrix @ rig.cameras[1].base_from_camera) @ map_from_world
            _assert_same_pose(cam_from_world, rear[g.stamp_ns].R, rear[g.stamp_ns].t)
        groups = group_rig_frames(rig, drives, 10_000_000)
        assert len(groups) == 2 and all(set(g.frames) == set(names) for g in groups)
        info = next(s for s in meta["sequences"] if s["name"] == seq.name)["rig"]
        assert max(info["from_published_extrinsics_m_deg"]) < 1e-4
    model = read_model(out / "sfm")
    assert {keyframe_camera(im.name, names) for im in model.images.values()} == set(names)


def test_without_query_poses_the_extrinsics_come_from_the_reference_instants(tmp_path):
    fx = make_robotcar(tmp_path / "dataset", n_ref=3, n_query=1)
    (fx.root / "robotcar_v2_train.txt").unlink()
    (fx.root / "extrinsics" / "rear_extrinsics.txt").unlink()  # no published rig: the poses alone
    for cam in ("left", "right"):
        (fx.root / "extrinsics" / f"{cam}_extrinsics.txt").unlink()
    plan = read_robotcar(fx.root, include_unposed=True, conditions=["night"], cameras=["rear", "left"])
    summary = write_import(plan, tmp_path / "out", ImportOptions(georef=RC_GEOREF, sfm=_model(fx, tmp_path)))
    seq = summary.sequences[0]
    assert seq.name == "night" and seq.posed_frames == 0 and "reference images" in seq.rig.extrinsics.source
    rig, drives = read_rig_drive(tmp_path / "out" / "queries" / "night", ["rear", "left"])
    # base_link = rear upright; left from the reference images' relative poses = the fixture's car rig
    np.testing.assert_allclose(rig.cameras[0].base_from_camera, UPRIGHT, atol=1e-9)
    expected = UPRIGHT @ np.linalg.inv(ROBOTCAR_EXTRINSICS["rear"]) @ ROBOTCAR_EXTRINSICS["left"]
    np.testing.assert_allclose(rig.cameras[1].base_from_camera, expected, atol=2e-5)
    assert not drives["rear"].ground_truth and not drives["rear"].gnss


def _model(fx, tmp_path):
    """A model of the rear and left reference images (the import's cameras)."""
    cams = {c: ("PINHOLE", 1024, 1024, (400.0, 400.0, 500.0, 500.0)) for c in ("left", "rear")}
    write_projected_model(tmp_path / "sfm", [p for p in fx.reference if p.camera in cams], cams)
    return tmp_path / "sfm"


def test_a_camera_that_is_not_rigid_with_the_others_is_refused(tmp_path, capsys):
    fx = make_cmu_slice(tmp_path, n_ref=2, n_query=3)
    cams = {c.name: (c.model, c.width, c.height, c.params) for c in CMU_CAMERAS.values()}
    write_projected_model(fx.slice_dir / "sparse", fx.reference, cams)
    pose_file = sorted((fx.slice_dir / "camera-poses").glob("*.txt"))[0]
    lines = pose_file.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if "_c1_" in line)
    name, *values = lines[k].split()
    values[-1] = f"{float(values[-1]) + 0.5:.6f}"  # one c1 image 0.5 m off: no rigid rig at that instant
    lines[k] = " ".join([name, *values])
    pose_file.write_text("\n".join(lines) + "\n")
    from pixloc_ros.cli import main
    args = ["import", "cmu", "--slice", str(fx.slice_dir)]
    assert main(args + ["--out", str(tmp_path / "o1")]) == 1
    err = capsys.readouterr().err
    assert "drive 20100901: the pose of camera c1 relative to c0 is not constant" in err and name in err
    assert "--per-camera" in err and not (tmp_path / "o1").exists()
    assert main(args + ["--per-camera", "--out", str(tmp_path / "o3")]) == 0  # one camera per bag: no rig to check
    assert main(args + ["--extrinsics-tolerance", "1.0,1.0", "--out", str(tmp_path / "o4")]) == 0
    assert "evaluate --rig c0,c1" in capsys.readouterr().out
    # cameras whose stamps never meet within the tolerance give no instant to compute the rig from
    with pytest.raises(ValueError, match="cannot compute the extrinsics of cameras"):
        write_import(read_cmu_slice(fx.slice_dir), tmp_path / "o2",
                     ImportOptions(georef=CMU_GEOREF, rig_check=RigCheck(tolerance_ns=100)))
