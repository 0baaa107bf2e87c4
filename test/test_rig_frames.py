"""Grouping a rig's frames by stamp (issue 30): approximate-time groups, a camera that skips a
frame, stops, and comes back; and a drive where a camera drops out and rejoins mid-way while the
rig keeps localizing with the cameras it has."""
import numpy as np
import pytest

from pixloc_ros.core.tracking.rig_frames import RigFrameGrouper

MS = 1_000_000
NAMES = ("front", "left", "right")


def grouper():
    return RigFrameGrouper(NAMES, tolerance_ns=20 * MS, wait_ns=150 * MS, out_after_ns=300 * MS)


def feed(g, frames):
    """frames: (name, stamp_ms) in arrival order -> every group out, in order."""
    out = []
    for name, t in frames:
        out += g.add(name, t * MS, f"{name}@{t}")
    return out


def test_frames_with_jitter_group_in_any_arrival_order():
    rng = np.random.default_rng(0)
    arrivals = []
    for k in range(6):
        instant = [(n, 100 * k + int(rng.integers(-8, 9))) for n in NAMES]
        rng.shuffle(instant)
        arrivals += instant
    groups = feed(grouper(), arrivals)
    assert len(groups) == 6
    for k, grp in enumerate(groups):
        assert grp.missing == () and list(grp.frames) == list(NAMES)
        assert all(abs(s - 100 * k * MS) <= 8 * MS for s in grp.stamps_ns.values())
        assert grp.stamp_ns == grp.stamps_ns["front"] and grp.spread_ns <= 16 * MS


def test_a_skipped_frame_leaves_one_group_without_that_camera_and_no_later_one():
    g = grouper()
    arrivals = [(n, t) for t in (0, 100, 200, 300) for n in NAMES if not (n == "left" and t == 100)]
    groups = feed(g, arrivals)
    assert [grp.missing for grp in groups[:3]] == [(), ("left",), ()]
    assert groups[1].frames == {"front": "front@100", "right": "right@100"}
    assert g.pop_events() == []  # one skipped frame is not an outage


