"""``pixloc-ros import sequence``: KITTI/TUM pose files, intrinsics conventions, frame selection,
and the real KITTI frames (map triangulated from some frames, query bag from the others)."""
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pixloc_ros.data.importers.sequence import list_images, parse_frame_indices, parse_intrinsics, \
    read_poses, read_sequence

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"
KITTI = REAL / "kitti00_first6"
KITTI_K = "PINHOLE 718.856 718.856 607.1928 185.2157"


def _random_world_from_cam(rng, n):
    Rs = Rotation.random(n, random_state=int(rng.integers(1 << 31))).as_matrix()
    cs = rng.uniform(-50, 50, (n, 3))
    return Rs, cs


def test_kitti_and_tum_pose_files_give_the_same_cam_from_world(tmp_path):
    rng = np.random.default_rng(0)
    Rs, cs = _random_world_from_cam(rng, 5)
    kitti = "\n".join(" ".join(f"{v:.12e}" for v in np.c_[R, c].reshape(-1)) for R, c in zip(Rs, cs))
    (tmp_path / "poses.txt").write_text(kitti + "\n")
    tum = "\n".join(f"{100 + 0.1 * i:.6f} " + " ".join(f"{v:.12f}" for v in (*c, *Rotation.from_matrix(R).as_quat()))
                    for i, (R, c) in enumerate(zip(Rs, cs)))
    (tmp_path / "traj.txt").write_text("# timestamp tx ty tz qx qy qz qw\n" + tum + "\n")

    k_poses, k_stamps = read_poses(tmp_path / "poses.txt")
    t_poses, t_stamps = read_poses(tmp_path / "traj.txt")
    assert k_stamps is None and np.allclose(t_stamps, [100 + 0.1 * i for i in range(5)])
    for (Rk, tk), (Rt, tt), R, c in zip(k_poses, t_poses, Rs, cs):
        # cam_from_world is the inverse of the file's camera-to-world: R^T, t = -R^T c
        assert np.allclose(Rk, R.T, atol=1e-9) and np.allclose(tk, -R.T @ c, atol=1e-8)
        assert np.allclose(Rt, Rk, atol=1e-9) and np.allclose(tt, tk, atol=1e-8)
        assert np.allclose(-Rk.T @ tk, c, atol=1e-8)  # camera centre survives


def test_bad_pose_rows_are_rejected_with_the_line(tmp_path):
    (tmp_path / "p.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n2 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(ValueError, match="p.txt:2: the rotation block is not orthonormal"):
        read_poses(tmp_path / "p.txt")
    (tmp_path / "q.txt").write_text("0 0 0 0 0 0 0 2\n")
    with pytest.raises(ValueError, match="not unit-norm"):
        read_poses(tmp_path / "q.txt", "tum")


@pytest.mark.parametrize("origin, shift", [("centre", 0.5), ("corner", 0.0)])
def test_intrinsics_string_pixel_origin(origin, shift):
    cam = parse_intrinsics("PINHOLE 700 710 320.25 240.75", 640, 480, origin)
    # stored in COLMAP's convention: corner origin, i.e. +0.5 px from an OpenCV principal point
    assert cam.model in ("PINHOLE", "OPENCV") and (cam.width, cam.height) == (640, 480)
    assert np.allclose(cam.params[:4], [700, 710, 320.25 + shift, 240.75 + shift])


def test_camera_info_yaml_is_pixel_centre(tmp_path):
    (tmp_path / "cam.yaml").write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: front\n"
        "camera_matrix: {rows: 3, cols: 3, data: [700, 0, 320.25, 0, 700, 240.75, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [-0.1, 0.01, 0.001, -0.002, 0]}\n")
    cam = parse_intrinsics(str(tmp_path / "cam.yaml"), 640, 480)
    assert cam.model == "OPENCV"
    assert np.allclose(cam.params, [700, 700, 320.75, 241.25, -0.1, 0.01, 0.001, -0.002])
    with pytest.raises(ValueError, match="intrinsics are for 640x480 images, the images are 320x240"):
        parse_intrinsics(str(tmp_path / "cam.yaml"), 320, 240)


