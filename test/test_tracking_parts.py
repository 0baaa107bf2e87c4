"""The pipeline's named parts, each alone (core/tracking/): reason codes, priors, the motion model,
the verdict (decide) and the node's counters. The pipeline tests (test_pipeline.py) run them together."""
import math
import re
from pathlib import Path

import numpy as np
import pytest

from pixloc_ros.core.geometry.transforms import make_transform, rot_z
from pixloc_ros.core.tracking.candidates import Candidate, largest_sigmas
from pixloc_ros.core.tracking.decide import Prediction, decide
from pixloc_ros.core.tracking.frames import FrameOutput, State
from pixloc_ros.core.tracking.gating import GatingConfig
from pixloc_ros.core.tracking.hypothesis_books import HypothesisConfig, HypothesisTracker, Observation
from pixloc_ros.core.tracking.odometry import Motion, MotionConfig
from pixloc_ros.core.tracking.priors import PriorConfig, Priors
from pixloc_ros.core.tracking.reasons import OK, Reason, Why
from pixloc_ros.ros.counters import NodeCounters

MSG = Path(__file__).resolve().parents[1] / "msg" / "LocalizationStatus.msg"
COV = np.diag([0.05 ** 2] * 3 + [math.radians(0.3) ** 2] * 3)
STEP_M = 3.0


def msg_constants(prefix: str) -> dict[str, int]:
    """``uint8 <prefix>NAME = value`` lines of the status message."""
    pattern = re.compile(rf"^uint8 {prefix}(\w+) = (\d+)", re.M)
    return {name: int(value) for name, value in pattern.findall(MSG.read_text())}


def test_reason_codes_and_states_are_the_status_message_constants():
    assert msg_constants("REASON_") == {r.name: int(r) for r in Reason}
    assert msg_constants("STATE_") == {s.name: int(s) for s in State}


def test_why_text_is_the_key_and_the_detail():
    assert OK.text == "ok" and str(Why(Reason.NO_HYPOTHESIS)) == "no_hypothesis"
    why = Why(Reason.LOW_INLIER_RATIO, "0.120 < 0.2")
    assert why.text == "low_inlier_ratio: 0.120 < 0.2"
    lost = why.with_suffix("; lost after 3 rejections, relocalizing")
    assert lost.code == Reason.LOW_INLIER_RATIO and lost.text.endswith("; lost after 3 rejections, relocalizing")
    out = FrameOutput(0, State.LOST, why=lost, lost=True)
    assert out.reason == lost.text


def test_gnss_prior_is_fresh_stale_or_absent_and_an_old_initial_pose_is_forgotten():
    priors = Priors(PriorConfig(gnss_max_age_s=2.0, initialpose_max_age_s=10.0, gnss_min_sigma_m=1.0))
    assert priors.gnss_at(0).fix is None and priors.gnss_at(0).stale is None
    assert priors.gnss_sigma(None) == 1.0 and priors.gnss_sigma(np.diag([9.0, 9.0, 1.0])) == pytest.approx(3.0)
    priors.set_gnss(10 ** 9, [1.0, 2.0, 0.0], 3.0)
    fresh = priors.gnss_at(2 * 10 ** 9)
    assert fresh.fix is not None and fresh.fix.gate_m(3.0) == pytest.approx(11.0)
    stale = priors.gnss_at(4 * 10 ** 9)
    assert stale.fix is None and stale.stale.code == Reason.NO_PRIOR and "3.0 s old" in stale.stale.detail
    priors.set_initial_pose(0, np.eye(4), True)
    assert priors.initial_pose_at(5 * 10 ** 9) is not None
    assert priors.initial_pose_at(11 * 10 ** 9) is None and priors.initial_pose is None


