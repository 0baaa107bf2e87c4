"""The one-slot worker (drop counting, newest-frame-wins) and the keyed log throttle."""
import threading

import pytest

from pixloc_ros.ros.throttle import KeyedThrottle, ThrottledLogger, problem_key
from pixloc_ros.ros.worker import LatestOnlyWorker


def test_worker_processes_newest_and_counts_dropped():
    release = threading.Event()
    started = threading.Event()
    seen = []

    def process(item):
        seen.append(item)
        if item == 0:
            started.set()
            assert release.wait(10)

    worker = LatestOnlyWorker(process)
    try:
        assert worker.submit(0)
        assert started.wait(10)  # item 0 is being processed: the slot is empty
        assert worker.submit(1)  # waits in the slot
        assert not worker.submit(2)  # replaces 1
        assert not worker.submit(3)  # replaces 2
        assert worker.take_dropped() == 2
        assert worker.take_dropped() == 0  # counted once
        release.set()
        assert worker.wait_idle(10)
        assert seen == [0, 3]
        assert worker.processed == 2
    finally:
        release.set()
        worker.stop()


def test_submit_never_blocks_while_processing():
    gate = threading.Event()
    worker = LatestOnlyWorker(lambda item: gate.wait(10))
    try:
        worker.submit("a")
        done = threading.Event()

        def flood():
            for i in range(1000):
                worker.submit(i)
            done.set()

        threading.Thread(target=flood).start()
        assert done.wait(5), "submit blocked behind a busy worker"
        assert worker.take_dropped() >= 998
    finally:
        gate.set()
        worker.stop()


def test_errors_go_to_on_error_and_the_worker_continues():
    errors, seen = [], []

    def process(item):
        if item == "bad":
            raise ValueError("bad frame")
        seen.append(item)

    worker = LatestOnlyWorker(process, on_error=lambda item, exc: errors.append((item, str(exc))))
    try:
        for item in ["bad", "good"]:
            worker.submit(item)
            assert worker.wait_idle(10)
        assert errors == [("bad", "bad frame")] and seen == ["good"]
    finally:
        worker.stop()


def test_unhandled_error_is_raised_by_stop_and_clear_drops_waiting():
    gate, started = threading.Event(), threading.Event()

    def process(item):
        started.set()
        gate.wait(10)
        raise RuntimeError(f"boom {item}")

    worker = LatestOnlyWorker(process)
    worker.submit(1)
    assert started.wait(10)
    worker.submit(2)
    assert worker.clear() == 1  # 2 was waiting: dropped and counted
    assert worker.take_dropped() == 1
    gate.set()
    assert worker.wait_idle(10)
    assert worker.processed == 1
    with pytest.raises(RuntimeError, match="boom 1"):
        worker.stop()
    assert not worker.submit(3)  # stopped


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class RecordingLogger:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(("warn", text))

    def info(self, text):
        self.lines.append(("info", text))

    def error(self, text):
        self.lines.append(("error", text))


def test_throttle_is_per_key_and_reports_suppressed():
    clock = FakeClock()
    throttle = KeyedThrottle(5.0, clock)
    assert throttle.allow("image") == (True, 0)
    assert throttle.allow("image") == (False, 0)
    assert throttle.allow("odometry") == (True, 0)  # another key is not hidden by the first
    clock.t = 4.9
    assert throttle.allow("image")[0] is False
    clock.t = 5.0
    assert throttle.allow("image") == (True, 2)  # two suppressed since the last line
    with pytest.raises(ValueError):
        KeyedThrottle(-1)


def test_problem_key_ignores_numbers_only():
    assert problem_key("Skipped image at 12.5 s: Empty image (0x0)") == problem_key(
        "Skipped image at 1693828801.098 s: Empty image (3x7)")
    assert problem_key("Skipped image at 1.0 s: Empty image (0x0)") != problem_key(
        "Skipped image at 1.0 s: Unsupported image encoding 'yuv422'")
    assert problem_key("d2 = 4.1e+02 > 22.5") == "d# = # > #"


