"""The books of the pose hypotheses (core/tracking/hypothesis_books.py): commits, rivals, wrong locks, merging.

These drive ``HypothesisTracker`` with hand-made observations (poses, costs) the way the
pipeline does with PixLoc's results; the pipeline tests (test_pipeline.py) run the real thing.
"""
import math

import numpy as np
import pytest

from pixloc_ros.core.tracking.hypothesis_books import HypothesisConfig, HypothesisTracker, Observation
from pixloc_ros.core.geometry.transforms import pose_difference

COV = np.diag([0.05 ** 2] * 3 + [math.radians(0.3) ** 2] * 3)
STEP_M = 3.0  # the car drives this far between frames (along map x)


def at(x, y=0.0):
    T = np.eye(4)
    T[:3, 3] = (x, y, 0.0)
    return T


def step():
    return at(STEP_M)


def grow(cov):
    return cov + np.diag([0.15 ** 2] * 3 + [math.radians(1.0) ** 2] * 3)


class Drive:
    """A car at x = STEP_M * frame; observations placed relative to the truth."""

    def __init__(self, **config):
        self.tracker = HypothesisTracker(HypothesisConfig(**config))
        self.frame = 0

    def run(self, *places, strong=True):
        """One frame: places are (offset along the road m, cost, source-id-or-None[, strong])."""
        if self.frame > 0:
            self.tracker.predict(step(), grow)
        obs = [Observation(i, at(STEP_M * self.frame + place[0]), COV, place[1],
                           place[3] if len(place) > 3 else strong, place[2])
               for i, place in enumerate(places)]
        self.frame += 1
        return self.tracker.update(obs, STEP_M if self.frame > 1 else 0.0)

    def id_at(self, offset):
        truth = at(STEP_M * (self.frame - 1) + offset)
        return next(h.id for h in self.tracker.hypotheses
                    if np.linalg.norm(pose_difference(h.map_from_base, truth)[:3]) < 0.3)


def test_uncontested_hypothesis_is_committed_on_the_second_frame():
    d = Drive(confirmations=1)
    first = d.run((0.0, 0.01, None))
    assert first.committed is None and first.leader.lead_frames == 1 and first.margin == math.inf
    second = d.run((0.0, 0.01, d.id_at(0.0)))
    assert second.newly_committed and second.committed.id == first.leader.id and second.leader.lead_frames == 2


def test_wrong_first_frame_winner_is_never_committed():
    """Frame 0: a wrong minimum 2.5 m ahead has the lower cost. From frame 1 on the right one wins."""
    d = Drive(confirmations=1, commit_margin=0.05)
    f0 = d.run((2.5, 0.010, None), (0.0, 0.012, None))
    wrong = f0.leader.id
    assert f0.committed is None and np.isclose(f0.leader.position[0], 2.5)
    right = d.id_at(0.0)
    f1 = d.run((2.5, 0.016, wrong), (0.0, 0.011, right))  # the right one leads now: streak restarts
    assert f1.committed is None and f1.leader.id == right and f1.leader.lead_frames == 1
    f2 = d.run((2.5, 0.016, wrong), (0.0, 0.011, right))
    assert f2.newly_committed and f2.committed.id == right


def test_close_rivals_need_the_travel_baseline():
    """Two minima within 2 % cost of each other: no clear win, so a commit needs 5 m of lead."""
    d = Drive(confirmations=1, commit_margin=0.05, commit_baseline_m=5.0)
    d.run((0.0, 0.0100, None), (2.5, 0.0101, None))
    ids = (d.id_at(0.0), d.id_at(2.5))
    f1 = d.run((0.0, 0.0100, ids[0]), (2.5, 0.0101, ids[1]))
    assert f1.committed is None and f1.leader.lead_travel_m == pytest.approx(3.0)
    f2 = d.run((0.0, 0.0100, ids[0]), (2.5, 0.0101, ids[1]))
    assert f2.newly_committed and f2.committed.id == ids[0] and f2.leader.lead_travel_m == pytest.approx(6.0)


def _rival_goes_silent(rival_cost, rival_strong=True):
    """Frame 0: the truth at cost 0.0100 and a rival 2.5 m ahead; then two frames where only
    the truth finds a result. Returns, for those two frames, (margin, live hypotheses, leader id,
    its clear frames, committed id or None, newly committed), and the true hypothesis' id."""
    d = Drive(confirmations=1, commit_margin=0.05, commit_baseline_m=50.0, lost_after=3)
    first = d.run((0.0, 0.0100, None, True), (2.5, rival_cost, None, rival_strong))
    assert first.committed is None and first.live == 2
    leader = d.id_at(0.0)
    frames = []
    for _ in range(2):  # snapshots: the hypotheses are mutated by the next frame
        out = d.run((0.0, 0.0100, leader))
        frames.append((out.margin, out.live, out.leader.id, out.leader.clear_frames,
                       out.committed.id if out.committed else None, out.newly_committed))
    return frames, leader


def test_a_silent_rival_is_no_margin():
    """A rival as cheap as the leader (1 % apart) that then finds no result has an unknown cost,
    not a high one: with it alive the leader's lead is not clear and nothing is committed (a
    dusk drive committed a wrong pose on such frames)."""
    frames, leader = _rival_goes_silent(0.0101)
    assert frames == [(math.inf, 2, leader, 0, None, False)] * 2


