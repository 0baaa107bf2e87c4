"""StampGuard (ros/stamps.py): no single bad stamp blinds or resets the node; restarts still reset.

Pure tests with a fake wall clock; the node's use of it over DDS is in test_ros_node.py."""
import pytest

from pixloc_ros.ros.stamps import StampGuard, Verdict
from ros_testing import FakeClock

S = 1_000_000_000
MS = 1_000_000
TOL = 500 * MS



def guard():
    wall = FakeClock(100.0)
    return StampGuard(TOL, live_s=2.0, clock=wall), wall


def test_in_order_stamps_pass_and_the_first_of_all_has_no_reference():
    g, wall = guard()
    assert g.check("image", 3600 * S).verdict is Verdict.OK  # nothing to compare with yet
    for k in range(1, 5):
        wall.t += 0.1
        assert g.check("image", 3600 * S + k * 100 * MS).verdict is Verdict.OK
    assert g.newest() == 3600 * S + 400 * MS


@pytest.mark.parametrize("ahead_s", [20.0, 3600.0])
def test_a_future_stamp_is_rejected_against_the_clock_and_forgotten(ahead_s):
    g, wall = guard()
    now = 50 * S
    assert g.check("image", now, ros_now_ns=now).verdict is Verdict.OK
    bad = g.check("image", now + int(ahead_s * S), ros_now_ns=now + 30 * MS)
    assert bad.verdict is Verdict.AHEAD and "ahead of the clock" in bad.describe("image")
    assert abs(bad.gap_s - (ahead_s - 0.03)) < 1e-6
    # Not remembered: the next good frame is neither late nor a restart.
    assert g.check("image", now + 100 * MS, ros_now_ns=now + 100 * MS).verdict is Verdict.OK
    assert g.newest() == now + 100 * MS


def test_without_a_clock_the_other_streams_are_the_reference_advanced_by_wall_time():
    g, wall = guard()
    t0 = 1000 * S  # a bag replayed on system time: stamps far behind the system clock
    system_now = 2_000_000 * S
    assert g.check("odometry", t0, system_now_ns=system_now).verdict is Verdict.OK
    wall.t += 1.0  # the odometry went quiet for 1 s of wall time: its time moved on meanwhile
    assert g.check("image", t0 + 1200 * MS, system_now_ns=system_now).verdict is Verdict.OK
    bad = g.check("image", t0 + 20 * S, system_now_ns=system_now)
    assert bad.verdict is Verdict.AHEAD and "the odometry stream" in bad.reference
    assert g.check("odometry", t0 + 1050 * MS, system_now_ns=system_now).verdict is Verdict.OK


def test_live_data_is_bounded_by_the_system_clock():
    g, wall = guard()
    now = 1_800_000_000 * S
    check = g.check("odometry", now + 5 * S, system_now_ns=now)  # the very first message, yet judged
    assert check.verdict is Verdict.AHEAD and check.reference == "the system clock"
    assert g.check("image", now - 10 * MS, system_now_ns=now).verdict is Verdict.OK
    assert g.check("odometry", now + 300 * MS, system_now_ns=now).verdict is Verdict.OK


def test_a_timeline_that_jumps_forward_everywhere_is_accepted_once_the_old_streams_are_stale():
    g, wall = guard()
    g.check("odometry", 10 * S)
    g.check("image", 10 * S)
    wall.t += 0.1
    assert g.check("image", 500 * S).verdict is Verdict.AHEAD  # the odometry is still live at 10 s
    wall.t += 2.5  # nothing accepted for longer than live_s: no live reference any more
    assert g.check("image", 503 * S).verdict is Verdict.OK
    wall.t += 0.05
    assert g.check("odometry", 503 * S + 50 * MS).verdict is Verdict.OK


def test_late_and_duplicate_stamps_are_named_and_do_not_move_the_newest():
    g, wall = guard()
    for stamp in (1 * S, 2 * S):
        g.check("image", stamp)
    late = g.check("image", 2 * S - 333 * MS)
    assert late.verdict is Verdict.LATE and "0.333 s older than the newest image" in late.describe("image")
    dup = g.check("image", 2 * S)
    assert dup.verdict is Verdict.DUPLICATE and "already received" in dup.describe("image")
    assert g.newest() == 2 * S
    # Per stream: an odometry sample older than the newest image is not late.
    assert g.check("odometry", 1 * S).verdict is Verdict.OK


def test_going_back_beyond_the_tolerance_is_a_restart_that_starts_a_new_timeline():
    g, wall = guard()
    for k in range(5):
        g.check("odometry", 100 * S + k * 50 * MS)
        g.check("image", 100 * S + k * 50 * MS)
    restart = g.check("odometry", 1 * S)
    assert restart.verdict is Verdict.RESTART and abs(restart.gap_s - 99.2) < 1e-6
    assert g.newest() == 1 * S  # the other streams' old stamps are forgotten
    assert g.check("image", 1 * S + 10 * MS).verdict is Verdict.OK  # not a second restart
    g.forget()
    assert g.newest() is None


def test_a_bad_first_stamp_costs_exactly_one_restart():
    """Nothing to judge the very first stamp by: it is taken, and the good ones after it restart once."""
    g, wall = guard()
    assert g.check("image", 3600 * S).verdict is Verdict.OK
    verdicts = [g.check("image", 10 * S + k * 100 * MS).verdict for k in range(4)]
    assert verdicts == [Verdict.RESTART, Verdict.OK, Verdict.OK, Verdict.OK]


def test_negative_tolerance_is_refused():
    with pytest.raises(ValueError):
        StampGuard(-1)