def test_throttled_logger_writes_one_line_per_problem_and_period():
    clock = FakeClock()
    rec = RecordingLogger()
    log = ThrottledLogger(rec, 5.0, clock)
    for i in range(10):
        clock.t = 0.1 * i
        log.warn(f"Skipped image at {i}.5 s: Unsupported image encoding 'yuv422'")
        log.warn(f"Skipped image at {i}.5 s: Empty image (0x0)")  # another problem: its own line
        log.error("CameraInfo has an invalid K", key="camera_info")
    assert rec.lines == [("warn", "Skipped image at 0.5 s: Unsupported image encoding 'yuv422'"),
                         ("warn", "Skipped image at 0.5 s: Empty image (0x0)"),
                         ("error", "CameraInfo has an invalid K")]
    clock.t = 6.0
    assert log.warn("Skipped image at 60.5 s: Empty image (0x0)")
    assert rec.lines[-1] == ("warn", "Skipped image at 60.5 s: Empty image (0x0) (9 similar messages suppressed)")
    assert not log.info("Skipped image at 61.5 s: Empty image (0x0)")


def test_throttled_logger_mixes_severities_on_a_real_rclpy_logger():
    """rclpy refuses two severities from one calling line: each level must log from its own."""
    logging = pytest.importorskip("rclpy.logging")
    log = ThrottledLogger(logging.get_logger("throttle_test"), 0.0)
    for _ in range(2):
        assert log.info("an info line") and log.warn("a warning") and log.error("an error")


def test_two_stages_overlap_run_one_ahead_and_keep_order():
    """With ``prepare`` (the network), item k+1 is prepared while item k is processed (the LM), at most
    one ahead; items are processed in order with their own prepared values; a prepare error goes to
    ``process`` in its place."""
    events, lock = [], threading.Lock()
    in_process = threading.Event()
    release = threading.Event()
    prepared_while_processing = threading.Event()

    def prepare(item):
        if in_process.is_set():
            prepared_while_processing.set()
        with lock:
            events.append(("prepare", item))
        if item == 2:
            raise ValueError("bad frame 2")
        return item * 10

    def process(item, prepared):
        in_process.set()
        with lock:
            events.append(("process", item, prepared if not isinstance(prepared, Exception) else str(prepared)))
        if item == 0:
            assert release.wait(10)
        in_process.clear()

    worker = LatestOnlyWorker(process, prepare=prepare)
    try:
        assert worker.submit(0)
        assert in_process.wait(10)  # 0 is in the second stage
        assert worker.submit(1)
        assert prepared_while_processing.wait(10)  # 1's network ran while 0's LM did
        deadline = threading.Event()
        deadline.wait(0.2)
        assert worker.submit(2)  # 1 waits in the hand-off, so 2 stays in the slot: one ahead at most
        deadline.wait(0.2)
        with lock:
            assert ("prepare", 2) not in events
        release.set()
        assert worker.wait_idle(10)
        assert [e for e in events if e[0] == "process"] == [("process", 0, 0), ("process", 1, 10),
                                                            ("process", 2, "bad frame 2")]
        assert worker.processed == 3 and worker.take_dropped() == 0
    finally:
        release.set()
        worker.stop()


def test_two_stage_clear_drops_the_prepared_and_the_waiting_item():
    release = threading.Event()
    started = threading.Event()
    seen = []

    def process(item, prepared):
        seen.append(item)
        started.set()
        assert release.wait(10)

    worker = LatestOnlyWorker(process, prepare=lambda item: item)
    try:
        worker.submit(0)
        assert started.wait(10)
        worker.submit(1)  # prepared, then waits in the hand-off
        for _ in range(100):
            if worker._handoff is not None:
                break
            threading.Event().wait(0.02)
        worker.submit(2)  # waits in the slot
        assert worker.clear() == 2
        release.set()
        assert worker.wait_idle(10)
        assert seen == [0] and worker.take_dropped() == 2
    finally:
        release.set()
        worker.stop()
