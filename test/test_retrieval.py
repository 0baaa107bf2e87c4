"""Keyframe and point retrieval on hand-built maps with known answers."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.maps.mapfile_format import LevelInfo, MapCamera, MapHeader
from pixloc_ros.core.maps.mapfile_writer import contents_from_observations, write_map
from pixloc_ros.core.maps.retrieval import BASE_FROM_OPTICAL, MapIndex, RetrievalConfig

LEVELS = [LevelInfo(1, 8), LevelInfo(4, 16), LevelInfo(16, 16)]


def cam_from_world(center, yaw, pitch=0.0, height=None):
    """Camera looking along compass-free yaw (radians, from +x towards +y) in a z-up map, tilted
    down by ``pitch`` radians; optical frame x right, y down, z forward."""
    c = np.array(center, float)
    if height is not None:
        c[2] = height
    base = np.eye(4)
    base[:3, :3] = Rotation.from_euler("ZY", [yaw, pitch]).as_matrix()  # intrinsic: yaw, then pitch
    base[:3, 3] = c
    world_from_cam = base @ BASE_FROM_OPTICAL
    return np.linalg.inv(world_from_cam)


def unit_rows(rng, n, d):
    f = rng.normal(size=(n, d))
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float16)


def build_street_map(tmp_path, georef=None, height=1.5, pitch=0.0, empty_keyframes=()):
    """Keyframes every metre along +x looking +x (x = 0..9), and a return drive looking -x at
    x = 0.5..9.5. Each keyframe observes 10 points in front of it (x + 2..6 along its view) plus
    a point behind it; point tracks: each point seen by 3 keyframes, some by only 2."""
    rng = np.random.default_rng(0)
    poses, names = [], []
    for i in range(10):
        poses.append(cam_from_world([i, 0, 0], 0.0, pitch, height))
        names.append(f"fwd{i}")
    for i in range(10):
        poses.append(cam_from_world([i + 0.5, 0, 0], math.pi, pitch, height))
        names.append(f"back{i}")
    poses = np.stack(poses)
    K = len(poses)
    # Points: a grid in front of the street on both sides.
    xyz = np.array([[x, y, z] for x in np.arange(-3, 14, 0.5) for y in (-3.0, 3.0) for z in (0.0, 2.5)])
    P = len(xyz)
    obs_kf, obs_pt = [], []
    centers = -np.einsum("kji,kj->ki", poses[:, :3, :3], poses[:, :3, 3])
    dirs = poses[:, 2, :3]
    for k in range(K):
        if k in empty_keyframes:
            continue
        along = (xyz - centers[k]) @ dirs[k]
        seen = np.flatnonzero((along > 1.0) & (along < 7.0))
        behind = np.flatnonzero((along < -1.0) & (along > -2.0))[:2]  # deliberately behind the camera
        for p in np.concatenate([seen, behind]):
            obs_kf.append(k)
            obs_pt.append(p)
    obs_kf, obs_pt = np.array(obs_kf), np.array(obs_pt)
    track = np.bincount(obs_pt, minlength=P)
    track[::7] = 2  # some points have a short SfM track
    m = len(obs_kf)
    feats = [unit_rows(rng, m, l.dim) for l in LEVELS]
    conf = rng.uniform(0.05, 1.0, (m, 3)).astype(np.float16)
    header = MapHeader("f" * 64, "vgg16", LEVELS, [MapCamera(1, "PINHOLE", 640, 480, (400.0, 400.0, 320.0, 240.0))],
                       names, georef)
    kf_arrays = {"keyframe_ids": np.arange(K) + 100, "keyframe_camera_index": np.zeros(K),
                 "keyframe_R": poses[:, :3, :3], "keyframe_t": poses[:, :3, 3],
                 "keyframe_image_size": np.tile([640, 480], (K, 1))}
    pt_arrays = {"point_ids": np.arange(P) * 10 + 7, "point_xyz": xyz, "point_track_length": track}
    contents = contents_from_observations(header, kf_arrays, pt_arrays, obs_kf, obs_pt, feats, conf)
    path = write_map(tmp_path / "street.pxmap", contents)
    return MapIndex.open(path), dict(poses=poses, xyz=xyz, obs_kf=obs_kf, obs_pt=obs_pt, feats=feats,
                                     conf=conf, track=track, point_ids=np.arange(P) * 10 + 7)


@pytest.fixture
def street(tmp_path):
    return build_street_map(tmp_path)


def test_k_nearest_with_heading_filter(street):
    index, _ = street
    prior = cam_from_world([4.2, 0.3, 1.5], 0.1)  # looking +x, 6 degrees off
    r = index.retrieve(prior, num_keyframes=2, max_heading_diff_deg=45)
    assert [index.keyframe_names[i] for i in r.keyframe_indices] == ["fwd4", "fwd5"]
    np.testing.assert_allclose(r.distances_m, [np.hypot(0.2, 0.3), np.hypot(0.8, 0.3)])
    np.testing.assert_allclose(r.heading_diffs_deg, math.degrees(0.1), atol=1e-6)
    # without the heading filter the return-drive keyframe at 4.5 is the second nearest
    r = index.retrieve(prior, num_keyframes=2, max_heading_diff_deg=180)
    assert [index.keyframe_names[i] for i in r.keyframe_indices] == ["fwd4", "back4"]
    # looking backwards selects the return drive
    r = index.retrieve(cam_from_world([4.2, 0.0, 1.5], math.pi), num_keyframes=3, max_heading_diff_deg=30)
    assert [index.keyframe_names[i] for i in r.keyframe_indices] == ["back4", "back3", "back5"]


def test_keyframes_without_observations_are_skipped(tmp_path):
    index, _ = build_street_map(tmp_path, empty_keyframes={5})
    prior = cam_from_world([4.2, 0.0, 1.5], 0.0)
    r = index.retrieve(prior, num_keyframes=2)
    assert [index.keyframe_names[i] for i in r.keyframe_indices] == ["fwd4", "fwd3"]
    # they still count as keyframes of the map (markers, distance to the map)
    idx, _, _ = index.nearest_keyframes(prior[:3, :3].T @ -prior[:3, 3], k=1)
    assert index.keyframe_names[idx[0]] == "fwd4"
    assert index.distance_to_map([5.0, 0.0, 1.5]) == pytest.approx(0.0)


def test_heading_filter_grows_the_candidate_list(street):
    index, _ = street
    # with 1 candidate, the nearest keyframe (a return-drive one) fails the filter: must look further
    r = index.retrieve(cam_from_world([4.55, 0, 1.5], 0.0), num_keyframes=2, candidates=1)
    assert [index.keyframe_names[i] for i in r.keyframe_indices] == ["fwd5", "fwd4"]


def test_prior_accepts_pose_types(street):
    from pixloc_ros.core.geometry.pose import Pose

    index, _ = street
    T = cam_from_world([2.1, 0, 1.5], 0.0)
    a = index.retrieve(T)
    b = index.retrieve(Pose.from_4x4(torch.from_numpy(T)))
    c = index.retrieve((T[:3, :3], T[:3, 3]))
    assert list(a.keyframe_ids) == list(b.keyframe_ids) == list(c.keyframe_ids)


def test_points_are_the_observations_of_the_keyframes(street):
    index, data = street
    r = index.retrieve(cam_from_world([4.2, 0, 1.5], 0.0), num_keyframes=2, min_track_length=1)
    kf_rows = r.keyframe_indices
    expected = {(int(data["point_ids"][p]), int(k) + 100) for k, p in zip(data["obs_kf"], data["obs_pt"])
                if k in kf_rows}
    got = set(zip(r.points.point_ids.tolist(), r.points.keyframe_ids.tolist()))
    assert got == expected and len(r.points) == len(expected) == r.num_observations
    assert r.num_dropped_track == 0 and r.num_dropped_frustum == 0
    # features, confidences and coordinates are those stored for each (point, keyframe) observation
    lookup = {(int(data["point_ids"][p]), int(k) + 100): i for i, (k, p) in enumerate(zip(data["obs_kf"], data["obs_pt"]))}
    for row, key in enumerate(zip(r.points.point_ids.tolist(), r.points.keyframe_ids.tolist())):
        i = lookup[key]
        for level in range(3):
            assert torch.equal(r.points.features[level][row], torch.from_numpy(data["feats"][level][i]))
            assert r.points.confidences[level][row] == float(data["conf"][i, level])
        pid_row = (key[0] - 7) // 10
        np.testing.assert_allclose(r.points.xyz[row].numpy(), data["xyz"][pid_row], atol=1e-6)
    assert r.points.features[0].dtype == torch.float16 and r.points.xyz.dtype == torch.float32


def test_track_length_filter(street):
    index, data = street
    prior = cam_from_world([4.2, 0, 1.5], 0.0)
    r = index.retrieve(prior, min_track_length=3)
    all_rows = index.retrieve(prior, min_track_length=1)
    short = {int(data["point_ids"][p]) for p in np.flatnonzero(data["track"] < 3)}
    assert r.num_dropped_track > 0
    assert not short & set(r.points.point_ids.tolist())
    assert len(r.points) + r.num_dropped_track == len(all_rows.points)


def test_frustum_check_drops_points_behind_the_prior(street):
    index, data = street
    prior = cam_from_world([4.0, 0, 1.5], 0.0)
    camera = Camera.from_params(640, 480, 400, 400, 319.5, 239.5)
    r = index.retrieve(prior, camera=camera, min_track_length=1, frustum_margin=0.0)
    everything = index.retrieve(prior, min_track_length=1)
    assert r.num_dropped_frustum > 0
    assert len(r.points) + r.num_dropped_frustum == len(everything.points)
    # independently: every kept point projects inside the image, every dropped one does not
    p_cam = everything.points.xyz.double().numpy() @ prior[:3, :3].T + prior[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 400 * p_cam[:, 0] / p_cam[:, 2] + 319.5
        v = 400 * p_cam[:, 1] / p_cam[:, 2] + 239.5
    inside = (p_cam[:, 2] > 1e-3) & (u >= 0) & (u <= 639) & (v >= 0) & (v <= 479)
    kept = set(zip(r.points.point_ids.tolist(), r.points.keyframe_ids.tolist()))
    ids = list(zip(everything.points.point_ids.tolist(), everything.points.keyframe_ids.tolist()))
    assert kept == {k for k, ok in zip(ids, inside) if ok}
    assert (p_cam[~inside, 2] < 0).any()  # the points placed behind the keyframes are among the dropped
    # a wide margin keeps points slightly outside the image, never those behind the camera
    wide = index.retrieve(prior, camera=camera, min_track_length=1, frustum_margin=1.0)
    assert len(wide.points) >= len(r.points)
    behind = set(np.array(ids)[p_cam[:, 2] <= 0, 0].tolist())
    assert not behind & set(wide.points.point_ids.tolist())


def test_averaged_mode_is_confidence_weighted_mean(street):
    index, data = street
    prior = cam_from_world([4.2, 0, 1.5], 0.0)
    obs = index.retrieve(prior, num_keyframes=3, mode="observations")
    avg = index.retrieve(prior, num_keyframes=3, mode="averaged")
    assert avg.mode == "averaged"
    ids = obs.points.point_ids.numpy()
    assert sorted(avg.points.point_ids.tolist()) == sorted(set(ids.tolist()))
    assert (avg.points.keyframe_ids == -1).all()
    assert len(avg.points) < len(obs.points)  # tracks overlap between neighbouring keyframes
    for row, pid in enumerate(avg.points.point_ids.tolist()):
        sel = ids == pid
        np.testing.assert_allclose(avg.points.xyz[row].numpy(), obs.points.xyz[sel][0].numpy())
        for level in range(3):
            f = obs.points.features[level][sel].double().numpy()
            c = obs.points.confidences[level][sel].double().numpy()
            mean = (f * c[:, None]).sum(0) / c.sum()
            expected = mean / np.linalg.norm(mean)
            np.testing.assert_allclose(avg.points.features[level][row].double().numpy(), expected, atol=2e-3)
            assert avg.points.confidences[level][row].item() == pytest.approx(c.mean(), rel=1e-5)
    # both cases were exercised: points seen once and points seen by several keyframes
    counts = np.unique(ids, return_counts=True)[1]
    assert (counts == 1).any() and (counts > 1).any()


def test_no_keyframe_in_range_gives_empty_points(street):
    index, _ = street
    r = index.retrieve(cam_from_world([500, 0, 1.5], 0.0), max_distance_m=50)
    assert len(r.keyframe_indices) == 0 and len(r.points) == 0
    assert r.points.features[1].shape == (0, 16)


def test_bounds_and_distance_to_map(street):
    index, _ = street
    np.testing.assert_allclose(index.bounds.min, [0, 0, 1.5], atol=1e-9)
    np.testing.assert_allclose(index.bounds.max, [9.5, 0, 1.5], atol=1e-9)
    assert index.bounds.contains([5, 0, 1.5]) and not index.bounds.contains([5, 3, 1.5])
    assert index.bounds.contains([5, 3, 1.5], margin_m=3.0)
    assert index.distance_to_map([5.2, 4.0, 1.5]) == pytest.approx(np.hypot(0.2, 4.0))
    centres = index.keyframe_world_from_cam[:, :3, 3]
    np.testing.assert_allclose(centres, index.keyframe_centers, atol=1e-12)


@pytest.mark.parametrize("pitch_deg", [0.0, 7.0])
def test_lift_2d_pose_takes_height_and_tilt_from_keyframes(tmp_path, pitch_deg):
    index, _ = build_street_map(tmp_path, height=1.7, pitch=math.radians(pitch_deg))
    yaw = 0.4
    map_from_base = index.lift_2d_pose(3.3, 0.2, yaw)
    assert map_from_base.shape == (4, 4)
    np.testing.assert_allclose(map_from_base[:3, 3], [3.3, 0.2, 1.7], atol=1e-9)
    R = map_from_base[:3, :3]
    z_yaw, y_pitch, x_roll = Rotation.from_matrix(R).as_euler("ZYX")
    assert z_yaw == pytest.approx(yaw, abs=1e-9)
    assert y_pitch == pytest.approx(math.radians(pitch_deg), abs=1e-9)
    assert x_roll == pytest.approx(0.0, abs=1e-9)
    # a camera mounted 1.2 m above base_link: the base is that much lower than the keyframes
    base_from_cam = BASE_FROM_OPTICAL.copy()
    base_from_cam[2, 3] = 1.2
    lifted = index.lift_2d_pose(3.3, 0.2, yaw, base_from_cam=base_from_cam)
    if pitch_deg == 0.0:
        assert lifted[2, 3] == pytest.approx(0.5)


def test_gnss_to_map(tmp_path):
    georef = Georeference(47.37, 8.54, 410.0, heading_deg=90.0)
    index, _ = build_street_map(tmp_path, georef=georef)
    assert index.georef == georef
    lat, lon, alt = georef.to_geodetic(np.array([12.0, -3.0, 1.0]))
    np.testing.assert_allclose(index.gnss_to_map(lat, lon, alt), [12.0, -3.0, 1.0], atol=1e-6)


def test_gnss_without_georef_is_an_error(street):
    index, _ = street
    with pytest.raises(ValueError, match="no georeference"):
        index.gnss_to_map(47.0, 8.0, 400.0)


def test_config_validation():
    with pytest.raises(ValueError, match="mode"):
        RetrievalConfig(mode="mean")
    with pytest.raises(ValueError, match="num_keyframes"):
        RetrievalConfig(num_keyframes=0)


def test_fingerprint_and_keyframe_facts(street):
    index, _ = street
    assert index.weights_fingerprint == "f" * 64
    assert index.num_keyframes == 20
    cam = index.keyframe_camera(3)
    np.testing.assert_allclose(cam.c.numpy(), [319.5, 239.5])  # COLMAP corner origin -> pixel centres


def test_frustum_check_uses_the_camera_distortion(street):
    index, _ = street
    prior = cam_from_world([3.0, 0.4, 1.5], 0.15)
    # strong barrel distortion: its monotonic range ends inside the field of view of the pinhole
    camera = Camera.from_params(640, 480, 300, 300, 319.5, 239.5, [-0.3, 0.08, 0.001, -0.002, -0.01])
    everything = index.retrieve(prior, min_track_length=1)
    margin = 0.1
    r = index.retrieve(prior, camera=camera, min_track_length=1, frustum_margin=margin)
    p_cam = everything.points.xyz.double() @ torch.from_numpy(prior[:3, :3]).T + torch.from_numpy(prior[:3, 3])
    p2d, valid = camera.world2image(p_cam)
    size = camera.size
    inside = valid & ((p2d >= -margin * size) & (p2d <= (1 + margin) * size - 1)).all(-1)
    ids = list(zip(everything.points.point_ids.tolist(), everything.points.keyframe_ids.tolist()))
    expected = {k for k, ok in zip(ids, inside.tolist()) if ok}
    assert set(zip(r.points.point_ids.tolist(), r.points.keyframe_ids.tolist())) == expected
    assert 0 < len(expected) < len(ids)
    # a new camera object with other intrinsics is not served from the cache
    narrow = Camera.from_params(640, 480, 2000, 2000, 319.5, 239.5)
    assert len(index.retrieve(prior, camera=narrow, min_track_length=1, frustum_margin=margin).points) < len(expected)


def test_averaged_mode_with_zero_confidences_uses_the_plain_mean(tmp_path):
    levels = LEVELS
    header = MapHeader("f" * 64, "vgg16", levels, [MapCamera(1, "PINHOLE", 640, 480, (400.0, 400.0, 320.0, 240.0))],
                       ["a", "b"])
    poses = np.stack([cam_from_world([0, 0, 0], 0.0), cam_from_world([1, 0, 0], 0.0)])
    rng = np.random.default_rng(5)
    feats = [unit_rows(rng, 2, l.dim) for l in levels]
    conf = np.array([[0.0, 0.5, 0.2], [0.0, 0.1, 0.6]], np.float16)
    contents = contents_from_observations(
        header, {"keyframe_ids": np.array([1, 2]), "keyframe_camera_index": np.zeros(2), "keyframe_R": poses[:, :3, :3],
                 "keyframe_t": poses[:, :3, 3], "keyframe_image_size": np.tile([640, 480], (2, 1))},
        {"point_ids": np.array([42]), "point_xyz": np.array([[10.0, 0, 0]]), "point_track_length": np.array([3])},
        np.array([0, 1]), np.array([0, 0]), feats, conf)
    index = MapIndex.open(write_map(tmp_path / "z.pxmap", contents))
    r = index.retrieve(cam_from_world([0.5, 0, 0], 0.0), mode="averaged")
    assert len(r.points) == 1 and r.points.point_ids.tolist() == [42]
    plain = feats[0].astype(np.float64).sum(0)
    np.testing.assert_allclose(r.points.features[0][0].double().numpy(), plain / np.linalg.norm(plain), atol=2e-3)
    assert r.points.confidences[0][0] == 0.0
    weighted = feats[2][0] * 0.2 + feats[2][1] * 0.6
    np.testing.assert_allclose(r.points.features[2][0].double().numpy(), weighted / np.linalg.norm(weighted), atol=2e-3)
    assert r.points.confidences[2][0].item() == pytest.approx(0.4, abs=1e-3)
