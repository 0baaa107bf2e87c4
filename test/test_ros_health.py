"""Diagnostics levels (ros/health.py): what the camera input did lately, judged."""
import pytest

from pixloc_ros.ros.health import ERROR, OK, WARN, InputMonitor, assess
from ros_testing import FakeClock


def test_monitor_counts_only_the_window():
    wall = FakeClock()
    m = InputMonitor(window_s=10.0, clock=wall)
    for _ in range(5):
        m.note("image")
        wall.t += 1.0
    m.note("dropped", 3)
    assert m.counts()["image"] == 5 and m.counts()["dropped"] == 3
    wall.t += 7.5  # the first three images are older than 10 s now
    assert m.counts()["image"] == 2 and m.counts()["info"] == 0
    with pytest.raises(ValueError):
        InputMonitor(window_s=0)


def judge(counts, **kw):
    args = dict(state="tracking", reason="", tracking=True, idle_s=0.5, stale_s=5.0, map_error=None,
                skip_reason="")
    args.update(kw)
    return assess(counts, 10.0, **args)


def test_tracking_with_usable_frames_is_ok():
    h = judge({"image": 10, "info": 10, "processed": 10, "skipped": 0, "dropped": 0})
    assert h.level == OK and h.message == "tracking"


def test_camera_info_without_images_is_an_error_that_names_the_likely_cause():
    h = judge({"image": 0, "info": 20}, idle_s=12.0)
    assert h.level == ERROR and "CameraInfo arrives (20" in h.message and "too large" in h.message
    assert "no camera frame for 12 s" in h.message  # the lesser finding is still said


def test_skipped_images_warn_and_all_skipped_is_an_error():
    reason = "stamp_ahead: image stamp 70.0 s is 20.0 s ahead of the clock"
    half = judge({"image": 10, "info": 10, "skipped": 5, "processed": 5}, skip_reason=reason)
    assert half.level == WARN and "5 of 10 images" in half.message and reason in half.message
    every = judge({"image": 10, "info": 10, "skipped": 10}, skip_reason=reason, tracking=False,
                  state="tracking", reason="")
    assert every.level == ERROR and "none of the 10 images" in every.message
    few = judge({"image": 2, "info": 2, "skipped": 2}, skip_reason=reason)
    assert few.level == OK  # two images say little about a rate


def test_a_node_slower_than_the_camera_warns():
    h = judge({"image": 30, "info": 30, "processed": 3, "dropped": 27})
    assert h.level == WARN and "27 of 30 frames" in h.message


def test_a_damaged_map_is_an_error_whatever_else_happens():
    h = judge({"image": 10, "info": 10, "processed": 10}, map_error="tile 3: CRC-32 mismatch")
    assert h.level == ERROR and h.message.startswith("map damaged: tile 3")


def test_no_frame_and_not_tracking_warn():
    assert judge({}, idle_s=None).message == "no camera frame yet"
    lost = judge({"image": 5, "info": 5, "processed": 5}, tracking=False, state="lost", reason="low_inlier_ratio")
    assert lost.level == WARN and lost.message == "lost: low_inlier_ratio"
