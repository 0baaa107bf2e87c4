"""The per-frame pipeline (core/tracking/pipeline.py) and the offline evaluation built on it.

State-machine and input checks run with whatever ``test_weights`` are (random or trained): they
never depend on a correct alignment. The drive tests need weights that localize and skip
otherwise (``localizing_weights``).
"""
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from pixloc_ros.core.tracking.hypothesis_books import HypothesisConfig
from pixloc_ros.core.tracking.pipeline import PipelineConfig, load_pipeline
from pixloc_ros.core.tracking.reasons import Reason
from pixloc_ros.core.tracking.seeds import SeedConfig
from pixloc_ros.core.tracking.odometry import OdometryBuffer
from pixloc_ros.core.tracking.frames import FrameInput, State
from pixloc_ros.data.bags import read_drive
from pixloc_ros.data.evaluation.offline import camera_from_info, evaluate_drive


def pose(x=0.0, y=0.0, z=0.0, yaw_deg=0.0):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    T[:3, 3] = (x, y, z)
    return T


# ---------------------------------------------------------------------------------- odometry
def test_odometry_interpolates_between_samples():
    buf = OdometryBuffer(horizon_s=10)
    buf.add(1_000_000_000, pose(0, 0, 0, 0))
    buf.add(2_000_000_000, pose(2, 0, 0, 90))
    np.testing.assert_allclose(buf.at(1_000_000_000, 0), pose(0, 0, 0, 0))
    mid = buf.at(1_500_000_000, 0)
    np.testing.assert_allclose(mid[:3, 3], (1, 0, 0), atol=1e-12)
    np.testing.assert_allclose(mid[:3, :3], pose(yaw_deg=45)[:3, :3], atol=1e-12)
    assert buf.at(900_000_000, 0) is None  # before the buffer, no extrapolation allowed


def test_odometry_extrapolates_at_constant_velocity_within_the_limit():
    buf = OdometryBuffer(horizon_s=10)
    for i in range(5):  # 10 m/s straight ahead, 10 Hz
        buf.add(i * 100_000_000, pose(i * 1.0))
    ahead = buf.at(450_000_000, max_extrapolation_ns=100_000_000)
    np.testing.assert_allclose(ahead[:3, 3], (4.5, 0, 0), atol=1e-9)
    assert buf.at(600_000_000, max_extrapolation_ns=100_000_000) is None


def test_odometry_buffer_forgets_old_samples():
    buf = OdometryBuffer(horizon_s=1.0)
    for i in range(30):
        buf.add(i * 100_000_000, pose(i))
    assert len(buf) <= 11 and buf.stamps[-1] == 29 * 100_000_000


# ---------------------------------------------------------------------------- state machine
@pytest.fixture(scope="module")
def pipeline_factory(synth_map):
    def make(**overrides):
        return load_pipeline(str(synth_map.map_file), str(synth_map.weights), "cpu", PipelineConfig(**overrides))
    return make


@pytest.fixture(scope="module")
def drive(synth_map):
    return read_drive(synth_map.data / "queries" / "overcast")


def frame_input(drive, i=0, image=None, camera=None):
    f = drive.frames[i]
    return FrameInput(f.stamp_ns, f.image if image is None else image,
                      camera_from_info(f.camera_info) if camera is None else camera, drive.base_from_camera())


def test_no_prior_means_no_localization(pipeline_factory, drive):
    p = pipeline_factory()
    out = p.process(frame_input(drive))
    assert (out.state, out.success, out.result) == (State.NOT_INITIALIZED, False, None)
    assert out.reason.startswith("no_prior")


