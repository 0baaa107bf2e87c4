"""The node's health for /diagnostics: what the camera input did lately, and how bad that is.

``InputMonitor`` counts camera events over a sliding window of wall time; ``assess`` turns the
counts and the localization state into one level and message. Levels are those of
diagnostic_msgs/DiagnosticStatus (OK 0, WARN 1, ERROR 2); this module stays free of ROS.

The conditions, worst first:
- ERROR: the map is damaged (a CRC failure while running, e.g. in a tile);
- ERROR: CameraInfo arrives but no image does (the classic symptom of frames too large for a
  best-effort link: README, QoS);
- ERROR: images arrive but none of them could be used (bad stamps, no CameraInfo, bad input);
- WARN: at least half of them could not be used;
- WARN: at least half of them were replaced by newer ones before the worker took them (the node
  is slower than the camera: latency stays bounded, but most frames are never localized);
- WARN: no camera frame yet, or none for ``stale_s``;
- OK while tracking with a published pose, else WARN with the state and its reason.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

OK, WARN, ERROR = 0, 1, 2
EVENTS = ("info", "image", "skipped", "processed", "dropped")
MIN_IMAGES = 3  # fewer images in the window say too little about a rate


class InputMonitor:
    """Counts events (``EVENTS``) over the last ``window_s`` seconds; thread-safe."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._times: dict[str, deque[float]] = {event: deque() for event in EVENTS}
        self._lock = threading.Lock()

    def note(self, event: str, count: int = 1) -> None:
        """``count`` events of kind ``event`` happened now."""
        now = self._clock()
        with self._lock:
            times = self._times[event]
            times.extend([now] * count)
            self._prune(times, now)

    def counts(self) -> dict[str, int]:
        """Events per kind within the window."""
        now = self._clock()
        with self._lock:
            for times in self._times.values():
                self._prune(times, now)
            return {event: len(times) for event, times in self._times.items()}

    def _prune(self, times: deque[float], now: float) -> None:
        while times and times[0] < now - self.window_s:
            times.popleft()


@dataclass(frozen=True)
class Health:
    """One diagnostic verdict: level (OK, WARN, ERROR) and a one-line message."""

    level: int
    message: str


def assess(counts: dict[str, int], window_s: float, *, state: str, reason: str, tracking: bool,
           idle_s: float | None, stale_s: float, map_error: str | None = None,
           skip_reason: str = "") -> Health:
    """The node's health (module doc).

    counts: ``InputMonitor.counts()``; state/reason: the last frame's state name and reason;
    tracking: the last frame was tracked and published; idle_s: seconds since the worker last took
    a frame (None: never); map_error: the last map error, if any; skip_reason: why the last
    skipped image was skipped.
    """
    found: list[Health] = []
    images, infos, skipped = counts.get("image", 0), counts.get("info", 0), counts.get("skipped", 0)
    dropped = counts.get("dropped", 0)
    window = f"{window_s:.0f} s"
    if map_error:
        found.append(Health(ERROR, f"map damaged: {map_error}"))
    if images == 0 and infos >= 2:
        found.append(Health(ERROR, f"CameraInfo arrives ({infos} in the last {window}) but no image: are the "
                                   f"frames too large for a best-effort link? (README, QoS)"))
    if images >= MIN_IMAGES and skipped >= images:
        found.append(Health(ERROR, f"none of the {images} images of the last {window} could be used: {skip_reason}"))
    elif images >= MIN_IMAGES and 2 * skipped >= images:
        found.append(Health(WARN, f"{skipped} of {images} images of the last {window} could not be used: "
                                  f"{skip_reason}"))
    if images >= MIN_IMAGES and 2 * dropped >= images:
        found.append(Health(WARN, f"{dropped} of {images} frames of the last {window} were replaced by newer ones "
                                  f"before they could be processed (the node is slower than the camera)"))
    if idle_s is None or idle_s > stale_s:
        found.append(Health(WARN, "no camera frame yet" if idle_s is None else f"no camera frame for {idle_s:.0f} s"))
    elif not tracking:
        found.append(Health(WARN, f"{state}: {reason}" if reason else state))
    if not found:
        return Health(OK, "tracking")
    found.sort(key=lambda h: -h.level)  # stable: the order above within a level
    return Health(found[0].level, "; ".join(h.message for h in found))