def test_motion_delta_needs_odometry_at_both_stamps_and_growth_keeps_the_floors():
    motion = Motion(MotionConfig(odom_max_extrapolation_s=0.2))
    for i in range(5):
        motion.buffer.add(i * 10 ** 8, make_transform(rot_z(0.0), [i * 1.0, 0.0, 0.0]))  # 10 m/s
    delta = motion.delta(10 ** 8, 3 * 10 ** 8)
    np.testing.assert_allclose(delta[:3, 3], [2.0, 0.0, 0.0], atol=1e-12)
    assert motion.delta(0, 10 ** 9) is None  # 0.6 s past the newest sample
    cfg = motion.config
    grown = motion.grow(10.0)(np.zeros((6, 6)))
    assert grown[0, 0] == pytest.approx(max((cfg.odom_sigma_per_m * 10.0) ** 2, cfg.track_sigma_floor_m ** 2))
    blind = motion.grow(None)(np.zeros((6, 6)))
    assert blind[0, 0] == pytest.approx(cfg.no_odom_sigma_m ** 2)
    assert np.all(np.diag(motion.grow(0.0)(np.zeros((6, 6))))[:3] == pytest.approx(cfg.track_sigma_floor_m ** 2))


# ---- the verdict ------------------------------------------------------------------------------

def at(x):
    T = np.eye(4)
    T[0, 3] = x
    return T


class Books:
    """The hypothesis books driven frame by frame with hand-made candidates, and decide() on each
    frame, as the pipeline does with PixLoc's results."""

    def __init__(self, **config):
        self.tracker = HypothesisTracker(HypothesisConfig(**config))
        self.frame = 0
        self.state = State.RELOCALIZING

    def run(self, *candidates: tuple[float, float, int | None, Why | None, Why | None]) -> object:
        """candidates: (offset from the truth m, cost, source hypothesis id or None, failure, uncertain)."""
        if self.frame > 0:
            self.tracker.predict(at(STEP_M), lambda c: c + np.diag([0.15 ** 2] * 3 + [math.radians(1.0) ** 2] * 3))
        committed = self.tracker.committed
        predicted = None if committed is None else Prediction(committed.map_from_base.copy(),
                                                              committed.covariance.copy())
        x = STEP_M * self.frame
        cands = [Candidate(at(x + off), failure, strong=True, covariance=COV, gate_covariance=COV, uncertain=unc,
                           hessian_covariance=COV, inlier_ratio=0.5, cost=cost, num_valid=500)
                 for off, cost, _, failure, unc in candidates]
        sources = [c[2] for c in candidates]
        obs = [Observation(b, c.map_from_base, c.covariance, c.cost, c.strong, sources[b], c.gate_covariance)
               for b, c in enumerate(cands) if c.failure is None]
        decision = self.tracker.update(obs, STEP_M if self.frame > 0 else 0.0)
        verdict = decide(self.state, decision, cands, sources, committed, predicted, None, self.tracker.config,
                         GatingConfig(), self.tracker.gate_d2)
        self.state = verdict.state
        self.frame += 1
        return verdict

    def id_at(self, offset):
        x = STEP_M * (self.frame - 1) + offset
        return next(h.id for h in self.tracker.hypotheses if abs(h.position[0] - x) < 0.3)


def test_a_lead_is_a_candidate_then_tracked_and_published():
    books = Books(confirmations=1)
    first = books.run((0.0, 0.01, None, None, None))
    assert first.state == State.RELOCALIZING and first.publish is None
    assert first.why.code == Reason.RELOCALIZATION_CANDIDATE and "leads 1/2 frames" in first.why.detail
    assert first.estimate is not None and first.estimate.cost == 0.01
    second = books.run((0.0, 0.01, books.id_at(0.0), None, None))
    assert second.state == State.TRACKING and second.why == OK and second.newly_committed
    assert second.publish is second.estimate and math.isfinite(second.mahalanobis_d2)
    third = books.run((0.0, 0.01, books.id_at(0.0), None, Why(Reason.UNCERTAIN, "calibrated sigma 0.9 m")))
    assert third.state == State.TRACKING and third.publish is None and third.why.code == Reason.UNCERTAIN
    assert not (third.wrong_lock or third.lost or third.newly_committed)