def test_the_codes_of_frames_without_a_prior_and_what_the_node_asks_the_pipeline(pipeline_factory, drive):
    """Reasons come as codes (the text is for people); the node reads the map and the engine through
    the pipeline's methods: start-up summary, initial-pose check, keyframe poses for markers."""
    p = pipeline_factory()
    out = p.process(frame_input(drive))
    assert out.why.code == Reason.NO_PRIOR and not (out.wrong_lock or out.lost) and out.estimate is None
    summary = p.summary()
    assert summary.num_keyframes == p.index.num_keyframes > 0 and summary.device == "cpu"
    assert summary.calibrated == (p.calibration is not None)
    inside = drive.ground_truth[0].matrix
    p.check_initial_pose(inside, is_2d=True)  # on the road: accepted
    far = inside.copy()
    far[0, 3] += 500.0
    with pytest.raises(ValueError, match="outside the map"):
        p.check_initial_pose(far, is_2d=False)
    ids = [int(k) for k in p.index.keyframe_ids[:3]]
    np.testing.assert_array_equal(p.keyframe_poses(ids), p.index.keyframe_world_from_cam[:3])
    assert p.map_health() is None  # one map file, not tiles


def test_bad_frames_raise_and_change_nothing(pipeline_factory, drive):
    p = pipeline_factory()
    f = frame_input(drive)
    with pytest.raises(ValueError, match="uint8"):
        p.process(frame_input(drive, image=f.image_rgb.astype(np.float32)))
    with pytest.raises(ValueError, match="empty"):
        p.process(frame_input(drive, image=np.zeros((0, 0, 3), np.uint8)))
    with pytest.raises(ValueError, match="camera is 320x240 but the image is 160x120"):
        p.process(frame_input(drive, image=f.image_rgb[::2, ::2].copy()))
    with pytest.raises(ValueError, match="NaN"):
        bad = pose()
        bad[0, 3] = math.nan
        p.add_odometry(f.stamp_ns, bad)
    with pytest.raises(ValueError, match="NaN"):
        p.add_gnss(f.stamp_ns, math.nan, 0.0, 0.0)
    assert p.state == State.NOT_INITIALIZED and not p.has_odometry


def test_gnss_kilometres_outside_the_map_is_refused(pipeline_factory, drive):
    p = pipeline_factory()
    fix = drive.gnss[0]
    p.add_gnss(fix.stamp_ns, fix.latitude_deg + 0.05, fix.longitude_deg, fix.altitude_m)  # ~5.5 km north
    out = p.process(frame_input(drive))
    assert not out.success and out.reason.startswith("prior_outside_map") and out.result is None


def test_clock_jump_backwards_resets(pipeline_factory, drive):
    p = pipeline_factory()
    for o in drive.odometry[:40]:
        p.add_odometry(o.stamp_ns, o.matrix)
    fix = drive.gnss[0]
    p.add_gnss(fix.stamp_ns, fix.latitude_deg, fix.longitude_deg, fix.altitude_m, fix.covariance)
    p.state = State.RELOCALIZING
    p.add_odometry(drive.odometry[0].stamp_ns, drive.odometry[0].matrix)  # the bag restarted
    assert p.clock_jumps == 1 and p.state == State.NOT_INITIALIZED
    assert "clock jumped back" in p.reset_reason and len(p.odometry) == 1
    # Inputs lagging each other (GNSS older than the newest odometry) are not a jump.
    p.add_gnss(fix.stamp_ns - 100_000_000, fix.latitude_deg, fix.longitude_deg, fix.altitude_m)
    assert p.clock_jumps == 1


# ------------------------------------------------------------------------------- real drives
def test_offline_evaluation_reports_the_cmu_metrics(synth_map, tmp_path):
    from pixloc_ros.cli import main

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--map", str(synth_map.map_file), "--bag", str(synth_map.data / "queries" / "snow"),
                 "--weights", str(synth_map.weights), "--device", "cpu", "--max-frames", "4", "--json", str(out),
                 "--plots", str(tmp_path / "plots"), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 4 and len(report["recall"]) == 3 and len(report["per_frame"]) == 4
    assert 0 <= report["localized"] <= 4
    assert all(0 <= r <= 1 for r in report["recall"]) and report["recall"] == sorted(report["recall"])
    for key in ("median_translation_m", "median_rotation_deg"):
        assert key in report
    cons = report["consistency"]
    assert cons["published"] == report["localized"] and 0 <= cons["published_wrong"] <= cons["published"]
    assert cons["nees_bound_95"] == pytest.approx(12.59, abs=0.01)
    for rec in report["per_frame"]:
        assert {"success", "state", "reason", "covariance", "estimate_map_from_base", "gate"} <= set(rec)
        if rec["success"]:
            cov = np.array(rec["covariance"])  # ROS order, base_link in the map: symmetric positive definite
            assert cov.shape == (6, 6) and np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
            assert math.isfinite(rec["nees"]) and rec["gate"]["mahalanobis_d2"] <= rec["gate"]["limit_d2"]
        else:
            assert rec["covariance"] is None and rec["reason"]
    for name in ("trajectory", "errors", "nees"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["overcast", "snow"])