def test_frames_with_a_silent_rival_do_not_count_towards_the_travel_baseline():
    """Two close minima; the rival then misses three frames (9 m of travel): no commit by the 5 m
    baseline, the lead travel stays 0. When the rival answers again (still 1 % dearer) the
    travel counts, and 6 m later the leader is committed."""
    d = Drive(confirmations=1, commit_margin=0.05, commit_baseline_m=5.0, lost_after=5)
    d.run((0.0, 0.0100, None), (2.5, 0.0101, None))
    ids = (d.id_at(0.0), d.id_at(2.5))
    for _ in range(3):
        out = d.run((0.0, 0.0100, ids[0]))
        assert out.committed is None and out.leader.id == ids[0] and out.leader.lead_travel_m == 0.0
    travel = []
    for _ in range(2):
        out = d.run((0.0, 0.0100, ids[0]), (2.5, 0.0101, ids[1]))
        travel.append((out.leader.lead_travel_m, out.newly_committed))
    assert travel == [(3.0, False), (6.0, True)]


def test_a_beaten_or_never_strong_rival_going_silent_does_not_hold_the_lead_back():
    """The leader beat the rival by the margin on frame 0 (cost 2x lower): its lead stays clear
    while the rival is silent and it is committed on frame 1. A rival that never passed the
    strong checks is no counter-evidence either: commit once the leader led clearly for
    commit_frames frames."""
    frames, leader = _rival_goes_silent(0.0200)
    assert frames[0] == (math.inf, 2, leader, 2, leader, True)
    frames, leader = _rival_goes_silent(0.0101, rival_strong=False)
    assert frames == [(math.inf, 2, leader, 1, None, False), (math.inf, 2, leader, 2, leader, True)]


def test_weak_observations_keep_a_hypothesis_but_never_commit_it():
    d = Drive(confirmations=0)
    for _ in range(4):
        out = d.run((0.0, 0.01, None if d.frame == 0 else d.id_at(0.0)), strong=False)
        assert out.committed is None and out.leader.lead_frames == 0
    assert len(d.tracker.hypotheses) == 1 and d.tracker.hypotheses[0].frames == 4


def test_a_challenger_that_keeps_winning_is_a_wrong_lock():
    d = Drive(confirmations=1, commit_margin=0.05)
    d.run((0.0, 0.02, None))
    lock = d.id_at(0.0)
    assert d.run((0.0, 0.02, lock)).newly_committed  # committed at the wrong place (the truth is +2 m)
    # From now on a seed finds the true pose 2 m ahead with a clearly lower cost.
    f2 = d.run((0.0, 0.02, lock), (2.0, 0.012, None))
    assert f2.committed.id == lock and f2.wrong_lock is None
    right = d.id_at(2.0)
    f3 = d.run((0.0, 0.02, lock), (2.0, 0.012, right))
    assert f3.wrong_lock is not None and f3.wrong_lock.id == lock and f3.committed is None
    f4 = d.run((0.0, 0.02, lock), (2.0, 0.012, right))
    assert f4.newly_committed and f4.committed.id == right


def test_a_committed_hypothesis_without_consistent_results_is_dropped():
    d = Drive(confirmations=0, lost_after=2)
    d.run((0.0, 0.01, None))
    lock = d.id_at(0.0)
    assert d.tracker.committed.id == lock
    d.tracker.config.confirmations = 2  # the rival below must not win before the misses count up
    # Its results land 4 m away (outside its gate): misses; a new hypothesis is started there.
    f1 = d.run((4.0, 0.01, lock))
    assert f1.committed.id == lock and d.tracker.committed.misses == 1
    f2 = d.run((4.0, 0.01, lock))
    assert f2.dropped_committed is not None and f2.dropped_committed.id == lock
    assert all(h.id != lock for h in d.tracker.hypotheses)


def test_results_that_converge_onto_each_other_merge():
    d = Drive(merge_distance_m=0.5)
    out = d.run((0.0, 0.010, None), (0.2, 0.011, None), (3.0, 0.012, None))
    assert out.live == 2  # 0.0 and 0.2 are one hypothesis
    first = d.id_at(0.0)
    d.run((0.1, 0.010, first), (0.0, 0.013, None))
    # The seed that converged to the first hypothesis' place starts nothing new.
    assert sum(np.linalg.norm(h.position - at(STEP_M)[:3, 3]) < 0.5 for h in d.tracker.hypotheses) == 1


def test_at_most_max_hypotheses_are_kept_committed_first():
    d = Drive(max_live_hypotheses=2, confirmations=0)
    d.run((0.0, 0.01, None))
    lock = d.id_at(0.0)
    out = d.run((0.0, 0.010, lock), (5.0, 0.011, None), (10.0, 0.012, None))
    assert out.live == 2 and any(h.id == lock and h.committed for h in d.tracker.hypotheses)
    assert any(np.isclose(h.position[0], STEP_M + 5.0) for h in d.tracker.hypotheses)  # the cheaper rival stays


def test_config_is_checked():
    with pytest.raises(ValueError):
        HypothesisConfig(confirmations=-1)
    with pytest.raises(ValueError):
        HypothesisTracker(gate_probability=1.0)


def test_a_challenger_while_the_tracked_pose_has_no_result_is_no_wrong_lock():
    """The tracked pose's results jump 1.3 m (a biased minimum that agrees with itself): no wrong
    lock while the tracked pose merely misses; once it is dropped the challenger starts from zero."""
    d = Drive(confirmations=1, lost_after=3)
    d.run((0.0, 0.02, None))
    lock = d.id_at(0.0)
    assert d.run((0.0, 0.02, lock)).newly_committed
    f2 = d.run((1.3, 0.02, lock))
    biased = d.id_at(1.3)
    f3 = d.run((1.3, 0.02, biased))
    assert f2.wrong_lock is None and f3.wrong_lock is None and f3.committed.id == lock
    f4 = d.run((1.3, 0.02, biased))
    assert f4.dropped_committed.id == lock and f4.committed is None and f4.leader.lead_frames == 1
    assert d.run((1.3, 0.02, biased)).newly_committed  # evidence gathered after the loss