def test_a_winning_challenger_is_a_wrong_lock_event():
    books = Books(confirmations=1, commit_margin=0.05)
    books.run((0.0, 0.02, None, None, None))
    lock = books.id_at(0.0)
    assert books.run((0.0, 0.02, lock, None, None)).state == State.TRACKING
    books.run((0.0, 0.02, lock, None, None), (2.0, 0.012, None, None, None))
    right = books.id_at(2.0)
    verdict = books.run((0.0, 0.02, lock, None, None), (2.0, 0.012, right, None, None))
    assert verdict.wrong_lock and not verdict.lost and verdict.state == State.RELOCALIZING
    assert verdict.why.code == Reason.WRONG_LOCK and verdict.publish is None


def test_the_tracked_pose_dropped_is_lost_with_the_reason_of_its_last_result():
    books = Books(confirmations=1, lost_after=2)
    books.run((0.0, 0.01, None, None, None))
    lock = books.id_at(0.0)
    books.run((0.0, 0.01, lock, None, None))
    bad = Why(Reason.LOW_INLIER_RATIO, "0.050 < 0.08")
    miss = books.run((0.0, 0.01, lock, bad, None))
    assert miss.state == State.TRACKING and miss.why == bad and not miss.lost  # still tracking, one miss
    lost = books.run((0.0, 0.01, lock, bad, None))
    assert lost.lost and lost.state == State.LOST and lost.why.code == Reason.LOW_INLIER_RATIO
    assert lost.why.text == "low_inlier_ratio: 0.050 < 0.08; lost after 2 rejections, relocalizing"


def test_without_any_result_the_first_failure_is_the_reason():
    books = Books()
    verdict = books.run((0.0, 0.01, None, Why(Reason.FAR_FROM_GNSS, "12.0 m from the fix"), None),
                        (1.0, 0.01, None, Why(Reason.DEGENERATE_GEOMETRY, "..."), None))
    assert verdict.why.code == Reason.FAR_FROM_GNSS and verdict.state == State.RELOCALIZING
    assert verdict.estimate is None and verdict.publish is None


def test_largest_sigmas_take_the_worst_axis():
    cov = np.diag([0.01, 0.04, 0.09, math.radians(1.0) ** 2, math.radians(2.0) ** 2, math.radians(0.5) ** 2])
    assert largest_sigmas(cov) == pytest.approx((0.3, 2.0))


def test_node_counters_count_events_not_texts():
    counters = NodeCounters()
    counters.count_output(FrameOutput(0, State.TRACKING, success=True))
    counters.count_output(FrameOutput(1, State.RELOCALIZING, why=Why(Reason.WRONG_LOCK, "x"), wrong_lock=True))
    # A text that merely mentions a lost track is no event; the flag is.
    counters.count_output(FrameOutput(2, State.LOST, why=Why(Reason.NO_RESULT, "; lost after"), lost=False))
    counters.count_output(FrameOutput(3, State.LOST, why=Why(Reason.NO_RESULT, "x"), lost=True))
    assert (counters.poses, counters.rejected, counters.wrong_locks, counters.lost) == (1, 3, 1, 1)
    assert counters.as_dict()["wrong_locks"] == 1


