"""Parity of the engine's default behaviour on official PixLoc weights with the reference's
equations (issue 13): a checkpoint in the official layout, a map compiled from it, the node's
localizer with default settings, against ``reference_equations`` (a literal float64 rendering of
PixLoc's refinement) on a real car problem (KITTI, when ``../shared`` is present) and on the
tests' synthetic world (always).

What is checked: the loaded weights select the reference profile (central-difference gradient,
the reference's stopping rule, raw-then-normalise sampling, the checkpoint's pad, cropped
images); the map keeps exactly the observations the reference keeps and stores the samples the
reference computes; the Jacobian's image gradient is a finite difference of the sampled map; the
LM stops where the rule says; the final poses agree with the oracle within 1 mm / 0.01 deg and
are bit-for-bit repeatable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reference_equations as ref_eq
from parity_problems import KITTI, ParityProblem, colmap_model, kitti_problem, synthetic_problem

from conftest import SHIPPED_WEIGHTS

MAX_DT_M = 1e-3
MAX_DR_DEG = 0.01


def _official_model():
    """Weights saved in the official layout (the CMU conf, no pixloc_ros section) and loaded back:
    the shipped tensors (a trained network, so the LM has a real minimum) or random weights."""
    from pixloc_ros.core.engine.checkpoint import init_weights, load_weights
    from pixloc_ros.core.engine.profile import reference_profile
    from pixloc_ros.core.engine.network import PixLocModel

    model = PixLocModel("vgg16", profile=reference_profile())
    if SHIPPED_WEIGHTS.exists():
        model.load_state_dict(load_weights(SHIPPED_WEIGHTS).state_dict())
    else:
        model.load_state_dict(init_weights("vgg16", 0).state_dict())
    return model


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    from pixloc_ros.core.engine.checkpoint import (default_official_conf, load_checkpoint,
        save_official_checkpoint)

    path = tmp_path_factory.mktemp("official") / "checkpoint_best.tar"
    save_official_checkpoint(_official_model(), path, default_official_conf("vgg16"))
    return load_checkpoint(path)


@dataclass
class ParityRun:
    problem: ParityProblem
    map_file: object
    points: object  # QueryPoints retrieved for the reference keyframe
    oracle_obs: ref_eq.Observations
    raw_reference: list
    engine: list  # LocalizationResult per query
    engine_again: list
    oracle: list  # (pose 4x4, [LevelOutcome per level]) per query
    query_pyramids: list
    reference_pyramid: object  # FeaturePyramid of the reference image, with raw features
    profile: object  # the localizer's engine profile
    pad: float
    reference_camera: tuple  # pinhole of the (downscaled) reference image the network saw


def _run(problem: ParityProblem, official, tmp_path) -> ParityRun:
    import cv2

    from pixloc_ros.core.engine.checkpoint import weights_fingerprint
    from pixloc_ros.core.geometry.camera import Camera
    from pixloc_ros.core.geometry.pose import Pose
    from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
    from pixloc_ros.core.maps.compile_keyframes import CompileConfig
    from pixloc_ros.core.maps.compile import compile_map
    from pixloc_ros.core.maps.retrieval import MapIndex, RetrievalConfig

    model = official.model
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "reference.png"), cv2.cvtColor(problem.reference_image, cv2.COLOR_RGB2BGR))
    map_file = tmp_path / "parity.pxmap"
    # Track length 1: the problem's points have one observation each (the reference keeps >= 3 of
    # an SfM model; which points enter is retrieval's business, not the engine's).
    compile_map(colmap_model(problem), images, model, map_file, weights_fingerprint(model),
                config=CompileConfig(min_track_length=1), progress=False)
    index = MapIndex.open(map_file, expected_fingerprint=weights_fingerprint(model), expected_profile="reference")
    # No frustum filter: the reference refines with all points of its reference images.
    points = index.retrieve(problem.reference_from_world, config=RetrievalConfig(
        num_keyframes=1, min_track_length=1, max_distance_m=1e6, max_heading_diff_deg=180.0)).points

    fx, fy, cx, cy, w, h = problem.camera
    camera = Camera.from_camera_info(w, h, [fx, 0, cx, 0, fy, cy, 0, 0, 1], [], "plumb_bob")
    localizer = Localizer(model, LocalizerConfig(device="cpu", return_confidences=False))
    engine, again, oracle, pyramids = [], [], [], []
    ref_image, ref_cam = ref_eq.downscale(problem.reference_image, problem.camera)
    ref_pyr = model.extract(ref_image, keep_raw=True)
    obs = ref_eq.reference_observations([f[0] for f in ref_pyr.raw_features], [c[0] for c in ref_pyr.confidences],
                                        ref_cam, problem.reference_from_world, problem.xyz, localizer.profile.pad)
    damping = model.damping().detach().double()
    for image, init in zip(problem.query_images, problem.inits):
        init_pose = Pose.from_4x4(torch.from_numpy(init))
        engine.append(localizer.localize(image, camera, points, init_pose))
        again.append(localizer.localize(image, camera, points, init_pose))
        query, query_cam = ref_eq.downscale(image, problem.camera)
        pyr = model.extract(query)
        pyramids.append(pyr)
        oracle.append(ref_eq.refine([f[0] for f in pyr.features], [c[0] for c in pyr.confidences], problem.xyz,
                                    obs, query_cam, init, damping, localizer.profile.pad))
    return ParityRun(problem, map_file, points, obs, ref_pyr.raw_features, engine, again, oracle, pyramids,
                     ref_pyr, localizer.profile, localizer.profile.pad, ref_cam)


PROBLEMS = ["synthetic", pytest.param("kitti", marks=[pytest.mark.real_data, pytest.mark.slow, pytest.mark.skipif(
    not KITTI.is_dir(), reason="shared/data/real/kitti00_first6 is absent")])]


@pytest.fixture(scope="module", params=PROBLEMS)
def parity(request, official, synth_small, tmp_path_factory) -> ParityRun:
    problem = kitti_problem() if request.param == "kitti" else synthetic_problem(synth_small)
    return _run(problem, official, tmp_path_factory.mktemp(f"parity_{request.param}"))


def _pose_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(metres, degrees) between two cam_from_world poses, measured on the camera centres and rotations."""
    from scipy.spatial.transform import Rotation

    ca, cb = -a[:3, :3].T @ a[:3, 3], -b[:3, :3].T @ b[:3, 3]
    # Through the quaternion: acos of the trace cannot resolve angles below ~0.03 deg when the
    # matrices carry float32 rounding.
    angle = Rotation.from_matrix(a[:3, :3] @ b[:3, :3].T).magnitude()
    return float(np.linalg.norm(ca - cb)), math.degrees(angle)


