"""Shared pieces of the importers: the upright camera extrinsic, levelling of an SfM frame,
sequence splitting, quaternion checks, and the ``--frame keep`` option."""
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from import_fixtures import make_cmu_slice, street_pose, write_projected_model
from pixloc_ros.core.maps.colmap_io import read_model
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.importers import Frame, ImportOptions, write_import
from pixloc_ros.data.importers.cmu import CMU_CAMERAS, read_cmu_slice
from pixloc_ros.data.importers.common import BASE_FROM_OPTICAL, leveling_transform, split_by_gap
from pixloc_ros.core.geometry.transforms import matrix_from_quat_wxyz as quat_wxyz_to_matrix


def test_upright_extrinsic_maps_optical_axes_to_rep103():
    assert np.allclose(BASE_FROM_OPTICAL @ BASE_FROM_OPTICAL.T, np.eye(3)) and np.isclose(np.linalg.det(BASE_FROM_OPTICAL), 1)
    assert np.allclose(BASE_FROM_OPTICAL @ [0, 0, 1], [1, 0, 0])  # looking forward
    assert np.allclose(BASE_FROM_OPTICAL @ [1, 0, 0], [0, -1, 0])  # image right = robot right
    assert np.allclose(BASE_FROM_OPTICAL @ [0, 1, 0], [0, 0, -1])  # image down = down


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_leveling_puts_up_on_z_and_the_centroid_at_the_origin(seed):
    rng = np.random.default_rng(seed)
    world_from_level = (Rotation.random(random_state=seed).as_matrix(), rng.uniform(-100, 100, 3))
    frames = []
    for i in range(20):
        R, t = street_pose(2.0 * i, rng.uniform(-180, 180), rng, world_from_level)
        frames.append(Frame(None, f"{i}.jpg", i, "c", R, t))
    T = leveling_transform(frames)
    up_world = world_from_level[0] @ [0, 0, 1]
    assert np.degrees(np.arccos(np.clip((T.R @ up_world)[2], -1, 1))) < 1.0  # tilt noise averages out
    assert np.allclose(T.apply(np.stack([f.center for f in frames])).mean(0), 0, atol=1e-9)


def test_leveling_refuses_cameras_that_disagree_on_up():
    frames = [Frame(None, f"{i}", i, "c", Rotation.random(random_state=i).as_matrix(), np.zeros(3)) for i in range(40)]
    with pytest.raises(ValueError, match="disagree on the up direction"):
        leveling_transform(frames)


def test_split_by_gap_orders_and_cuts():
    frames = [Frame(None, str(s), int(s * 1e9), "c") for s in (5, 1, 2, 100, 101, 3)]
    parts = split_by_gap(frames, 10.0)
    assert [[f.name for f in p] for p in parts] == [["1", "2", "3", "5"], ["100", "101"]]
    assert len(split_by_gap(frames, None)) == 1


def test_non_unit_quaternion_is_a_parse_error():
    assert np.allclose(quat_wxyz_to_matrix([1, 0, 0, 0]), np.eye(3))
    with pytest.raises(ValueError, match="not unit-norm"):
        quat_wxyz_to_matrix([0.5, 0, 0, 0])


def test_frame_keep_leaves_the_dataset_frame(tmp_path):
    fx = make_cmu_slice(tmp_path, n_ref=2, n_query=1)
    cams = {c.name: (c.model, c.width, c.height, c.params) for c in CMU_CAMERAS.values()}
    write_projected_model(fx.slice_dir / "sparse", fx.reference, cams)
    write_import(read_cmu_slice(fx.slice_dir), tmp_path / "out",
                 ImportOptions(georef=Georeference(40.0, -80.0, 300.0), frame="keep"))
    assert np.allclose(json.loads((tmp_path / "out" / "import.json").read_text())["map_from_world"], np.eye(4))
    truth = {f"{p.camera}/{p.name}": p for p in fx.reference}  # map names carry the camera
    for im in read_model(tmp_path / "out" / "sfm").images.values():
        assert np.allclose(im.R, truth[im.name].R, atol=1e-9) and np.allclose(im.t, truth[im.name].t, atol=1e-6)
