"""Is this message's stamp usable? One bad stamp must not blind the node or reset it.

Every input stream (image, CameraInfo, odometry, GNSS) goes through one ``StampGuard`` before
anything else sees it. The guard keeps, per stream, the newest stamp it accepted and when
(monotonic wall time) that message arrived, and sorts each new stamp into one ``Verdict``:

- ``AHEAD``: more than ``tolerance_ns`` ahead of the reference time (below). Rejected and not
  remembered, so that the stamps after it are judged against good ones: a single frame stamped
  +20 s or +1 h is dropped with its own message and the next good frame goes through.
- ``RESTART``: more than ``tolerance_ns`` behind the stream's own newest stamp: time went back
  (a bag restarted). The guard forgets every stream; the caller resets the localization.
- ``LATE``: behind the stream's newest stamp, within the tolerance: out of order.
- ``DUPLICATE``: equal to the stream's newest stamp.
- ``OK``: newer than the stream's newest stamp, and not ahead.

The reference time, what "now" is on the data's timeline:
- under sim time, once /clock has come: the ROS clock (``ros_now_ns``);
- otherwise: the newest accepted stamp of every *other* stream that sent one within the last
  ``live_s`` seconds, advanced by the wall time since it arrived (a camera frame stamped between
  two odometry samples is not "ahead" of the odometry), and with system time never later than
  the system clock (nothing comes from the future; a bag replayed on system time has old stamps,
  so there its streams are the tighter bound). A stream that fell silent stops counting after
  ``live_s``, which is also how a whole timeline that jumps forward (every stream at once, with no
  /clock) is accepted after at most ``live_s`` seconds of rejections.
With no reference (the first message of all, or a single stream without a clock) nothing is
ahead: a bad first stamp then costs one reset when the good stamps after it arrive (RESTART).

Pure Python (no rclpy); thread-safe, since the node's callbacks may run on several threads.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    """How a stamp relates to its stream and to the reference time (see the module doc)."""

    OK = "ok"
    AHEAD = "stamp_ahead"
    RESTART = "restart"
    LATE = "out_of_order"
    DUPLICATE = "duplicate_stamp"


@dataclass(frozen=True)
class StampCheck:
    """The verdict on one stamp, with what it was compared against (for the log line)."""

    verdict: Verdict
    stamp_ns: int
    reference_ns: int | None = None  # AHEAD: the reference time; RESTART/LATE/DUPLICATE: the stream's newest
    reference: str = ""  # what ``reference_ns`` is, e.g. "the clock" or "the odometry"

    @property
    def gap_s(self) -> float:
        """|stamp - reference| in seconds (0 without a reference)."""
        return 0.0 if self.reference_ns is None else abs(self.stamp_ns - self.reference_ns) * 1e-9

    def describe(self, what: str) -> str:
        """One sentence for the log and the status, e.g. "stamp_ahead: image stamp 20.000 s ahead of the clock"."""
        v = self.verdict
        if v is Verdict.AHEAD:
            return (f"{v.value}: {what} stamp {self.stamp_ns * 1e-9:.3f} s is {self.gap_s:.3f} s ahead of "
                    f"{self.reference} (wrong clock on the sender?); ignored")
        if v is Verdict.LATE:
            return (f"{v.value}: {what} stamp {self.stamp_ns * 1e-9:.3f} s is {self.gap_s:.3f} s older than the "
                    f"newest {what} ({self.reference_ns * 1e-9:.3f} s); ignored")
        if v is Verdict.DUPLICATE:
            return f"{v.value}: {what} stamp {self.stamp_ns * 1e-9:.3f} s was already received; ignored"
        if v is Verdict.RESTART:
            return f"{what} stamp went back by {self.gap_s:.1f} s (bag restarted?)"
        return "ok"


class StampGuard:
    """Judges each stream's stamps (module doc). ``tolerance_ns``: how far a stamp may be ahead of
    the reference time, and how far it may go back before that is a restart.

    ``clock``: monotonic wall time in seconds (injectable for tests).
    """

    def __init__(self, tolerance_ns: int, live_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        self.tolerance_ns = int(tolerance_ns)
        self.live_s = live_s
        self._clock = clock
        self._newest: dict[str, tuple[int, float]] = {}  # stream -> (newest accepted stamp, wall time it came)
        self._lock = threading.Lock()

    def newest(self) -> int | None:
        """The newest accepted stamp over all streams (None when nothing was accepted since the
        last restart)."""
        with self._lock:
            return max((stamp for stamp, _ in self._newest.values()), default=None)

    def forget(self) -> None:
        """Forget every stream (the caller reset for another reason, e.g. /clock jumped back)."""
        with self._lock:
            self._newest.clear()

    def check(self, stream: str, stamp_ns: int, ros_now_ns: int | None = None,
              system_now_ns: int | None = None) -> StampCheck:
        """Judge ``stamp_ns`` of ``stream`` and remember it if OK (or as the first stamp after a RESTART).

        ros_now_ns: the ROS clock under sim time once /clock came, else None.
        system_now_ns: the system clock when the node runs on system time, else None.
        """
        stamp_ns = int(stamp_ns)
        wall = self._clock()
        tol = self.tolerance_ns
        with self._lock:
            own = self._newest.get(stream)
            if own is not None and stamp_ns < own[0] - tol:
                self._newest = {stream: (stamp_ns, wall)}  # the new timeline starts here
                return StampCheck(Verdict.RESTART, stamp_ns, own[0], f"the newest {stream}")
            reference, name = self._reference(stream, wall, ros_now_ns, system_now_ns)
            if reference is not None and stamp_ns > reference + tol:
                return StampCheck(Verdict.AHEAD, stamp_ns, reference, name)
            if own is not None and stamp_ns == own[0]:
                return StampCheck(Verdict.DUPLICATE, stamp_ns, own[0], f"the newest {stream}")
            if own is not None and stamp_ns < own[0]:
                return StampCheck(Verdict.LATE, stamp_ns, own[0], f"the newest {stream}")
            self._newest[stream] = (stamp_ns, wall)
            return StampCheck(Verdict.OK, stamp_ns)

    def _reference(self, stream: str, wall: float, ros_now_ns: int | None,
                   system_now_ns: int | None) -> tuple[int | None, str]:
        """(reference time, its name) for a message of ``stream`` arriving at ``wall``."""
        if ros_now_ns is not None:
            return ros_now_ns, "the clock (/clock)"
        best, name = None, ""
        for other, (stamp, arrived) in self._newest.items():
            age = wall - arrived
            if other == stream or age > self.live_s:
                continue
            advanced = stamp + int(age * 1e9)
            if best is None or advanced > best:
                best, name = advanced, f"the {other} stream"
        if system_now_ns is not None and (best is None or system_now_ns < best):
            # Nothing comes from the future of the system clock. (A bag replayed on system time has
            # old stamps: the clock is far ahead of them and its streams are the tighter bound.)
            best, name = system_now_ns, "the system clock"
        return best, name