def test_official_checkpoint_selects_the_reference_profile(official):
    p = official.profile
    assert (p.name, p.gradient, p.stopping, p.reference_sampling) == ("reference", "central", "reference",
                                                                      "raw_then_normalize")
    assert p.pad == 3.0  # the conf's model.optimizer.pad
    assert p.drop_partial_observations and p.iterations == (100, 100, 100)
    assert official.model.config.pad_mode is None  # the image is cropped to the stride, never padded


def test_map_records_the_profile_and_refuses_another(parity):
    from pixloc_ros.core.maps.mapfile_format import ProfileMismatchError
    from pixloc_ros.core.maps.mapfile import open_map

    mapfile = open_map(parity.map_file)
    assert mapfile.header.profile_name == "reference"
    assert mapfile.header.engine_profile["gradient"] == "central"
    with pytest.raises(ProfileMismatchError, match="'reference' engine profile.*'native'"):
        open_map(parity.map_file, expected_profile="native")


def test_map_keeps_and_samples_what_the_reference_does(parity):
    """Same observations kept (valid at every level with the checkpoint's pad), the stored
    features are the reference's samples (to fp16 storage), and the compile step computes the
    L2-normalised samples of the raw maps, not of the normalised ones."""
    from pixloc_ros.core.maps.compile_keyframes import sample_keyframe

    obs = parity.oracle_obs
    assert len(parity.points) == int(obs.keep.sum()) > 100
    order = np.argsort(parity.points.point_ids.numpy())
    for level in range(3):
        np.testing.assert_allclose(parity.points.features[level].double()[order].numpy(),
                                   obs.features[level].numpy(), atol=2e-3, rtol=0)  # fp16 storage
        np.testing.assert_allclose(parity.points.confidences[level].double()[order].numpy(),
                                   obs.confidences[level].numpy(), atol=1e-3, rtol=0)

    # The compile step in float32, at the projections of all points (no fp16 rounding here).
    cam, T = parity.reference_camera, parity.problem.reference_from_world
    p_cam = torch.from_numpy(parity.problem.xyz @ T[:3, :3].T + T[:3, 3])
    uv, _ = ref_eq.project(ref_eq.PinholeLevel.of(*cam, 1), p_cam)
    pyr = parity.reference_pyramid
    samples = sample_keyframe(pyr, uv.float(), parity.pad, parity.profile)
    assert samples.valid.numpy().tolist() == obs.keep.tolist()
    keep = torch.from_numpy(obs.keep)
    gaps = []
    for level in range(3):
        np.testing.assert_allclose(samples.features[level][keep].double().numpy(), obs.features[level].numpy(),
                                   atol=1e-5, rtol=0)
        p, _ = ref_eq.project(ref_eq.PinholeLevel.of(*cam, ref_eq.STRIDES[level]), p_cam[keep])
        twice = F.normalize(ref_eq.sample(F.normalize(pyr.raw_features[level][0].double(), dim=0), p), dim=-1)
        gaps.append(float((twice - obs.features[level]).abs().max()))
    # The other order (normalise the map, sample, normalise again) is measurably different.
    assert max(gaps) > 1e-4, gaps


