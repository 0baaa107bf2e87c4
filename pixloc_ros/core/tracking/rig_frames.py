"""Group a camera rig's frames by stamp (issue 30): message_filters' approximate-time idea, except
that a camera that stops (or whose frames the node rejects as bad and never hands over) leaves
the group instead of stalling it, and rejoins with its next frame.

Stamp-driven, no wall clock: the same input gives the same groups live and from a bag. ``add(name,
stamp_ns, payload)`` queues one camera's frame and returns the groups it completes, oldest first:
- the oldest queued frame is the pivot; every camera in the group (every camera not ``out``)
  contributes its queued frame nearest the pivot within ``tolerance_ns``;
- a group with all of them goes out at once; one that lacks a camera goes out without it when
  that camera already sent a frame past the pivot + tolerance (it skipped this instant), or when
  frames ``wait_ns`` newer than the pivot arrived from the others (it is late or stopped);
- a camera with no frame for ``out_after_ns`` of stamp time (newest stamp seen minus its last, or
  minus the first stamp seen when it never sent one), and for longer than its own frame period plus
  ``wait_ns`` once that period is known, is ``out``: groups stop waiting for it; its next frame
  brings it back. (The period matters when frames come camera after camera: the front camera's
  next frame is a period newer than the left camera's last one, which is not late at all, only
  not sent yet; a 3 Hz rig with ``wait_ns`` 0.1 s would otherwise leave and rejoin every instant.)
  Both changes are ``MembershipEvent``s (``pop_events``) for the node's status and diagnostics.
Frames older than a group's are dropped (they can no longer be grouped), so is a frame that
arrives after its instant's group went out (``late_frames`` counts them), and each camera keeps at
most ``queue_size`` frames.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RigGroup:
    """Frames of several cameras taken at (about) one instant."""

    stamp_ns: int  # stamp of the first camera present in rig order (the anchor's, ``geometry.rig.Rig.subset``)
    frames: dict[str, Any]  # camera name -> payload, in rig order
    stamps_ns: dict[str, int]  # camera name -> its frame's stamp
    missing: tuple[str, ...]  # rig cameras without a frame in this group (out, late or skipped), rig order

    @property
    def spread_ns(self) -> int:
        """Newest minus oldest stamp of the group (<= the tolerance, by construction)."""
        return max(self.stamps_ns.values()) - min(self.stamps_ns.values())


@dataclass(frozen=True)
class MembershipEvent:
    """A camera left the group (``joined`` False) or came back (True)."""

    camera: str
    joined: bool
    stamp_ns: int  # the stamp at which it was noticed
    reason: str  # for people: why


PERIOD_WINDOW = 8  # frame intervals a camera's period is taken from (the smallest: a dropped frame doubles one)


@dataclass
class _Camera:
    queue: list[tuple[int, Any]] = field(default_factory=list)  # sorted by stamp
    last_ns: int | None = None  # newest stamp received
    out: bool = False
    intervals: list[int] = field(default_factory=list)  # its latest stamp steps (ns), at most PERIOD_WINDOW

    def note(self, stamp_ns: int) -> None:
        """A frame at ``stamp_ns``: its step from the newest one before counts towards the period."""
        if self.last_ns is not None and stamp_ns > self.last_ns:
            self.intervals = [*self.intervals[-(PERIOD_WINDOW - 1):], stamp_ns - self.last_ns]
        self.last_ns = stamp_ns if self.last_ns is None else max(self.last_ns, stamp_ns)

    @property
    def period_ns(self) -> int | None:
        """Its frame period (the smallest recent step), None before two frames."""
        return min(self.intervals) if self.intervals else None


class RigFrameGrouper:
    """Groups frames of the cameras ``names`` (rig order) by stamp; thread-safe."""

    def __init__(self, names, tolerance_ns: int, wait_ns: int, out_after_ns: int | None = None,
                 queue_size: int = 10):
        """tolerance_ns: largest stamp difference within a group (e.g. half a frame period);
        wait_ns: how far (stamp time) the other cameras may run ahead before a group goes out
        without a late camera; out_after_ns: silence after which a camera is out (default 2 x
        wait_ns); queue_size: frames kept per camera."""
        self.names = tuple(str(n) for n in names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"the grouper needs distinct camera names, got {list(self.names)}")
        if tolerance_ns < 0 or wait_ns < 0:
            raise ValueError(f"tolerance_ns and wait_ns must be >= 0, got {tolerance_ns}, {wait_ns}")
        self.tolerance_ns = int(tolerance_ns)
        self.wait_ns = int(wait_ns)
        self.out_after_ns = int(2 * wait_ns if out_after_ns is None else out_after_ns)
        if self.out_after_ns < self.wait_ns:
            raise ValueError(f"out_after_ns ({self.out_after_ns}) must be >= wait_ns ({self.wait_ns})")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.queue_size = int(queue_size)
        self._cams = {n: _Camera() for n in self.names}
        self._newest_ns: int | None = None
        self._first_ns: int | None = None  # first stamp seen: a camera that never sent is silent since then
        self._emitted_ns: int | None = None  # newest stamp of the last group out
        self.late_frames = 0  # frames that arrived after their instant's group went out (dropped)
        self._events: list[MembershipEvent] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every queued frame and the membership (after a clock jump): all cameras are in."""
        with self._lock:
            self._cams = {n: _Camera() for n in self.names}
            self._newest_ns = self._first_ns = self._emitted_ns = None
            self._events.clear()

    def active(self) -> tuple[str, ...]:
        """Cameras in the group now (not out), rig order."""
        with self._lock:
            return tuple(n for n in self.names if not self._cams[n].out)

    def pop_events(self) -> list[MembershipEvent]:
        """Membership changes since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
        return events

    def add(self, name: str, stamp_ns: int, payload) -> list[RigGroup]:
        """Queue a frame of camera ``name``; returns the groups it completes, oldest first.
        ValueError for a camera not in the rig."""
        if name not in self._cams:
            raise ValueError(f"no camera {name!r} in the rig (cameras: {list(self.names)})")
        stamp_ns = int(stamp_ns)
        with self._lock:
            cam = self._cams[name]
            if cam.out:
                # Back in before the late check: a camera out of the group whose frames come just after
                # the others' (its instant went out without it) would otherwise never rejoin.
                cam.out = False
                cam.note(stamp_ns)
                self._events.append(MembershipEvent(name, True, stamp_ns, "frames again"))
            if self._emitted_ns is not None and stamp_ns <= self._emitted_ns:
                self.late_frames += 1  # its instant is gone: grouping it now would localize the past
                return []
            cam.queue.append((stamp_ns, payload))
            cam.queue.sort(key=lambda item: item[0])
            del cam.queue[:-self.queue_size]
            cam.note(stamp_ns)
            self._newest_ns = stamp_ns if self._newest_ns is None else max(self._newest_ns, stamp_ns)
            self._first_ns = stamp_ns if self._first_ns is None else self._first_ns
            self._update_membership()
            groups = []
            while (group := self._next_group()) is not None:
                groups.append(group)
            return groups

    def flush(self) -> list[RigGroup]:
        """The groups still waiting, without waiting any longer (the end of a recording), oldest first."""
        with self._lock:
            wait, self.wait_ns = self.wait_ns, -1  # every pivot has waited long enough now
            try:
                groups = []
                while (group := self._next_group()) is not None:
                    groups.append(group)
                return groups
            finally:
                self.wait_ns = wait

    def _update_membership(self) -> None:
        for n, cam in self._cams.items():
            silent_since = cam.last_ns if cam.last_ns is not None else self._first_ns
            if cam.out:
                continue
            # Its own period, else the rig's (the cameras of a rig usually share a rate): a camera
            # with one frame so far is not out only because another camera's second one came first.
            period = cam.period_ns if cam.period_ns is not None else self._rig_period_ns()
            limit = self.out_after_ns if period is None else max(self.out_after_ns, period + self.wait_ns)
            if self._newest_ns - silent_since > limit:
                cam.out = True
                cam.queue.clear()
                self._events.append(MembershipEvent(
                    n, False, self._newest_ns, f"no frame for {(self._newest_ns - silent_since) * 1e-9:.3f} s "
                    f"(stamp time) while the others kept sending"))

    def _rig_period_ns(self) -> int | None:
        periods = [c.period_ns for c in self._cams.values() if c.period_ns is not None]
        return min(periods) if periods else None

    def _next_group(self) -> RigGroup | None:
        queued = [(cam.queue[0][0], n) for n, cam in self._cams.items() if cam.queue]
        if not queued:
            return None
        pivot, _ = min(queued)
        members = [n for n in self.names if not self._cams[n].out]
        picks, missing_waitable = {}, []
        for n in members:
            cam = self._cams[n]
            near = [(abs(s - pivot), i) for i, (s, _) in enumerate(cam.queue) if abs(s - pivot) <= self.tolerance_ns]
            if near:
                picks[n] = min(near)[1]
            elif cam.last_ns is None or cam.last_ns <= pivot + self.tolerance_ns:
                missing_waitable.append(n)  # may still send a frame for this instant
        if missing_waitable and self._newest_ns - pivot <= self.wait_ns:
            return None  # wait for the late cameras
        frames, stamps = {}, {}
        for n in self.names:
            if n in picks:
                stamp, payload = self._cams[n].queue[picks[n]]
                frames[n], stamps[n] = payload, stamp
                del self._cams[n].queue[:picks[n] + 1]  # older frames of this camera can no longer group
        # Frames within the tolerance of the pivot of cameras not picked (none: every member with one was
        # picked) and the pivot itself are spent; drop anything left at or before the pivot.
        for cam in self._cams.values():
            while cam.queue and cam.queue[0][0] <= pivot:
                cam.queue.pop(0)
        first = next(n for n in self.names if n in frames)
        self._emitted_ns = max(stamps.values())
        return RigGroup(stamps[first], frames, stamps, tuple(n for n in self.names if n not in frames))


__all__ = ["MembershipEvent", "RigFrameGrouper", "RigGroup"]