def test_gnss_keyframe_seeds_follow_the_odometry_from_the_fix_to_the_frame():
    """A keyframe near a GNSS fix is where the vehicle may have been at the fix's stamp; driven 8 m
    forward and turned 10 deg since, the seed moves 8 m along its own heading (a keyframe facing
    the other way moves the other way) and turns with it; a seed without a stamp, or one the
    odometry does not cover, stays."""
    from pixloc_ros.core.tracking.seeds import Seed, SeedKind, follow_odometry

    optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    base_from_cam = make_transform(optical, (1.2, 0.0, 1.5))
    delta = make_transform(rot_z(math.radians(10)), (8.0, 0.0, 0.0))  # base(fix)_from_base(frame)
    ahead, behind = make_transform(np.eye(3), (10.0, 5.0, 0.0)), make_transform(rot_z(math.pi), (12.0, 5.0, 0.0))
    seeds = [Seed(ahead @ base_from_cam, SeedKind.KEYFRAME, 0, prior_stamp_ns=100),
             Seed(behind @ base_from_cam, SeedKind.KEYFRAME, 1, prior_stamp_ns=100),
             Seed(ahead @ base_from_cam, SeedKind.KEYFRAME, 2),
             Seed(ahead @ base_from_cam, SeedKind.KEYFRAME, 3, prior_stamp_ns=50)]
    out = follow_odometry(seeds, base_from_cam, lambda stamp: delta if stamp == 100 else None)
    np.testing.assert_allclose(out[0].map_from_cam, ahead @ delta @ base_from_cam, atol=1e-12)
    np.testing.assert_allclose((out[0].map_from_cam @ np.linalg.inv(base_from_cam))[:3, 3], (18.0, 5.0, 0.0),
                               atol=1e-12)
    np.testing.assert_allclose((out[1].map_from_cam @ np.linalg.inv(base_from_cam))[:3, 3], (4.0, 5.0, 0.0),
                               atol=1e-12)
    assert out[0].prior_stamp_ns is None and out[0].keyframe == 0 and out[0].kind == SeedKind.KEYFRAME
    assert out[2] is seeds[2] and out[3] is seeds[3]


def test_gnss_gate_compares_a_candidate_where_it_was_when_the_fix_was_taken():
    """A fix 0.8 s old while the car drove 8 m: the true pose is 8 m from the fix now and within a
    metre of it at the fix's stamp. With the odometry's motion since the fix the gate passes it
    and still refuses a pose 8 m ahead of it; without the motion (unknown) it is refused, as before."""
    from pixloc_ros.core.engine.localizer import LocalizerConfig
    from pixloc_ros.core.engine.results import HypothesisResults, LocalizationResult
    from pixloc_ros.core.geometry.pose import Pose
    from pixloc_ros.core.tracking.candidates import CandidateJudge, CovarianceConfig
    from pixloc_ros.core.tracking.priors import GnssPrior

    base_from_cam = make_transform(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float), (1.2, 0.0, 1.5))
    truth, ahead = make_transform(np.eye(3), (18.0, 5.5, 0.0)), make_transform(np.eye(3), (26.0, 5.5, 0.0))
    cam_from_map = np.linalg.inv(np.stack([truth @ base_from_cam, ahead @ base_from_cam]))
    hyps = HypothesisResults(Pose.from_numpy(cam_from_map[:, :3, :3], cam_from_map[:, :3, 3]),
                             cost=np.full((3, 2), 0.03), initial_cost=np.full((3, 2), 0.05),
                             num_valid=np.array([800, 800]), inlier_ratio=np.array([0.3, 0.3]),
                             hessian=np.stack([np.eye(6) * 1e6] * 2), sigma2=np.array([1e-3, 1e-3]),
                             singular=np.array([False, False]))
    result = LocalizationResult(True, "ok", None, None, hypotheses=hyps)
    judge = CandidateJudge(GatingConfig(min_inlier_ratio=0.1), CovarianceConfig(), LocalizerConfig(), None, 3.0)
    fix = GnssPrior(0, np.array([10.0, 5.0, 0.0]), 1.0)  # gate: 3 x 1 m + 2 m
    tracker = HypothesisTracker(HypothesisConfig(), 0.999)
    moved = make_transform(np.eye(3), (8.0, 0.0, 0.0))
    now, then = (judge.judge(result, base_from_cam, [None, None], fix, tracker, motion) for motion in (moved, None))
    assert now[0].failure is None and now[0].strong
    assert now[1].failure.code == Reason.FAR_FROM_GNSS and "8.0 m from the fix" in now[1].failure.detail
    assert [c.failure.code for c in then] == [Reason.FAR_FROM_GNSS] * 2
