"""Trust without ground truth: the online covariance scaling from consecutive poses and the odometry
(core/tracking/innovation.py), the calibration from the map's own keyframes
(core/tracking/map_calibration.py), and the conservative covariance of uncalibrated weights."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pixloc_ros.core.geometry.transforms import make_transform, rot_z
from pixloc_ros.core.tracking import map_calibration
from pixloc_ros.core.tracking.covariance_calibration import NEES_BOUND_95, nees
from pixloc_ros.core.tracking.innovation import CovarianceScaler, InnovationConfig

STEP_S, SPEED = 0.2, 10.0  # a car at 10 m/s, 5 frames per second


def drive(frames: int, true_std: np.ndarray, bias: np.ndarray | None = None, seed: int = 0):
    """(stamp, truth map_from_base, odom_from_base, published pose) along a gently curving road; the
    published pose = truth with an independent error ~ N(0, diag(true_std^2)) (plus a shared ``bias``)."""
    rng = np.random.default_rng(seed)
    out, yaw = [], 0.0
    pose = np.eye(4)
    for k in range(frames):
        if k:
            yaw += 0.01
            pose = pose @ make_transform(rot_z(0.01), [SPEED * STEP_S, 0.0, 0.0])
        err = rng.normal(0.0, true_std) + (0.0 if bias is None else bias)
        published = pose.copy()
        published[:3, 3] += err[:3]
        published[:3, :3] = Rotation.from_rotvec(err[3:]).as_matrix() @ pose[:3, :3]  # left, map frame
        out.append((int(k * STEP_S * 1e9), pose, pose.copy(), published))  # odometry = truth (exact)
    return out


def run_scaler(samples, model_std, config=None):
    scaler = CovarianceScaler(config or InnovationConfig(odom_sigma_per_m=0.0, odom_sigma_deg_per_m=0.0))
    cov = np.diag(np.square(model_std))
    for stamp, _, odom, published in samples:
        scaler.observe(stamp, published, cov, odom)
    return scaler


TRUE_STD = np.array([0.10, 0.05, 0.02, math.radians(0.1), math.radians(0.2), math.radians(0.5)])


def test_the_scale_converges_to_the_missing_spread():
    """Published covariances 3x too small in standard deviation (9x in variance): the scale -> ~9."""
    cfg = InnovationConfig(odom_sigma_per_m=0.0, odom_sigma_deg_per_m=0.0, window=60)
    scaler = run_scaler(drive(200, TRUE_STD), TRUE_STD / 3.0, cfg)
    assert 7.0 < scaler.scale < 11.5, scaler.scale
    assert len(scaler.nis) == cfg.window


def test_a_consistent_drive_is_not_inflated_and_the_scale_never_shrinks():
    consistent = run_scaler(drive(200, TRUE_STD, seed=1), TRUE_STD)
    assert consistent.scale < 1.35, consistent.scale
    generous = run_scaler(drive(200, TRUE_STD, seed=2), TRUE_STD * 5.0)
    assert generous.scale == 1.0  # over-covered: kept as it is (what it cannot see needs the floor)


def test_an_error_shared_by_consecutive_frames_is_invisible_to_it():
    """A constant 0.8 m bias along the road with tiny frame-to-frame noise: the innovations do not
    see it (the module doc's limit), the scale stays 1."""
    biased = drive(100, TRUE_STD / 20.0, bias=np.array([0.8, 0, 0, 0, 0, 0]), seed=3)
    assert run_scaler(biased, TRUE_STD / 20.0).scale < 1.35


def test_bounds_gaps_and_reset():
    cfg = InnovationConfig(odom_sigma_per_m=0.0, odom_sigma_deg_per_m=0.0, max_scale=4.0, min_samples=3)
    scaler = run_scaler(drive(50, TRUE_STD), TRUE_STD / 10.0, cfg)
    assert scaler.scale == 4.0  # bounded
    before = len(scaler.nis)
    scaler.observe(10 ** 12, np.eye(4), np.eye(6), np.eye(4))  # 200 s later: no pair
    assert len(scaler.nis) == before
    scaler.reset()
    assert scaler.scale == 1.0 and not scaler.nis


# ---- the calibration from the map ----------------------------------------------------------------

class KnownNoise:
    """Stands in for the localizer inside map_calibration: the result is the prior (which is the
    truth: the prior perturbation is patched out) moved by a draw from N(0, k^2 C) in the engine's
    coordinates, reported with covariance C - a known model the calibration must recover (k^2)."""

    def __init__(self, localizer, k: float, seed: int = 0):
        self.profile = localizer.profile
        self.k = k
        self.rng = np.random.default_rng(seed)
        self.C = np.diag([0.02 ** 2, 0.01 ** 2, 0.05 ** 2, math.radians(0.2) ** 2, math.radians(0.3) ** 2,
                          math.radians(0.1) ** 2])

    def localize(self, image, camera, points, init):
        from pixloc_ros.core.engine.localizer import LocalizationResult
        from pixloc_ros.core.geometry.pose import Pose

        xi = torch.from_numpy(self.rng.multivariate_normal(np.zeros(6), self.k ** 2 * self.C))
        pose = Pose.exp(xi) @ init.double()
        return LocalizationResult(True, "ok", pose, self.C.copy(), num_valid=len(points), inlier_ratio=0.5)


def test_the_map_calibration_recovers_a_known_noise_model(synth_map, monkeypatch):
    from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint
    from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
    from pixloc_ros.core.maps.retrieval import MapIndex

    index = MapIndex.open(synth_map.map_file)
    model = load_weights(synth_map.weights, "cpu")
    fake = KnownNoise(Localizer(model, LocalizerConfig(device="cpu")), k=3.0)
    monkeypatch.setattr(map_calibration, "perturbed_prior", lambda T, *a: T)  # the prior is the truth
    options = map_calibration.CalibrationOptions(keyframes=40, variants=map_calibration.VARIANTS[:3], seed=0)
    images = synth_map.data / "mapping" / "images"
    calib = map_calibration.calibrate_from_map(fake, index, images, weights_fingerprint(model), options)
    stats = calib.fitted_on["keyframe_stats"]
    assert stats["correct"] >= 60 and stats["wrong"] == 0 and calib.fitted_on["source"] == "map"
    # Fresh draws of the same model: consistent under the fitted covariance (NEES mean near 6).
    fake.rng = np.random.default_rng(99)
    samples, _, _ = map_calibration.map_calibration_samples(fake, index, images, options)
    values = np.array([nees(s.error, calib.covariance_base(s.hessian_covariance, s.inlier_ratio, None))
                       for s in samples])
    assert 3.0 < values.mean() < 9.0 and np.mean(values <= NEES_BOUND_95) >= 0.8, (values.mean(), calib)


def test_a_keyframe_is_localized_without_its_own_observations(synth_map):
    from pixloc_ros.core.maps.retrieval import MapIndex, RetrievalConfig

    index = MapIndex.open(synth_map.map_file)
    row = index.num_keyframes // 2
    prior = np.linalg.inv(index.keyframe_world_from_cam[row])
    camera = index.keyframe_camera(row)
    options = map_calibration.CalibrationOptions(exclude_radius_m=0.0)
    points = map_calibration.held_out_points(index, row, prior, camera, options, RetrievalConfig(num_keyframes=3),
                                             np.random.default_rng(0))
    ids = set(points.keyframe_ids.tolist())
    assert int(index.keyframe_ids[row]) not in ids and len(ids) >= 2  # its neighbours, not itself
    wide = map_calibration.CalibrationOptions(exclude_radius_m=5.0)
    far = map_calibration.held_out_points(index, row, prior, camera, wide, RetrievalConfig(num_keyframes=3),
                                          np.random.default_rng(0))
    centers = index.keyframe_centers
    near_rows = np.flatnonzero(np.linalg.norm(centers - centers[row], axis=1) <= 5.0)
    assert far is None or not (set(far.keyframe_ids.tolist()) & set(index.keyframe_ids[near_rows].tolist()))


def test_uncalibrated_weights_publish_a_conservative_covariance(synth_map):
    """Without a calibration a pose goes out with its Hessian's covariance plus the largest
    uncertainty the node publishes at all, wider than what weighs it in the books; with one, the
    calibrated covariance itself."""
    import math

    from pixloc_ros.core.tracking.candidates import Candidate, CandidateJudge, CovarianceConfig
    from pixloc_ros.core.tracking.gating import GatingConfig
    from pixloc_ros.core.engine.localizer import LocalizerConfig

    config = CovarianceConfig()
    judge = CandidateJudge(GatingConfig(), config, LocalizerConfig(), None, 3.0)
    H = np.diag([1e-4] * 3 + [1e-6] * 3)
    books = judge.published_covariance(H, np.eye(3), 0.5, None)
    np.testing.assert_allclose(books, config.uncalibrated_inflation * judge.gate_covariance(H))
    candidate = Candidate(np.eye(4), None, True, books, judge.gate_covariance(H), hessian_covariance=H)
    published = judge.publication_covariance(candidate)
    sigmas = np.sqrt(np.diag(published))
    assert sigmas[:3] == pytest.approx(math.hypot(config.max_sigma_m, 1e-2))  # the publish limit's 0.5 m
    assert np.degrees(sigmas[3:]) == pytest.approx(np.degrees(math.hypot(math.radians(config.max_sigma_deg), 1e-3)))
    assert np.all(np.linalg.eigvalsh(published - books) > 0)  # never narrower than the books' weight
    # A pose 1 m off along one axis and 3 deg about another (the first weights in snow without a
    # calibration tracked up to 2.6 m off): NEES under the 95 % bound of a consistent 6-DoF error.
    from pixloc_ros.core.tracking.covariance_calibration import NEES_BOUND_95, nees

    assert nees(np.array([1.0, 0, 0, 0, 0, math.radians(3.0)]), published) < NEES_BOUND_95
    assert nees(np.array([1.0, 0, 0, 0, 0, math.radians(3.0)]), books) > 50  # what x16 published before
    # With a calibration the candidate's own (calibrated) covariance is published.
    calibrated = CandidateJudge(GatingConfig(), config, LocalizerConfig(), object(), 3.0)
    assert calibrated.publication_covariance(candidate) is books