def test_a_camera_that_stops_leaves_after_the_timeout_and_rejoins_with_its_next_frame():
    g = grouper()
    arrivals = [(n, t) for t in range(0, 1000, 100) for n in NAMES if not (n == "left" and 200 <= t < 700)]
    groups = []
    waited = []
    for name, t in arrivals:
        out = g.add(name, t * MS, t)
        groups += out
        if name == "right" and t in (200, 300):
            waited.append(len(out))  # the left camera is only late yet: the group waits for it
    assert waited == [0, 0]
    assert [grp.stamp_ns // MS for grp in groups] == list(range(0, 1000, 100))  # every instant, in order
    missing = {grp.stamp_ns // MS: grp.missing for grp in groups}
    assert all(missing[t] == ("left",) for t in range(200, 700, 100))
    assert missing[100] == () and missing[700] == () and missing[800] == ()
    events = g.pop_events()
    assert [(e.camera, e.joined, e.stamp_ns // MS) for e in events] == [("left", False, 500), ("left", True, 700)]
    assert "no frame for 0.400 s" in events[0].reason
    assert g.active() == NAMES


def test_a_slow_rig_whose_cameras_send_one_after_the_other_stays_together():
    """3 Hz cameras, the node's default wait (0.1 s, out after 0.2 s): each instant's front frame
    comes a period after the others' last ones, which is not silence; a camera that then really
    stops is out once it missed an instant (its period plus the wait), and rejoins."""
    g = RigFrameGrouper(NAMES, tolerance_ns=10 * MS, wait_ns=100 * MS)
    period = 333
    groups = feed(g, [(n, k * period) for k in range(6) for n in NAMES])
    assert [grp.missing for grp in groups] == [()] * 6 and g.pop_events() == []
    # The left camera stops after instant 7, back at instant 10.
    groups = feed(g, [(n, k * period) for k in range(6, 12) for n in NAMES if not (n == "left" and 8 <= k < 10)])
    assert [grp.stamp_ns // MS for grp in groups] == [k * period for k in range(6, 12)]
    assert [grp.missing for grp in groups] == [(), (), ("left",), ("left",), (), ()]
    events = [(e.camera, e.joined, e.stamp_ns // MS) for e in g.pop_events()]
    assert events == [("left", False, 9 * period), ("left", True, 10 * period)], events


def test_an_out_camera_is_not_waited_for():
    g = grouper()
    feed(g, [(n, t) for t in range(0, 600, 100) for n in ("front", "right")])
    assert g.active() == ("front", "right")  # the left camera never sent anything
    assert [grp.missing for grp in g.add("front", 600 * MS, 0) + g.add("right", 600 * MS, 0)] == [("left",)]


def test_flush_lets_out_what_still_waits():
    g = grouper()
    assert feed(g, [("front", 0), ("right", 0)]) == []  # waiting for the left camera
    flushed = g.flush()
    assert [grp.missing for grp in flushed] == [("left",)] and g.flush() == []
    assert g.wait_ns == 150 * MS


def test_late_frames_and_bad_settings():
    g = grouper()
    feed(g, [(n, t) for t in (0, 100) for n in NAMES])
    assert g.add("left", 50 * MS, "stale") == [] and g.late_frames == 1
    with pytest.raises(ValueError, match="no camera 'rear'"):
        g.add("rear", 0, None)
    with pytest.raises(ValueError, match="distinct"):
        RigFrameGrouper(["a", "a"], 0, 0)
    with pytest.raises(ValueError, match="out_after_ns"):
        RigFrameGrouper(["a"], 0, 100, out_after_ns=50)
    g.reset()
    assert g.active() == NAMES and g.add("left", 50 * MS, "x") == []


def test_a_drive_keeps_localizing_while_a_camera_drops_out_and_rejoins():
    """Five instants 1 m apart along the box; the left camera sends nothing at instants 1-3. Each
    group localizes with the cameras it has (``Rig.subset``; the front camera stays the anchor)
    from 0.4 m ahead, 0.1 m aside and 1 deg off, and every pose is right; the left camera is out
    from instant 3 and back in the group at instant 4."""
    from feature_scene import BoxScene
    from test_rig import DAMPING, base_from_world, camera_frame, errors, make_rig, to_pose
    from pixloc_ros.core.engine.localizer import Localizer, LocalizerConfig
    from pixloc_ros.core.engine.rig_localizer import localize_rig_features

    scene, rig = BoxScene(), make_rig()
    loc = Localizer(None, LocalizerConfig(device="cpu"))
    g = RigFrameGrouper(rig.names, tolerance_ns=20 * MS, wait_ns=150 * MS, out_after_ns=250 * MS)
    truths = [base_from_world(1.0 * k) for k in range(5)]
    groups = []
    for k, T in enumerate(truths):
        for i, name in enumerate(rig.names):
            if name == "left" and 1 <= k <= 3:
                continue
            groups += g.add(name, k * 100 * MS + 3 * i * MS, camera_frame(scene, rig, i, T, 250, seed=k))
    assert [grp.missing for grp in groups] == [(), ("left",), ("left",), ("left",), ()]
    assert [(e.camera, e.joined) for e in g.pop_events()] == [("left", False), ("left", True)]
    for k, grp in enumerate(groups):
        sub = rig.subset(grp.frames)
        init = to_pose(base_from_world(1.0 * k + 0.4, 0.1, 1.0)[None]).float()
        out = localize_rig_features(loc, [grp.frames[n][0] for n in sub.names], sub,
                                    [grp.frames[n][1] for n in sub.names], init, DAMPING)
        assert out.success, (k, out.result.reason)
        along, pos, deg = errors(out.base_from_world, truths[k])
        assert pos < 0.03 and deg < 0.05, (k, along, pos, deg)
        assert set(out.num_weighted) == set(grp.frames)


def test_a_camera_out_whose_frames_arrive_after_the_others_rejoins():
    """Out of the group, a camera's frame that arrives just after its instant went out without it
    (the other cameras' frames came first: nothing waits for a camera that is out) is too late for
    that instant, but brings the camera back: the next instant waits for it and has it (the node's
    replay showed a camera that never rejoined before this)."""
    g = grouper()
    feed(g, [(n, 0) for n in NAMES] + [("front", 200), ("left", 200), ("front", 400), ("left", 400)])  # right: out
    assert g.active() == ("front", "left") and [e.joined for e in g.pop_events()] == [False]
    groups = feed(g, [("front", 500), ("left", 500)])  # right is out: instant 500 goes out without it
    assert groups and groups[-1].missing == ("right",) and groups[-1].stamp_ns == 500 * MS
    assert feed(g, [("right", 500)]) == [] and g.late_frames == 1  # too late for 500 ...
    assert g.active() == NAMES and [e.joined for e in g.pop_events()] == [True]  # ... but back in
    assert feed(g, [("front", 600), ("left", 600)]) == []  # 600 waits for the right camera
    (grp,) = feed(g, [("right", 600)])
    assert grp.missing == () and grp.stamp_ns == 600 * MS
