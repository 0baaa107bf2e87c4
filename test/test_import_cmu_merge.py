"""``pixloc-ros import cmu`` over several slices: one map frame for the route, one merged SfM
model, query drives joined across slices, inconsistent slices refused."""
import json
import logging

import numpy as np
import pytest
from import_fixtures import CMU_QUERY_DAYS_US, make_cmu_slice, write_projected_model

from pixloc_ros.core.maps.colmap_io import read_model
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.importers import ImportOptions, write_import
from pixloc_ros.data.importers.cmu import CMU_CAMERAS, find_slices, read_cmu_slice, read_cmu_slices
from pixloc_ros.core.geometry.transforms import make_transform as to_4x4
from pixloc_ros.data.sim.dataset import read_mapping_poses

GEOREF = Georeference(40.4406, -79.9959, 300.0)
CAMS = {c.name: (c.model, c.width, c.height, c.params) for c in CMU_CAMERAS.values()}


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    """slice2 and slice3: consecutive stretches of one street in one world frame; each its own
    sparse/ model (point ids from 1 in both, as separate reconstructions have)."""
    root = tmp_path_factory.mktemp("CMU")
    a = make_cmu_slice(root, seed=0, number=2, world_seed=0)
    b = make_cmu_slice(root, seed=1, number=3, world_seed=0, x0=6.0, index0=10, time0_us=1_000_000)
    ma = write_projected_model(a.slice_dir / "sparse", a.reference, CAMS, n_points=40, seed=2)
    mb = write_projected_model(b.slice_dir / "sparse", b.reference, CAMS, n_points=50, seed=3)
    return root, a, b, ma, mb


def test_slices_become_one_plan_with_joined_drives(slices):
    root, a, b, _, _ = slices
    plan = read_cmu_slices([a.slice_dir, b.slice_dir])
    assert sorted(f.name for f in plan.reference) == sorted(p.name for p in a.reference + b.reference)
    assert plan.sfm_model == [a.slice_dir / "sparse", b.slice_dir / "sparse"]
    assert plan.notes["slices"] == "2,3"
    one = read_cmu_slice(a.slice_dir)
    assert len(plan.queries) == len(one.queries) == 4  # c0/c1 x two days: each drive spans both slices
    for name, frames in plan.queries.items():
        stamps = [f.stamp_ns for f in frames]
        assert stamps == sorted(stamps) and len(frames) == 2 * len(one.queries[name])
        assert {f.name for f in frames} >= {f.name for f in one.queries[name]}
    single = read_cmu_slices([a.slice_dir])  # one slice: the single-slice plan
    assert [f.name for f in single.reference] == [f.name for f in one.reference] and single.queries.keys() == one.queries.keys()


def test_merged_import_keeps_the_slices_relative_poses_and_merges_the_models(slices, tmp_path):
    root, a, b, ma, mb = slices
    summary = write_import(read_cmu_slices([a.slice_dir, b.slice_dir]), tmp_path / "out", ImportOptions(georef=GEOREF))
    assert summary.reference_images == summary.sfm_images == 12
    assert summary.sfm_points == len(ma.point_ids) + len(mb.point_ids)
    meta = json.loads((tmp_path / "out" / "import.json").read_text())
    map_from_world = np.array(meta["map_from_world"])
    truth = {f"{p.camera}/{p.name}": to_4x4(p.R, p.t) for p in a.reference + b.reference}  # map names
    mapped = {p.name: p.cam_from_world for p in read_mapping_poses(tmp_path / "out" / "mapping" / "poses.txt")}
    # one map frame: every reference pose, from either slice, is its dataset pose moved by one transform
    for name, cam_from_world in truth.items():
        np.testing.assert_allclose(mapped[name] @ map_from_world, cam_from_world, atol=1e-6)
    model = read_model(tmp_path / "out" / "sfm")
    assert len(model.cameras) == 2  # c0 and c1 of both slices are the same two cameras
    for pid, imgs, idxs in zip(model.point_ids, model.track_image_ids, model.track_point2D_idx):
        for i, k in zip(imgs, idxs):
            assert model.images[int(i)].point3D_ids[int(k)] == pid  # tracks and keypoints agree after renumbering
    im = model.image_by_name(f"{b.reference[0].camera}/{b.reference[0].name}")
    np.testing.assert_allclose(to_4x4(im.R, im.t) @ map_from_world, truth[im.name], atol=1e-6)
    # the merged model's points still project onto their keypoints (moved rigidly with the cameras)
    from pixloc_ros.core.geometry.camera import Camera
    import torch
    for im in model.images.values():
        cam = model.cameras[im.camera_id]
        engine = Camera.from_colmap(cam.model, cam.width, cam.height, cam.params)
        has = im.point3D_ids >= 0
        rows = np.searchsorted(model.point_ids, im.point3D_ids[has])
        uv, _ = engine.world2image(torch.from_numpy(model.xyz[rows] @ im.R.T + im.t))
        np.testing.assert_allclose(uv.numpy() + 0.5, im.xys[has], atol=1e-3)


