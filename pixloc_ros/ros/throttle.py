"""Log a message at most once per period *per key*.

rclpy's ``throttle_duration_sec`` throttles per call site: one ``warn`` line that reports every
kind of bad frame would let the first reason hide all others for the period. Here the key is the
problem itself (``problem_key``: the text with its numbers blanked, so "image 1.2 s: empty" and
"image 1.5 s: empty" share a key while "empty" and "unsupported encoding" do not), and the line
says how many similar messages were suppressed since the last one.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")


def problem_key(text: str) -> str:
    """``text`` with every number replaced by '#': messages that differ only in stamps, sizes or
    measured values share a key."""
    return _NUMBER.sub("#", text)


class KeyedThrottle:
    """Decides whether a message under ``key`` may be logged now (thread-safe)."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic):
        if period_s < 0:
            raise ValueError(f"Throttle period must be >= 0 s, got {period_s}")
        self.period_s = period_s
        self._clock = clock  # wall/steady time: throttling must not stall when a bag's clock jumps
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> tuple[bool, int]:
        """(may log now, number of messages under ``key`` suppressed since the last logged one)."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False, 0
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)


class ThrottledLogger:
    """Wraps an rclpy logger: ``warn(text)`` logs ``text`` at most once per period per problem
    (``problem_key(text)``, or the ``key`` given)."""

    def __init__(self, logger, period_s: float, clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._throttle = KeyedThrottle(period_s, clock)

    def _allow(self, text: str, key: str | None) -> str | None:
        """The line to log now (with the suppressed count), or None while throttled."""
        ok, suppressed = self._throttle.allow(problem_key(text) if key is None else key)
        if not ok:
            return None
        return f"{text} ({suppressed} similar messages suppressed)" if suppressed else text

    # One logger call per severity, each on its own line: rclpy keys a logging context by the
    # calling line and refuses a second severity from the same line.
    def warn(self, text: str, key: str | None = None) -> bool:
        """Log a warning unless the same problem was logged less than a period ago; True if logged."""
        line = self._allow(text, key)
        if line is not None:
            self._logger.warning(line)
        return line is not None

    def info(self, text: str, key: str | None = None) -> bool:
        """As ``warn``, at info level."""
        line = self._allow(text, key)
        if line is not None:
            self._logger.info(line)
        return line is not None

    def error(self, text: str, key: str | None = None) -> bool:
        """As ``warn``, at error level."""
        line = self._allow(text, key)
        if line is not None:
            self._logger.error(line)
        return line is not None
