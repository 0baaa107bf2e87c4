"""The training recipe (core/training/, ``pixloc-ros train``) on a tiny rendered street map.

The map: a few 128x96 views of the synthetic street rendered with depth; its "SfM" points are
back-projected pixels and their tracks the other views that see them (projection + depth test),
written and read back as a real COLMAP model. Small images need a small LM border (``lm_pad`` 1):
the coarse level is only 8x6.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pixloc_ros.cli import main
from pixloc_ros.core import training
from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.engine.checkpoint import init_weights, load_checkpoint, load_weights, weights_fingerprint
from pixloc_ros.core.maps.colmap_io import SfmCamera, SfmImage, SfmModel, read_model, write_model
from pixloc_ros.core.geometry.pose import Pose, pose_error
from pixloc_ros.data.sim.drive import base_from_camera, route_path
from pixloc_ros.core.geometry.transforms import invert_transform, make_transform, rot_z
from pixloc_ros.data.sim.raycast import PinholeCamera
from pixloc_ros.data.sim.render import render
from pixloc_ros.data.sim.generate import generate_world

WIDTH, HEIGHT = 128, 96
VIEW_DISTANCES_M = (12.0, 13.5, 15.0, 16.5, 18.0)  # along street A->B


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Torch on one thread here: the LM's many small ops lose more to thread synchronisation than
    they gain on a busy 2-core machine (several times slower with 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    """(colmap_dir, image_dir, render_fn): 5 summer views 1.5 m apart and their depth-built SfM model."""
    import cv2

    root = tmp_path_factory.mktemp("tiny_map")
    world = generate_world(0)
    camera = PinholeCamera.from_fov(WIDTH, HEIGHT, 61.0)
    path = route_path(world, "AB")
    poses, depths = [], []
    (root / "images").mkdir()
    for k, dist in enumerate(VIEW_DISTANCES_M):
        i = int(np.searchsorted(path.s, dist))
        world_from_base = make_transform(rot_z(float(path.heading[i])), [*path.xy[i], 0.0])
        cam_from_world = invert_transform(world_from_base @ base_from_camera())
        rgb, depth = render(world, "summer", camera, cam_from_world, noise_seed=k)
        cv2.imwrite(str(root / "images" / f"{k:03d}.png"), rgb[..., ::-1])
        poses.append(cam_from_world)
        depths.append(depth)

    # Points: back-projected grid pixels of every view (finite, not too far); tracks: every view
    # where the point projects inside and agrees with that view's depth.
    K = camera.K
    xyz, tracks = [], []
    for k, (T, depth) in enumerate(zip(poses, depths)):
        vs, us = np.mgrid[4:HEIGHT - 4:7, 4:WIDTH - 4:7]
        z = depth[vs, us]
        ok = np.isfinite(z) & (z < 60)
        rays = np.linalg.inv(K) @ np.stack([us[ok], vs[ok], np.ones(ok.sum())])
        p_cam = rays * z[ok]
        xyz.append((invert_transform(T) @ np.vstack([p_cam, np.ones(ok.sum())]))[:3].T)
    xyz = np.concatenate(xyz)
    obs: dict[int, list] = {k: [] for k in range(len(poses))}
    for k, (T, depth) in enumerate(zip(poses, depths)):
        p_cam = xyz @ T[:3, :3].T + T[:3, 3]
        uv = p_cam @ K.T
        uv = uv[:, :2] / np.maximum(uv[:, 2:], 1e-9)
        inside = (p_cam[:, 2] > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] <= WIDTH - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= HEIGHT - 1)
        px = np.clip(np.round(uv).astype(int), 0, [WIDTH - 1, HEIGHT - 1])
        seen = inside & (np.abs(depth[px[:, 1], px[:, 0]] - p_cam[:, 2]) < 0.05 * p_cam[:, 2] + 0.1)
        for j in np.flatnonzero(seen):
            obs[k].append((j, uv[j] + 0.5))  # COLMAP pixels: origin at the corner
    images, track_img, track_idx = {}, [[] for _ in xyz], [[] for _ in xyz]
    for k, T in enumerate(poses):
        rows = obs[k]
        for idx, (j, _) in enumerate(rows):
            track_img[j].append(k + 1)
            track_idx[j].append(idx)
        images[k + 1] = SfmImage(k + 1, f"{k:03d}.png", 1, T[:3, :3], T[:3, 3],
                                 np.array([uv for _, uv in rows]).reshape(-1, 2),
                                 np.array([j + 1 for j, _ in rows], np.int64))
    keep = np.array([len(t) >= 2 for t in track_img])
    # Points seen only once get dropped; their observations must point nowhere.
    for im in images.values():
        im.point3D_ids = np.where(keep[im.point3D_ids - 1], im.point3D_ids, -1)
    ids = np.flatnonzero(keep)
    cams = {1: SfmCamera(1, "PINHOLE", WIDTH, HEIGHT,
                         np.array([camera.fx, camera.fy, camera.cx + 0.5, camera.cy + 0.5]))}
    model = SfmModel(cams, images, ids + 1, xyz[ids], np.zeros((len(ids), 3), np.uint8),
                     [np.array(track_img[j]) for j in ids], [np.array(track_idx[j]) for j in ids])
    write_model(model, root / "sfm")

    def render_fn(condition, intrinsics, cam_from_world, width, height, noise_seed):
        fx, fy, cx, cy = intrinsics
        return render(world, condition, PinholeCamera(width, height, fx, fy, cx, cy), cam_from_world,
                      noise_seed=noise_seed)

    return root / "sfm", root / "images", render_fn


def _pair_config(**kw) -> training.PairConfig:
    base = dict(num_points=96, min_points=24, min_covisible=30, border_px=4.0, max_init_error_px=60.0,
                max_forward_m=1.0, max_lateral_m=0.5, max_yaw_deg=4.0)
    base.update(kw)
    return training.PairConfig(**base)


def _train_config(**kw) -> training.TrainConfig:
    base = dict(lm_iterations=(3, 3, 3), lm_pad=1.0, log_every=1, checkpoint_every=4, lr=3e-4,
                device="cpu", num_threads=1, augment=training.AugmentConfig(query_prob=0.0, reference_prob=0.0))
    base.update(kw)
    return training.TrainConfig(**base)


class FixedPairs:
    """A sampler that cycles through given pairs (to watch the loss of the same pairs fall)."""

    def __init__(self, pairs):
        self.pairs = list(pairs)
        self.i = 0

    def sample(self, rng):
        pair = self.pairs[self.i % len(self.pairs)]
        self.i += 1
        return pair

    def map_images(self, count, rng):
        return [p.reference_image for p in self.pairs[:count]]


# ---- pieces ---------------------------------------------------------------------------------

def test_color_jitter_keeps_shape_and_identity_at_zero_strength():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    zero = training.AugmentConfig(brightness=0, contrast=0, saturation=0, hue_deg=0, white_balance=0,
                                  gamma=0, noise_sigma=0)
    same = training.color_jitter(image, rng, zero)
    assert same.shape == image.shape and same.dtype == np.uint8
    assert np.abs(same.astype(int) - image).max() <= 1  # only float rounding
    changed = training.color_jitter(image, np.random.default_rng(1), training.AugmentConfig())
    assert changed.shape == image.shape and np.abs(changed.astype(int) - image).mean() > 2


def test_car_like_offsets_keep_height_and_roll():
    cfg = training.PairConfig()
    rng = np.random.default_rng(0)
    offsets = np.stack([training.car_like_offset(rng, cfg) for _ in range(500)])
    R, t = offsets[:, :3, :3], offsets[:, :3, 3]
    centres = -np.einsum("nji,nj->ni", R, t)  # query centre in the reference camera frame
    assert np.abs(centres[:, 1]).std() < 0.1 < np.abs(centres[:, 0]).std() < np.abs(centres[:, 2]).std()
    rotvec = Pose(torch.from_numpy(R), torch.from_numpy(t)).log()[:, 3:].numpy()
    yaw, roll = np.degrees(rotvec[:, 1]), np.degrees(rotvec[:, 2])
    assert np.abs(yaw).max() <= cfg.max_yaw_deg + 0.1 and yaw.std() > 5 * roll.std()
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


def test_robust_error_zero_at_truth_grows_and_is_pixel_like():
    camera = Camera.from_params(WIDTH, HEIGHT, 100.0, 100.0, 63.5, 47.5).float()
    g = torch.Generator().manual_seed(0)
    xyz = torch.randn(50, 3, generator=g) + torch.tensor([0.0, 0.0, 10.0])
    truth = Pose.identity()
    p_true, _ = camera.world2image(truth.transform(xyz))
    mask = torch.ones(50, dtype=torch.bool)
    err = lambda pose: float(training.robust_reprojection_error(pose, xyz, p_true, mask, camera, 2.0))
    assert err(truth) == pytest.approx(0.0, abs=1e-6)
    shifts = [err(Pose.exp(torch.tensor([d, 0, 0, 0, 0, 0.0]))) for d in (0.01, 0.1, 1.0)]
    assert shifts[0] < shifts[1] < shifts[2]
    # 1 m sideways at 10 m with f = 100 px is ~10 px: rho(e) = c (sqrt(1 + (e/c)^2) - 1) ~ e - c
    assert 6.0 < shifts[2] < 10.0


def test_sampler_draws_consistent_pairs(tiny_map):
    colmap, images, render_fn = tiny_map
    sfm = read_model(colmap)
    sampler = training.PairSampler(sfm, images, _pair_config(virtual_fraction=0.5, conditions=("snow",)),
                                   render_fn=render_fn)
    assert sampler.pairs and all(a != b for a, b in sampler.pairs)
    rng = np.random.default_rng(3)
    kinds = set()
    for _ in range(6):
        pair = sampler.sample(rng)
        kinds.add(pair.kind)
        assert pair.reference_image.shape == pair.query_image.shape == (HEIGHT, WIDTH, 3)
        assert 24 <= len(pair.xyz) <= 96
        # the initial pose is the reference's (no init noise configured)
        np.testing.assert_allclose(pair.init.to_4x4_numpy(), pair.reference_from_world.to_4x4_numpy())
        # every point is in front of and inside both views
        for pose, cam in ((pair.query_from_world, pair.query_camera), (pair.reference_from_world, pair.reference_camera)):
            p2d, valid = cam.world2image(pose.transform(torch.from_numpy(pair.xyz)))
            assert bool(valid.all()) and bool(cam.in_image(p2d, 4.0).all())
        if pair.kind == "virtual":
            assert pair.condition == "snow"
            rot, trans = pose_error(pair.query_from_world, pair.reference_from_world)
            assert float(trans) <= math.hypot(1.0, 0.5) + 0.3
    assert kinds == {"virtual", "covisible"}


def test_depth_points_lie_on_the_reference_surfaces(tiny_map):
    colmap, images, render_fn = tiny_map
    sfm = read_model(colmap)
    sampler = training.PairSampler(sfm, images, _pair_config(virtual_fraction=1.0, depth_points="textured",
                                                             conditions=("dusk",)), render_fn=render_fn)
    pair = sampler.sample(np.random.default_rng(0))
    assert pair.kind == "virtual" and len(pair.xyz) == 96  # denser than the SfM points: always num_points
    ref_id = sfm.image_by_name(pair.names[0]).image_id
    depth = sampler._depth_cache[ref_id][0]
    p_cam = pair.reference_from_world.transform(torch.from_numpy(pair.xyz))
    p2d, valid = pair.reference_camera.world2image(p_cam)
    assert bool(valid.all())
    # back-projected at pixel centres: reprojection lands on integer pixels with the depth found there
    np.testing.assert_allclose(p2d.numpy(), np.round(p2d.numpy()), atol=1e-6)
    uv = np.round(p2d.numpy()).astype(int)
    np.testing.assert_allclose(p_cam[:, 2].numpy(), depth[uv[:, 1], uv[:, 0]], rtol=1e-5)

    # SIFT keypoints: sub-pixel positions on smooth surfaces; the nearest pixel's depth agrees within 5 %
    sampler = training.PairSampler(sfm, images, _pair_config(virtual_fraction=1.0, depth_points="keypoints",
                                                             min_points=16), render_fn=render_fn)
    pair = sampler.sample(np.random.default_rng(1))
    ref_id = sfm.image_by_name(pair.names[0]).image_id
    depth = sampler._depth_cache[ref_id][0]
    p_cam = pair.reference_from_world.transform(torch.from_numpy(pair.xyz))
    p2d, _ = pair.reference_camera.world2image(p_cam)
    uv = np.round(p2d.numpy()).astype(int)
    np.testing.assert_allclose(p_cam[:, 2].numpy(), depth[uv[:, 1], uv[:, 0]], rtol=0.05)


def test_contrastive_term_prefers_the_true_projections():
    """InfoNCE is near 0 when each reference feature equals the query feature at its projection,
    large when the reference features are permuted, and its gradient reaches the query map."""
    g = torch.Generator().manual_seed(0)
    fmap = torch.nn.functional.normalize(torch.randn(16, 24, 32, generator=g), dim=0).requires_grad_(True)
    p2d = torch.stack([torch.randint(2, 30, (40,), generator=g), torch.randint(2, 22, (40,), generator=g)], -1).float()
    ref = fmap.detach()[:, p2d[:, 1].long(), p2d[:, 0].long()].T  # exact samples at integer pixels
    mask = torch.ones(40, dtype=torch.bool)
    good = training.contrastive_term(fmap, ref, p2d, mask, 0.07, 2.0)
    bad = training.contrastive_term(fmap, ref[torch.randperm(40, generator=g)], p2d, mask, 0.07, 2.0)
    assert float(good.detach()) < 0.5 < float(bad.detach())
    bad.backward()
    assert fmap.grad is not None and float(fmap.grad.abs().max()) > 0
    assert float(training.contrastive_term(fmap, ref, p2d, torch.zeros(40, dtype=torch.bool), 0.07, 2.0)) == 0.0


def test_gradients_reach_features_confidences_and_damping(tiny_map):
    colmap, images, _ = tiny_map
    sampler = training.PairSampler(read_model(colmap), images, _pair_config())
    pair = sampler.sample(np.random.default_rng(0))
    model = init_weights("vgg16", seed=0)
    training.set_train_mode(model, freeze_batchnorm=True)
    out = training.pair_forward(model, pair, _train_config(), torch.device("cpu"))
    assert out.valid and out.loss.requires_grad and math.isfinite(float(out.loss.detach()))
    out.loss.backward()
    ex = model.extractor
    for name, param in [("encoder", ex.encoder[0][0].weight), ("decoder", ex.decoder[3].layers[0].weight),
                        ("fine features", ex.adaptation[0][0].weight), ("coarse features", ex.adaptation[2][0].weight),
                        ("coarse confidence", ex.uncertainty[2][0].weight), ("coarse damping", model.optimizer[2].dampingnet.const)]:
        assert param.grad is not None and bool(torch.isfinite(param.grad).all()), name
        assert float(param.grad.abs().max()) > 0, name


@pytest.mark.parametrize("engine", ["reference", "native"])
def test_training_solves_the_system_inference_solves(tiny_map, monkeypatch, engine):
    """The LM inside training uses the weights' profile: its image gradient and stopping rule
    (the reference's never stops early while training), and reference features sampled in the
    profile's order (raw maps for the reference)."""
    from pixloc_ros.core.engine.profile import named_profile
    from pixloc_ros.core.training import losses  # the module whose pair_forward calls them

    colmap, images, _ = tiny_map
    pair = training.PairSampler(read_model(colmap), images, _pair_config()).sample(np.random.default_rng(0))
    model = init_weights("vgg16", seed=0, profile=named_profile(engine))
    training.set_train_mode(model, freeze_batchnorm=True)
    seen, sampled = [], []
    real_level, real_terms = losses.optimize_level, losses.reference_terms
    monkeypatch.setattr(losses, "optimize_level", lambda *a: seen.append(a[-1]) or real_level(*a))
    monkeypatch.setattr(losses, "reference_terms", lambda f, *a: sampled.append(f) or real_terms(f, *a))
    out = training.pair_forward(model, pair, _train_config(), torch.device("cpu"))
    assert out.valid and seen and sampled
    profile = named_profile(engine)
    assert {(c.gradient, c.stopping) for c in seen} == {(profile.gradient, profile.stopping)}
    if engine == "reference":
        assert all(c.stop_dt == 0 and c.grad_stop == 0 for c in seen)
        norms = sampled[0][0].norm(dim=1)
        assert float((norms - 1).abs().max()) > 1e-2  # raw maps, not unit vectors
    else:
        torch.testing.assert_close(sampled[0][0].norm(dim=1), torch.ones_like(sampled[0][0][:, 0]))


# ---- the loop -------------------------------------------------------------------------------

def _mean_loss(model, pairs, config):
    """Mean training loss (train mode) of ``pairs``, on a copy: BatchNorm statistics stay untouched."""
    model = copy.deepcopy(model)
    training.set_train_mode(model, config.freeze_batchnorm)
    with torch.no_grad():
        return float(np.mean([float(training.pair_forward(model, p, config, torch.device("cpu")).loss) for p in pairs]))


def test_training_lowers_the_loss_checkpoints_and_resumes(tiny_map, tmp_path, capsys):
    colmap, images, _ = tiny_map
    sampler = training.PairSampler(read_model(colmap), images, _pair_config(init_noise_m=0.3, init_noise_deg=2.0))
    rng = np.random.default_rng(5)
    pairs = [sampler.sample(rng) for _ in range(2)]
    torch.manual_seed(0)
    model = init_weights("vgg16", seed=0)
    # 24 steps at TrainConfig's default lr (1e-4). At 3e-4 one of the pairs' LM jumped to the
    # 50 px clamp at step 10 on an AMD EPYC (no gradient from there: 9.5 -> 10.0, 1.05x) while it
    # passed on an Intel Xeon; at 1e-4 six pair seeds left 0.03-0.16x there.
    config = _train_config(steps=24, lr=1e-4)
    before = _mean_loss(model, pairs, config)
    assert before > 0.5  # the noisy init leaves pixels of error to remove

    out = tmp_path / "run"
    result = training.train(model, FixedPairs(pairs), config, out, log=lambda msg: None)
    assert result.step == 24 and result.stopped_by == "steps"
    after = _mean_loss(model, pairs, config)
    assert after < 0.8 * before, (before, after)

    # metrics.jsonl: what the run did before its first step (BatchNorm statistics estimated on the
    # map images), then one record per step with per-level errors, confidence spread and the damping
    lines = [json.loads(line) for line in (out / training.METRICS_NAME).read_text().splitlines()]
    assert lines[0]["type"] == "setup" and lines[0]["batchnorm_init"] == "estimate"
    assert len(lines[0]["batchnorm"]["layers"]) == 4 and lines[0]["batchnorm"]["images"] == 2
    records = [r for r in lines if r["type"] == "train"]
    assert [r["step"] for r in records] == list(range(1, 25))
    assert len(records[-1]["error_px"]) == 3 and np.array(records[-1]["damping"]).shape == (3, 6)
    assert len(records[-1]["confidence"]) == 3 and records[-1]["pairs"] == config.batch_size

    # The checkpoint is in the official layout: the engine's loader and `weights info` read it.
    ckpt = out / training.CHECKPOINT_NAME
    loaded = load_checkpoint(ckpt)
    assert weights_fingerprint(loaded.model) == weights_fingerprint(model)
    assert weights_fingerprint(load_weights(ckpt)) == weights_fingerprint(model)
    assert loaded.conf["model"]["extractor"]["encoder"] == "vgg16"
    assert loaded.conf["train"]["lm_iterations"] == [3, 3, 3]
    assert main(["weights", "info", str(ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(info["damping"], model.damping().detach().double().numpy(), rtol=1e-6)
    state = training.read_training_state(ckpt)
    assert state["step"] == 24 and state["optimizer"]["state"]  # Adam moments are saved

    # Resume: a new model object continues from step 24 with the saved weights and optimizer.
    fresh = init_weights("vgg16", seed=1)
    resumed = training.train(fresh, FixedPairs(pairs), replace(config, steps=26), out, log=lambda msg: None)
    assert resumed.step == 26 and resumed.steps_this_run == 2
    assert training.read_training_state(ckpt)["step"] == 26
    assert weights_fingerprint(fresh) != weights_fingerprint(init_weights("vgg16", seed=1))
    records = [json.loads(line) for line in (out / training.METRICS_NAME).read_text().splitlines()]
    assert [r["step"] for r in records][-2:] == [25, 26]
    assert sum(r["type"] == "setup" for r in records) == 1  # a resumed run does not estimate again


def test_train_command_end_to_end(tiny_map, tmp_path, capsys):
    colmap, images, _ = tiny_map
    out = tmp_path / "cli"
    export = tmp_path / "w.safetensors"
    args = ["train", "--colmap", str(colmap), "--images", str(images), "--out", str(out), "--steps", "2",
            "--points", "64", "--min-covisible", "30", "--lm-iterations", "2,2,2", "--lm-pad", "1",
            "--device", "cpu", "--threads", "1", "--log-every", "1", "--export", str(export)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "step      2" in text and "stopped by steps at step 2" in text
    trained = load_weights(out / training.CHECKPOINT_NAME)
    half = load_checkpoint(export)
    assert half.metadata["dtype"] == "float16" and half.metadata["fingerprint"] == weights_fingerprint(half.model)
    for key, value in trained.state_dict().items():  # the export is the checkpoint rounded to fp16
        torch.testing.assert_close(half.model.state_dict()[key], value.half().to(value.dtype))
    # a second call resumes and does nothing more (already at --steps)
    assert main(args) == 0
    assert "resumed from" in capsys.readouterr().out
    assert main(args + ["--no-resume"]) == 1