def test_central_gradient_is_a_finite_difference_of_the_sampled_map(parity):
    from pixloc_ros.core.engine.interpolation import BilinearSampler

    pyr = parity.query_pyramids[0]
    gen = torch.Generator().manual_seed(0)
    for level in range(3):
        fmap = pyr.features[level][0].double()
        _, H, W = fmap.shape
        p = torch.rand(1, 500, 2, generator=gen, dtype=torch.float64) * torch.tensor([W - 3.0, H - 3.0]) + 1.0
        central = BilinearSampler(fmap, gradient="central").sample(p).grad[0]
        analytic = BilinearSampler(fmap, gradient="analytic").sample(p).grad[0]
        fd = ref_eq.central_gradient(fmap, p[0])
        torch.testing.assert_close(central, fd, atol=1e-12, rtol=0)
        # ... which is not the bilinear interpolant's own derivative (the map is not smooth at the pixel scale).
        assert float((analytic - central).norm() / central.norm()) > 0.05


def test_lm_stops_where_the_reference_rule_says(parity):
    allowed = set(range(1, 101, 10)) | {100}
    for result, (_, levels) in zip(parity.engine, parity.oracle):
        assert set(result.iterations) <= allowed, result.iterations
        assert list(result.iterations) == [lv.iterations for lv in levels]


def test_poses_match_the_reference_equations(parity):
    rows = []
    for k, (result, (pose, levels)) in enumerate(zip(parity.engine, parity.oracle)):
        engine_pose = result.cam_from_world.to_4x4().numpy()
        dt, dr = _pose_difference(engine_pose, pose)
        moved_t, moved_r = _pose_difference(pose, parity.problem.inits[k])
        err_t, err_r = _pose_difference(pose, parity.problem.query_from_world[k])
        rows.append(f"query {k + 1}: engine vs reference {dt * 1e3:.4f} mm {dr:.5f} deg; the LM moved "
                    f"{moved_t:.3f} m {moved_r:.3f} deg; reference error {err_t:.3f} m {err_r:.3f} deg; "
                    f"iterations {list(result.iterations)}")
        assert not any(lv.failed for lv in levels)
        assert dt < MAX_DT_M and dr < MAX_DR_DEG, rows[-1]
    print(f"\n{parity.problem.name}: " + "\n".join(rows))


def test_engine_is_deterministic(parity):
    for a, b in zip(parity.engine, parity.engine_again):
        assert torch.equal(a.cam_from_world.R, b.cam_from_world.R) and torch.equal(a.cam_from_world.t, b.cam_from_world.t)
        assert a.iterations == b.iterations