def test_frame_selection():
    assert parse_frame_indices("0,2,4", 6) == [0, 2, 4]
    assert parse_frame_indices("0-9:3, 5", 10) == [0, 3, 5, 6, 9]
    with pytest.raises(ValueError, match="out of range"):
        parse_frame_indices("0,6", 6)
    with pytest.raises(ValueError, match="bad frame selection"):
        parse_frame_indices("a", 6)


def test_natural_order_and_image_list(tmp_path):
    for name in ("f10.png", "f2.png", "f1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["f1.png", "f2.png", "f10.png"]
    (tmp_path / "list.txt").write_text("f10.png\nf1.png\n")
    assert [p.name for p in list_images(tmp_path, tmp_path / "list.txt")] == ["f10.png", "f1.png"]


def _kitti_image_list(tmp_path) -> Path:
    # README of shared/data/real: ch8_left.png is frame 0, ch8_00000k.png frame k.
    names = ["ch8_left.png"] + [f"ch8_{k:06d}.png" for k in range(1, 6)]
    path = tmp_path / "kitti_images.txt"
    path.write_text("\n".join(names) + "\n")
    return path


@pytest.mark.real_data
@pytest.mark.skipif(not KITTI.is_dir(), reason="shared/data/real/kitti00_first6 is absent")
def test_kitti_plan_splits_map_and_query_frames(tmp_path):
    plan = read_sequence(KITTI, KITTI / "KITTI_00_gt_first6.txt", KITTI_K, image_list=_kitti_image_list(tmp_path),
                         map_frames="0,2,4", query_frames="1,3,5")
    assert [f.name for f in plan.reference] == ["ch8_left.png", "ch8_000002.png", "ch8_000004.png"]
    assert [f.name for f in plan.queries["query"]] == ["ch8_000001.png", "ch8_000003.png", "ch8_000005.png"]
    cam = plan.cameras["camera"]
    assert (cam.width, cam.height) == (1241, 376)
    assert np.allclose(cam.params[:4], [718.856, 718.856, 607.6928, 185.7157])  # +0.5: COLMAP corner origin
    # KITTI frame k is ~0.86 m further along the optical axis (z) of frame 0
    centres = np.stack([f.center for f in plan.reference])
    assert np.allclose(centres[:, 2], [0.0, 1.716275, 3.432648], atol=1e-6)
    stamps = [f.stamp_ns for f in plan.queries["query"]]
    assert np.all(np.diff(stamps) == 200_000_000)  # 10 Hz, two frames apart


@pytest.mark.real_data
@pytest.mark.skipif(not KITTI.is_dir(), reason="shared/data/real/kitti00_first6 is absent")
def test_kitti_import_through_the_cli(tmp_path):
    """Real KITTI frames: map triangulated (pycolmap) from frames 0,2,4, query bag of 1,3,5."""
    import json

    import torch

    from pixloc_ros.cli import main
    from pixloc_ros.core.geometry.camera import Camera
    from pixloc_ros.core.maps.colmap_io import read_model
    from pixloc_ros.data.bags import read_drive

    out = tmp_path / "kitti"
    assert main(["import", "sequence", "--images", str(KITTI), "--image-list", str(_kitti_image_list(tmp_path)),
                 "--poses", str(KITTI / "KITTI_00_gt_first6.txt"), "--intrinsics", KITTI_K,
                 "--map-frames", "0,2,4", "--query-frames", "1,3,5", "--out", str(out)]) == 0
    kitti = [np.vstack([np.array(row, float).reshape(3, 4), [0, 0, 0, 1]])
             for row in (line.split() for line in (KITTI / "KITTI_00_gt_first6.txt").read_text().splitlines())]
    map_from_world = np.array(json.loads((out / "import.json").read_text())["map_from_world"])

    model = read_model(out / "sfm")
    frame_of = {"ch8_left.png": 0, "ch8_000002.png": 2, "ch8_000004.png": 4}
    assert {im.name for im in model.images.values()} == set(frame_of)
    assert len(model.point_ids) > 100 and model.track_lengths.min() >= 2
    cam = model.cameras[next(iter(model.images.values())).camera_id]
    engine = Camera.from_colmap(cam.model, cam.width, cam.height, cam.params)
    index = {pid: i for i, pid in enumerate(model.point_ids)}
    for im in model.images.values():
        cam_from_map = np.eye(4)
        cam_from_map[:3, :3], cam_from_map[:3, 3] = im.R, im.t
        # known poses are kept: cam_from_world = cam_from_map @ map_from_world = inverse(KITTI row)
        assert np.allclose(cam_from_map @ map_from_world, np.linalg.inv(kitti[frame_of[im.name]]), atol=1e-6)
        ok = im.point3D_ids >= 0
        p_cam = model.xyz[[index[i] for i in im.point3D_ids[ok]]] @ im.R.T + im.t
        assert np.all(p_cam[:, 2] > 0)
        uv, _ = engine.world2image(torch.from_numpy(p_cam))
        err = np.linalg.norm(uv.numpy() + 0.5 - im.xys[ok], axis=1)
        # KITTI ground-truth poses are consistent to about a pixel (median 0.7-1.1 px seen here)
        assert np.median(err) < 1.5 and err.max() < 4.0

    drive = read_drive(out / "queries" / "query")
    assert [f.encoding for f in drive.frames] == ["mono8"] * 3 and drive.frames[0].image.shape == (376, 1241, 3)
    assert np.all(np.diff([f.stamp_ns for f in drive.frames]) == 200_000_000)
    assert np.allclose(drive.camera_info.K, [[718.856, 0, 607.1928], [0, 718.856, 185.2157], [0, 0, 1]])
    base_from_cam = drive.base_from_camera()
    for k, g in zip((1, 3, 5), drive.ground_truth):
        cam_from_map = np.linalg.inv(g.matrix @ base_from_cam)
        assert np.allclose(cam_from_map @ map_from_world, np.linalg.inv(kitti[k]), atol=1e-6)
        assert g.matrix[2, 2] > 0.99  # base_link is upright in the levelled map


@pytest.mark.real_data
@pytest.mark.skipif(not KITTI.is_dir(), reason="shared/data/real/kitti00_first6 is absent")
def test_one_database_holds_one_camera_per_dataset_camera(tmp_path):
    """The importers' SIFT step (core.maps.colmap_io) keeps each dataset camera's own COLMAP model."""
    import pycolmap  # only to inspect the database the helper wrote

    from pixloc_ros.core.maps.colmap_io import extract_sift_features_for_camera

    db = tmp_path / "db.db"
    extract_sift_features_for_camera(db, KITTI, ["ch8_left.png"], "PINHOLE", 1241, 376, (718.856, 718.856, 607.69, 185.72),
                                     max_num_features=500)
    extract_sift_features_for_camera(db, KITTI, ["ch5_stereo_right.png"], "OPENCV", 1241, 376,
                                     (718.856, 718.856, 607.69, 185.72, -0.01, 0.002, 0.0, 0.0), max_num_features=500)
    with pycolmap.Database.open(db) as database:
        cams = {c.camera_id: c for c in database.read_all_cameras()}
        images = {im.name: cams[im.camera_id] for im in database.read_all_images()}
        assert len(cams) == 2
        assert images["ch8_left.png"].model.name == "PINHOLE"
        assert images["ch5_stereo_right.png"].model.name == "OPENCV"
        assert np.allclose(images["ch5_stereo_right.png"].params[4:6], [-0.01, 0.002])
        assert all(database.num_keypoints_for_image(im.image_id) > 100 for im in database.read_all_images())