def test_an_image_listed_by_two_slices_must_have_one_pose(slices, tmp_path):
    import shutil
    root, a, b, _, _ = slices
    c_dir = tmp_path / "slice4"
    shutil.copytree(b.slice_dir, c_dir)
    for f in c_dir.glob("ground-truth-database-images-slice3.txt"):
        f.rename(c_dir / "ground-truth-database-images-slice4.txt")
    plan = read_cmu_slices([b.slice_dir, c_dir])  # same images, same poses: each kept once
    assert len(plan.reference) == len(b.reference)
    gt = c_dir / "ground-truth-database-images-slice4.txt"
    lines = gt.read_text().splitlines()
    name, *values = lines[0].split()
    values[-3] = f"{float(values[-3]) + 0.5:.6f}"  # move one camera centre by 0.5 m
    gt.write_text("\n".join([" ".join([name, *values]), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"slice3 and slice4 give .* 0\.500 m"):
        read_cmu_slices([b.slice_dir, c_dir])


def test_a_slice_far_from_the_others_is_reported(slices, tmp_path, caplog):
    root, a, _, _, _ = slices
    far = make_cmu_slice(tmp_path, seed=4, number=9, world_seed=0, x0=5000.0, index0=50)
    with caplog.at_level(logging.WARNING):
        plan = read_cmu_slices([a.slice_dir, far.slice_dir])
    assert "slice9" in caplog.text and "same frame" in caplog.text
    assert "slice9: 49" in plan.notes["slice_gaps_m"]


def test_slice_selection_and_the_command(slices, tmp_path, capsys):
    root, a, b, _, _ = slices
    assert find_slices(root) == [a.slice_dir, b.slice_dir] == find_slices(root, "2-3")
    assert find_slices(root, "3") == [b.slice_dir]
    with pytest.raises(FileNotFoundError, match=r"slices \[4, 5\]"):
        find_slices(root, "2-5")
    from pixloc_ros.cli import main
    assert main(["import", "cmu", "--root", str(root), "--slices", "2-3", "--out", str(tmp_path / "o1")]) == 0
    out = capsys.readouterr().out
    assert "12 reference images" in out and "given:" in out
    assert main(["import", "cmu", "--slice", str(a.slice_dir), "--slice", str(b.slice_dir),
                 "--out", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o1" / "import.json").read_text().replace("o1", "") == \
        (tmp_path / "o2" / "import.json").read_text().replace("o2", "")
    assert main(["import", "cmu", "--out", str(tmp_path / "o3")]) == 1
    assert "--slice DIR" in capsys.readouterr().err
    days = {d * 1000 // 10**9 for d in CMU_QUERY_DAYS_US}
    assert len(list((tmp_path / "o1" / "queries").glob("*_gt.txt"))) == len(days)  # one rig drive per day
    assert main(["import", "cmu", "--root", str(root), "--slices", "2-3", "--per-camera", "--out", str(tmp_path / "o4")]) == 0
    assert len(list((tmp_path / "o4" / "queries").glob("*_gt.txt"))) == 2 * len(days)  # c0 and c1 per day