def test_drive_is_relocalized_then_tracked_without_wrong_poses(localizing_weights, synth_map, condition):
    p = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu")
    states = []
    evaluation = evaluate_drive(p, synth_map.data / "queries" / condition,
                                on_frame=lambda out, frame: states.append(out.state))
    s = evaluation.summary
    # GNSS relocalization, one confirming frame, then tracking for the rest of the drive.
    assert states[0] == State.RELOCALIZING and State.TRACKING in states
    assert s.localized >= 0.7 * s.frames, evaluation.frames
    assert s.max_translation_m <= 1.0 and s.max_rotation_deg <= 5.0  # gating: never a wrong pose
    print(f"\n{condition}: {s.as_text()}")


def test_relocalization_grid_widens_the_search_only_while_relocalizing(localizing_weights, synth_map):
    """relocalization_grid 16: the relocalizing frames optimise the seeds and at least 16 poses
    spread around them in one batch; tracking frames do not; the drive is localized as without."""
    p = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu", PipelineConfig(seeds=SeedConfig(relocalization_grid=16)))
    batches = []
    evaluation = evaluate_drive(p, synth_map.data / "queries" / "overcast", on_frame=lambda out, frame: batches.append(
        (out.state, out.result.hypotheses.cost.shape[1] if out.result is not None and out.result.hypotheses else 0)))
    # a frame's batch is built in the state the previous frame left
    tracking = [n for (before, _), (_, n) in zip(batches, batches[1:]) if before == State.TRACKING]
    assert batches[0][1] >= 16 + 1 and tracking and max(tracking) <= 4, batches
    s = evaluation.summary
    assert s.localized >= 0.7 * s.frames and s.max_translation_m <= 1.0, evaluation.frames


# ------------------------------------------------------------------- wrong hypotheses and locks
def _errors_m(evaluation):
    return [f.translation_error_m for f in evaluation.frames if f.success]


def test_a_wrong_first_frame_winner_is_never_published(localizing_weights, synth_map):
    """Construct a drive whose first frame shows what the camera sees one frame (about 2.7 m)
    further along the road: the relocalization of frame 0 converges there with the best cost,
    and the next frames, tracked from it, disagree. Published only what later frames confirm."""
    drive = read_drive(synth_map.data / "queries" / "overcast")
    frames = list(drive.frames)
    frames[0] = replace(frames[0], image=frames[1].image)
    tricked = replace(drive, frames=frames)
    outputs = []
    p = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu")
    evaluation = evaluate_drive(p, tricked, on_frame=lambda out, frame: outputs.append(out))
    first = evaluation.frames[0]
    assert first.raw_translation_error_m > 1.0, first  # the construction worked: the wrong pose led frame 0
    assert not first.success and first.reason.startswith("relocalization_")
    assert all(e <= 1.0 for e in _errors_m(evaluation)), evaluation.frames  # never published the wrong one
    last = evaluation.frames[-1]
    assert last.success and last.translation_error_m <= 0.25, last  # and ended up on the right pose
    # Without waiting for evidence (commit on the first frame), the same drive publishes the wrong pose.
    hasty = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu", PipelineConfig(hypotheses=HypothesisConfig(confirmations=0)))
    assert evaluate_drive(hasty, tricked).frames[0].translation_error_m > 1.0


