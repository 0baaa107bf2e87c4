"""Map compilation: stored reference features equal the network's features sampled at the
observations (recomputed here independently), on a synthetic model and on a real one; an
observation inside the finest level's border pad is dropped, inside a coarser level's pad its
confidence at that level is exactly 0."""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixloc_ros.core.engine.checkpoint import init_weights, save_weights, weights_fingerprint
from pixloc_ros.core.maps.colmap_io import SfmCamera, SfmImage, SfmModel, read_model, write_model
from pixloc_ros.core.maps.compile_keyframes import CompileConfig
from pixloc_ros.core.engine.images import resized_size
from pixloc_ros.core.maps.compile import compile_map
from pixloc_ros.core.maps.mapfile_format import WeightsMismatchError
from pixloc_ros.core.maps.mapfile import open_map
from pixloc_ros.core.maps.retrieval import MapIndex

REAL = Path(__file__).resolve().parents[2] / "shared/data/real/maupertuis_colmap/colmap"
STRIDES = (1, 4, 16)


def rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def project_colmap(cam: SfmCamera, R, t, xyz):
    """Independent projection in COLMAP's convention (corner origin), PINHOLE or RADIAL."""
    p = xyz @ R.T + t
    x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    if cam.model == "PINHOLE":
        fx, fy, cx, cy = cam.params
        radial = 1.0
    else:  # RADIAL f cx cy k1 k2
        f, cx, cy, k1, k2 = cam.params
        fx = fy = f
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
    return np.stack([fx * x * radial + cx, fy * y * radial + cy], -1), p[:, 2]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """4 keyframes with two cameras, textured images, noisy keypoints, tracks of length 1..4."""
    root = tmp_path_factory.mktemp("synthetic_sfm")
    rng = np.random.default_rng(1)
    # small images (the network is slow on 2 cores): most configurations use small border pads
    cameras = {1: SfmCamera(1, "PINHOLE", 160, 128, np.array([125.0, 128.0, 80.0, 64.0])),
               2: SfmCamera(2, "RADIAL", 144, 112, np.array([115.0, 72.0, 56.0, -0.05, 0.01]))}
    xyz = np.stack([rng.uniform(-2, 2, 120), rng.uniform(-1.5, 1.5, 120), rng.uniform(4, 8, 120)], -1)
    images, tracks = {}, [[] for _ in xyz]
    (root / "images").mkdir()
    for i in range(4):
        cam = cameras[1 + i % 2]
        R = rot_y(0.03 * (i - 1.5))
        t = -R @ np.array([0.3 * (i - 1.5), 0.05 * i, 0.0])
        uv, z = project_colmap(cam, R, t, xyz)
        inside = (z > 0) & (uv[:, 0] > 0) & (uv[:, 0] < cam.width) & (uv[:, 1] > 0) & (uv[:, 1] < cam.height)
        seen = np.flatnonzero(inside & (rng.uniform(size=len(xyz)) < 0.8))
        kps = uv[seen] + rng.normal(0, 0.7, (len(seen), 2))
        kps = np.concatenate([kps, rng.uniform(0, 110, (5, 2))])  # keypoints without a 3D point
        ids = np.concatenate([seen, np.full(5, -1)])
        images[i + 1] = SfmImage(i + 1, f"im{i}.png", cam.camera_id, R, t, kps, ids.astype(np.int64))
        for j, p in enumerate(seen):
            tracks[p].append((i + 1, j))
        noise = rng.uniform(0, 255, (cam.height // 4 + 1, cam.width // 4 + 1, 3)).astype(np.float32)
        img = cv2.resize(noise, (cam.width, cam.height), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
    keep = [k for k, tr in enumerate(tracks) if tr]
    sfm = SfmModel(cameras, images, np.array(keep, np.int64), xyz[keep], np.zeros((len(keep), 3), np.uint8),
                   [np.array([e[0] for e in tracks[k]], np.int64) for k in keep],
                   [np.array([e[1] for e in tracks[k]], np.int64) for k in keep])
    lengths = sfm.track_lengths
    assert (lengths < 3).any() and (lengths >= 3).any()
    model = init_weights("vgg16", seed=0)
    return root, sfm, model


_PYRAMIDS = {}  # the network's output per (image, size): the tests share forward passes


def expected_pads(border_pad, level_sizes):
    """Pads per level as CompileConfig documents them, written out independently: None -> 4 px,
    or short side / 12 on maps whose short side is under 48 px; a number -> every level."""
    if border_pad is None:
        return [min(4.0, min(hw) / 12.0) for hw in level_sizes]
    if isinstance(border_pad, (int, float)):
        return [float(border_pad)] * len(level_sizes)
    return [float(v) for v in border_pad]


def network_samples(model, image_rgb, uv, border_pad=4.0, key=None):
    """Features/confidences of the network at full-res pixel-centre points uv (N, 2), with
    grid_sample (align_corners=True maps -1/+1 to the centres of the border pixels;
    padding_mode="border": positions outside the map take the border's values), and
    ``inside`` (N, L): whether each point is at least the level's pad inside that level."""
    pyramid = _PYRAMIDS.get(key) if key is not None else None
    if pyramid is None:
        pyramid = model.extract(image_rgb)
        if key is not None:
            _PYRAMIDS[key] = pyramid
    pads = expected_pads(border_pad, [f.shape[-2:] for f in pyramid.features])
    feats, confs, inside = [], [], []
    for level, stride in enumerate(STRIDES):
        f, c = pyramid.features[level], pyramid.confidences[level]
        h, w = f.shape[-2:]
        pad = pads[level]
        p = (torch.from_numpy(uv).float() + 0.5) / stride - 0.5
        inside.append(((p[:, 0] >= pad) & (p[:, 0] <= w - 1 - pad)
                       & (p[:, 1] >= pad) & (p[:, 1] <= h - 1 - pad)).numpy())
        grid = torch.stack([p[:, 0] / (w - 1) * 2 - 1, p[:, 1] / (h - 1) * 2 - 1], -1)[None, None]
        sf = F.grid_sample(f, grid, align_corners=True, padding_mode="border")[0, :, 0].T
        sc = F.grid_sample(c, grid, align_corners=True, padding_mode="border")[0, 0, 0]
        feats.append(F.normalize(sf, dim=-1).numpy())
        confs.append(sc.numpy())
    return feats, np.stack(confs, -1), np.stack(inside, -1)


def read_rgb(path, size=None):
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return rgb if size is None else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def check_against_network(sfm, image_dir, model, mapfile, sample_at, max_edge=None, min_track=3, pad=1.0):
    """Every keyframe's stored rows against the network; returns (rows stored, rows with
    confidence 0 at a coarser level that an any-level pad would have dropped)."""
    kf_rows = {int(k): i for i, k in enumerate(mapfile.keyframe_ids)}
    lengths = sfm.track_lengths
    total = rescued = 0
    for image_id, image in sfm.images.items():
        cam = sfm.cameras[image.camera_id]
        row_of = {int(p): i for i, p in enumerate(sfm.point_ids)}
        obs = [j for j, p in enumerate(image.point3D_ids) if p >= 0 and lengths[row_of[int(p)]] >= min_track]
        pids = image.point3D_ids[obs]
        if sample_at == "reprojection":
            xyz = sfm.xyz[[row_of[int(p)] for p in pids]]
            uv, _ = project_colmap(cam, image.R, image.t, xyz)
            uv = uv - 0.5
        else:
            uv = image.xys[obs] - 0.5
        w, h = resized_size(cam.width, cam.height, max_edge)
        uv = (uv + 0.5) * [w / cam.width, h / cam.height] - 0.5
        feats, confs, inside = network_samples(model, read_rgb(image_dir / image.name, (w, h)), uv, pad,
                                               key=(str(image_dir / image.name), w, h))
        rows = mapfile.keyframe_observations(kf_rows[image_id])
        np.testing.assert_array_equal(mapfile.keyframe_image_size[kf_rows[image_id]], [w, h])
        # exactly the observations inside the finest level's padded border are stored, in order
        kept = inside[:, 0]
        stored_ids = mapfile.point_ids[rows.point_index]
        np.testing.assert_array_equal(stored_ids, pids[kept])
        np.testing.assert_allclose(rows.uv, uv[kept], atol=1e-4)
        for level in range(3):
            np.testing.assert_allclose(rows.features[level].astype(np.float32), feats[level][kept], atol=2e-3)
        # confidence: the network's where the level is valid, exactly 0 where it is not
        conf = rows.confidence.astype(np.float32)
        valid = inside[kept]
        assert valid[:, 0].all()
        np.testing.assert_allclose(conf[valid], confs[kept][valid], atol=1e-3)
        assert (conf[~valid] == 0).all()
        assert (conf[valid] > 0).all()  # sigmoid outputs: a 0 marks the border, nothing else
        total += int(kept.sum())
        rescued += int((~valid.all(1)).sum())
    assert mapfile.num_observations == total > 0
    return total, rescued


CONFIGS = {
    "default": CompileConfig(border_pad=1.0),
    "keypoint_all_tracks": CompileConfig(sample_at="keypoint", min_track_length=1, border_pad=(2.0, 3.0, 1.5)),
    "resized": CompileConfig(max_image_edge=120, border_pad=1.0),
    "auto_pad": CompileConfig(),  # 4 px at levels 0 and 1, 8 / 12 px on the 10x8 coarse map
}


@pytest.fixture(scope="module")
def compiled(synthetic, tmp_path_factory):
    """name -> (CompileStats, config) for each of CONFIGS, compiled once per module."""
    root, sfm, model = synthetic
    out = tmp_path_factory.mktemp("maps")
    fp = weights_fingerprint(model)
    return {name: (compile_map(sfm, root / "images", model, out / f"{name}.pxmap", fp, config=config,
                               progress=False), config)
            for name, config in CONFIGS.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_compiled_features_equal_network_samples(synthetic, compiled, name):
    root, sfm, model = synthetic
    stats, config = compiled[name]
    fp = weights_fingerprint(model)
    m = open_map(stats.path, expected_fingerprint=fp, verify=True)
    total, rescued = check_against_network(sfm, root / "images", model, m, config.sample_at, config.max_image_edge,
                                           config.min_track_length, config.border_pad)
    assert stats.num_observations == total
    # observations kept with a zero confidence at a coarser level (an any-level pad drops them)
    assert rescued > 0 and sum(stats.num_zero_confidence[1:]) >= rescued and stats.num_zero_confidence[0] == 0
    # points: exactly those with the minimum track length, with their coordinates and track lengths
    keep = sfm.track_lengths >= config.min_track_length
    assert (~keep).any() or config.min_track_length == 1
    np.testing.assert_array_equal(m.point_ids, sfm.point_ids[keep])
    np.testing.assert_array_equal(m.point_xyz, sfm.xyz[keep])
    np.testing.assert_array_equal(m.point_track_length, sfm.track_lengths[keep])
    # keyframe poses and cameras
    assert sorted(m.keyframe_ids.tolist()) == sorted(sfm.images)
    for k, image_id in enumerate(m.keyframe_ids):
        np.testing.assert_array_equal(m.keyframe_R[k], sfm.images[int(image_id)].R)
        np.testing.assert_array_equal(m.keyframe_t[k], sfm.images[int(image_id)].t)
        cam = m.header.cameras[m.keyframe_camera_index[k]]
        assert cam.camera_id == sfm.images[int(image_id)].camera_id
        np.testing.assert_array_equal(cam.params, sfm.cameras[cam.camera_id].params)
    assert m.header.encoder == "vgg16" and [l.dim for l in m.header.levels] == [32, 128, 128]
    assert [l.stride for l in m.header.levels] == list(STRIDES)
    assert m.header.compile_info["config"]["sample_at"] == config.sample_at


def test_reprojection_and_keypoint_samples_differ_by_the_keypoint_noise(compiled):
    a = open_map(compiled["default"][0].path)
    b = open_map(compiled["keypoint_all_tracks"][0].path)
    for k in range(a.num_keyframes):
        ra, rb = a.keyframe_observations(k), b.keyframe_observations(k)
        common, ia, ib = np.intersect1d(a.point_ids[ra.point_index], b.point_ids[rb.point_index],
                                        return_indices=True)
        d = np.linalg.norm(ra.uv[ia] - rb.uv[ib], axis=1)
        assert len(common) > 5 and 0.3 < np.median(d) < 2.0  # the synthetic keypoints have 0.7 px noise


def test_map_of_other_weights_refused(synthetic, compiled):
    _, _, model = synthetic
    path = compiled["default"][0].path
    other = weights_fingerprint(init_weights("vgg16", seed=1))
    with pytest.raises(WeightsMismatchError, match="build-map"):
        MapIndex.open(path, expected_fingerprint=other)
    assert MapIndex.open(path, expected_fingerprint=weights_fingerprint(model)).num_keyframes == 4


def test_missing_or_wrong_size_image(synthetic, tmp_path):
    root, sfm, model = synthetic
    images = tmp_path / "images"
    images.mkdir()
    for p in (root / "images").iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    cv2.imwrite(str(images / "im0.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="im0.png is 10x10"):
        compile_map(sfm, images, model, tmp_path / "m.pxmap", "x", progress=False)
    (images / "im0.png").unlink()
    with pytest.raises(FileNotFoundError, match="im0.png"):
        compile_map(sfm, images, model, tmp_path / "m.pxmap", "x", progress=False)
    assert not (tmp_path / "m.pxmap").exists() and not (tmp_path / "m.pxmap.partial").exists()


def test_build_map_command(synthetic, tmp_path, capsys):
    from pixloc_ros.cli import main
    from pixloc_ros.core.geometry.georef import Georeference

    root, sfm, model = synthetic
    write_model(sfm, tmp_path / "sfm")
    save_weights(model, tmp_path / "w.safetensors")
    Georeference(47.0, 8.0, 400.0, 30.0).save(tmp_path / "georef.json")
    out = tmp_path / "map.pxmap"
    rc = main(["build-map", "--colmap", str(tmp_path / "sfm"), "--images", str(root / "images"),
               "--weights", str(tmp_path / "w.safetensors"), "--out", str(out), "--max-image-edge", "64",
               "--border-pad", "0", "--georef", str(tmp_path / "georef.json"), "--verify", "--quiet"])
    assert rc == 0
    assert "4 keyframes" in capsys.readouterr().out
    index = MapIndex.open(out, expected_fingerprint=weights_fingerprint(model))
    assert index.georef == Georeference(47.0, 8.0, 400.0, 30.0)
    assert index.num_keyframes == 4 and index.map.num_observations > 0
    assert index.map.header.compile_info["config"]["max_image_edge"] == 64
    # errors are one line and exit status 1
    rc = main(["build-map", "--colmap", str(tmp_path / "nothing"), "--images", str(root / "images"),
               "--weights", str(tmp_path / "w.safetensors"), "--out", str(out), "--quiet"])
    assert rc == 1 and "no COLMAP model" in capsys.readouterr().err


def test_config_validation():
    import argparse

    from pixloc_ros.commands.build_map import _border_pad
    with pytest.raises(ValueError, match="sample_at"):
        CompileConfig(sample_at="centre")
    with pytest.raises(ValueError, match="border_pad"):
        CompileConfig(border_pad=(4.0, -1.0, 4.0))
    assert CompileConfig(border_pad=[4, 4, 1]).border_pad == (4.0, 4.0, 1.0)
    assert _border_pad("auto") is None and _border_pad("3") == 3.0 and _border_pad("4,4,1.5") == (4.0, 4.0, 1.5)
    with pytest.raises(argparse.ArgumentTypeError):
        _border_pad("wide")
    assert resized_size(1919, 1079, 384) == (384, 216)
    assert resized_size(100, 50, 384) == (100, 50)


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(not REAL.is_dir(), reason="real sample data absent")
def test_real_colmap_model(tmp_path):
    sfm = read_model(REAL / "reconstruction")
    model = init_weights("vgg16", seed=0)
    fp = weights_fingerprint(model)
    stats = compile_map(sfm, REAL / "images", model, tmp_path / "real.pxmap", fp,
                        config=CompileConfig(max_image_edge=384), progress=False)
    m = open_map(stats.path, expected_fingerprint=fp, verify=True)
    assert m.num_keyframes == 4 and stats.num_observations > 1000
    assert list(m.keyframe_image_size[0]) == [384, 216]
    # the reprojections (where the features were sampled) agree with the detected keypoints: the
    # COLMAP pose, the camera and the 0.5 px origin shift are consistent
    for k, image_id in enumerate(m.keyframe_ids):
        image = sfm.images[int(image_id)]
        rows = m.keyframe_observations(k)
        pid_to_kp = {int(p): xy for p, xy in zip(image.point3D_ids, image.xys) if p >= 0}
        kps = np.array([pid_to_kp[int(p)] for p in m.point_ids[rows.point_index]]) - 0.5
        kps = (kps + 0.5) * [384 / 1919, 216 / 1079] - 0.5
        err = np.linalg.norm(rows.uv - kps, axis=1)
        assert np.median(err) < 1.0  # pixels at 384 px wide (~4 px at full resolution)
        norms = np.linalg.norm(rows.features[1].astype(np.float32), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=2e-3)
    # one keyframe checked against the network, independently
    rows = m.keyframe_observations(0)
    image = sfm.images[int(m.keyframe_ids[0])]
    cam = sfm.cameras[image.camera_id]
    row_of = {int(p): i for i, p in enumerate(sfm.point_ids)}
    xyz = sfm.xyz[[row_of[int(p)] for p in m.point_ids[rows.point_index]]]
    f, cx, cy = cam.params
    p = xyz @ image.R.T + image.t
    uv = np.stack([f * p[:, 0] / p[:, 2] + cx, f * p[:, 1] / p[:, 2] + cy], -1) - 0.5
    uv = (uv + 0.5) * [384 / 1919, 216 / 1079] - 0.5
    feats, confs, inside = network_samples(model, read_rgb(REAL / "images" / image.name, (384, 216)), uv, None)
    assert inside[:, 0].all()  # the compile dropped exactly the points in the finest level's border (4 px)
    for level in range(3):
        np.testing.assert_allclose(rows.features[level].astype(np.float32), feats[level], atol=2e-3)
    conf = rows.confidence.astype(np.float32)
    np.testing.assert_allclose(conf[inside], confs[inside], atol=1e-3)
    assert (conf[~inside] == 0).all()
    # retrieval from the first keyframe's own pose returns that keyframe first
    index = MapIndex(m)
    r = index.retrieve(index.keyframe_cam_from_world[0], num_keyframes=2, max_heading_diff_deg=90)
    assert r.keyframe_indices[0] == 0 and len(r.points) > 0