def test_an_injected_wrong_lock_is_detected_and_left(localizing_weights, synth_map):
    """Track the overcast drive, then move the committed hypothesis 2.5 m along the road (a
    wrong lock). Within a bounded number of frames the pipeline says so and publishes the right
    pose again."""
    drive = read_drive(synth_map.data / "queries" / "overcast")
    p = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu")
    outputs = []

    def inject(out, frame):
        outputs.append(out)
        if len(outputs) == 2:
            assert out.success, out.reason  # tracking by now
            lock = p.tracker.committed
            lock.map_from_base = lock.map_from_base.copy()
            lock.map_from_base[:3, 3] += 2.5 * lock.map_from_base[:3, 0]  # 2.5 m forward

    evaluation = evaluate_drive(p, drive, on_frame=inject)
    after = evaluation.frames[2:]
    detected = [i for i, f in enumerate(after) if f.reason.startswith("wrong_lock") or "lost after" in f.reason
                or (f.success and f.translation_error_m <= 0.25)]
    assert detected and detected[0] <= 2, [f.reason for f in after]  # noticed within 3 frames
    assert sum(f.success and f.translation_error_m > 1.0 for f in after) <= 2  # the wrong lock published at most 2
    assert after[-1].success and after[-1].translation_error_m <= 0.25, after[-1]  # and left


@pytest.mark.slow
def test_calibrate_command_fits_what_the_pipeline_loads(localizing_weights, synth_map, tmp_path, capsys):
    """evaluate --json on three drives -> pixloc-ros calibrate --records -> the pipeline loads the
    file for these weights (and refuses it for others) and publishes calibrated covariances."""
    from pixloc_ros.cli import main
    from pixloc_ros.core.tracking.covariance_calibration import CovarianceCalibration

    reports = []
    for condition in ("overcast", "autumn", "snow"):
        reports.append(tmp_path / f"{condition}.json")
        assert main(["evaluate", "--map", str(synth_map.map_file), "--bag", str(synth_map.data / "queries" / condition),
                     "--weights", str(localizing_weights), "--device", "cpu", "--json", str(reports[-1]),
                     "--quiet"]) == 0
    out = tmp_path / "weights.covariance.json"
    assert main(["calibrate", "--weights", str(localizing_weights), "--records", *map(str, reports),
                 "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    calib = CovarianceCalibration.load(out)
    assert calib.fitted_on["samples"] >= 12 and calib.inflation >= 1.0 and len(calib.fitted_on["drives"]) == 3
    p = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu", calibration=out)
    assert p.calibration == calib
    evaluation = evaluate_drive(p, synth_map.data / "queries" / "overcast")
    published = [f for f in evaluation.frames if f.success]
    assert published and all(f.covariance_calibrated for f in published)
    # A calibration of other weights is a setup error that says what to do.
    other = CovarianceCalibration(calib.hessian_scale, calib.floor_std, calib.slopes, calib.z_reference,
                                  weights_fingerprint="0" * 64)
    other.save(tmp_path / "other.json")
    with pytest.raises(ValueError, match="pixloc-ros calibrate"):
        load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu", calibration=tmp_path / "other.json")


@pytest.mark.slow
def test_a_pose_the_calibration_calls_too_uncertain_is_not_published(localizing_weights, synth_map, tmp_path):
    """With a calibration that says every pose is known to 2 m only, the drive is tracked but
    nothing is published, each frame saying why."""
    from pixloc_ros.core.engine.checkpoint import load_weights, weights_fingerprint
    from pixloc_ros.core.tracking.covariance_calibration import CovarianceCalibration

    fingerprint = weights_fingerprint(load_weights(str(localizing_weights), "cpu"))
    vague = CovarianceCalibration(0.01, (2.0, 2.0, 2.0, 0.05, 0.05, 0.05), (0.0, 0.0), (0.5, -2.0),
                                  weights_fingerprint=fingerprint).save(tmp_path / "vague.json")
    p = load_pipeline(str(synth_map.map_file), str(localizing_weights), "cpu", calibration=vague)
    states = []
    evaluation = evaluate_drive(p, synth_map.data / "queries" / "overcast",
                                on_frame=lambda out, frame: states.append(out.state))
    assert not any(f.success for f in evaluation.frames)
    assert State.TRACKING in states  # committed all the same: the gate is on publishing
    assert any(f.reason.startswith("uncertain: calibrated sigma 2.") for f in evaluation.frames)
