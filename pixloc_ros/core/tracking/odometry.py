"""Odometry between frames: ``odom_from_base`` samples by stamp, interpolated at image stamps, the
motion between two stamps, and how much a hypothesis' covariance widens over that motion.
Poses are (4, 4) float64 numpy arrays; distances in metres, angles in the config in degrees.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp


@dataclass
class MotionConfig:
    """How hypotheses move and widen between frames."""

    track_sigma_floor_m: float = 0.15  # prediction std of a hypothesis, translation floor per axis
    track_sigma_floor_deg: float = 1.0  # prediction std, rotation floor per axis
    odom_sigma_per_m: float = 0.05  # prediction std grows by this fraction of the distance driven since the last fix
    odom_sigma_deg_per_m: float = 0.2  # and by this many degrees per metre driven
    no_odom_sigma_m: float = 1.0  # without odometry: prediction std per axis (the car moved by an unknown amount)
    no_odom_sigma_deg: float = 5.0
    odom_buffer_s: float = 60.0  # odometry history kept for interpolation
    odom_max_extrapolation_s: float = 0.2  # image stamps this far past the newest odometry use the newest sample


class OdometryBuffer:
    """``odom_from_base`` samples by stamp, interpolated (slerp + lerp) at image stamps."""

    def __init__(self, horizon_s: float):
        self.horizon_ns = int(horizon_s * 1e9)
        self.stamps: list[int] = []
        self.poses: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.stamps)

    def clear(self) -> None:
        self.stamps.clear()
        self.poses.clear()

    def add(self, stamp_ns: int, odom_from_base: np.ndarray) -> None:
        """Append a sample (stamps must not go backwards: the caller resets on a jump)."""
        if self.stamps and stamp_ns <= self.stamps[-1]:
            if stamp_ns == self.stamps[-1]:
                self.poses[-1] = odom_from_base
            return  # out-of-order duplicate within tolerance: ignore
        self.stamps.append(stamp_ns)
        self.poses.append(odom_from_base)
        cut = bisect_left(self.stamps, stamp_ns - self.horizon_ns)
        if cut > 0:
            del self.stamps[:cut], self.poses[:cut]

    def at(self, stamp_ns: int, max_extrapolation_ns: int) -> np.ndarray | None:
        """Interpolated ``odom_from_base`` (4, 4) at ``stamp_ns``, or None when not covered."""
        if not self.stamps:
            return None
        if stamp_ns >= self.stamps[-1]:
            if stamp_ns - self.stamps[-1] > max_extrapolation_ns:
                return None
            if len(self.stamps) < 2 or stamp_ns == self.stamps[-1]:
                return self.poses[-1]
            # Constant velocity (in the body frame) over the last interval: odometry often lags
            # the camera by a message or two, and holding the last sample would put the prior
            # behind by the distance driven meanwhile.
            t0, t1 = self.stamps[-2], self.stamps[-1]
            step = np.linalg.inv(self.poses[-2]) @ self.poses[-1]
            s = (stamp_ns - t1) / (t1 - t0)
            out = np.eye(4)
            out[:3, :3] = Rotation.from_rotvec(s * Rotation.from_matrix(step[:3, :3]).as_rotvec()).as_matrix()
            out[:3, 3] = s * step[:3, 3]
            return self.poses[-1] @ out
        if stamp_ns < self.stamps[0]:
            return self.poses[0] if self.stamps[0] - stamp_ns <= max_extrapolation_ns else None
        i = bisect_left(self.stamps, stamp_ns)
        if self.stamps[i] == stamp_ns:
            return self.poses[i]
        t0, t1 = self.stamps[i - 1], self.stamps[i]
        a, b = self.poses[i - 1], self.poses[i]
        s = (stamp_ns - t0) / (t1 - t0)
        out = np.eye(4)
        out[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([a[:3, :3], b[:3, :3]])))(s).as_matrix()
        out[:3, 3] = (1 - s) * a[:3, 3] + s * b[:3, 3]
        return out


class Motion:
    """The odometry the pipeline keeps (``buffer``) and the motion model of its hypotheses."""

    def __init__(self, config: MotionConfig):
        self.config = config
        self.buffer = OdometryBuffer(config.odom_buffer_s)

    @property
    def max_extrapolation_ns(self) -> int:
        return int(self.config.odom_max_extrapolation_s * 1e9)

    def at(self, stamp_ns: int) -> np.ndarray | None:
        """``odom_from_base`` (4, 4) at ``stamp_ns``, or None when the odometry does not cover it."""
        return self.buffer.at(stamp_ns, self.max_extrapolation_ns)

    def delta(self, t0_ns: int, t1_ns: int) -> np.ndarray | None:
        """base(t0)_from_base(t1) (4, 4) from odometry, or None when not covered."""
        a, b = self.at(t0_ns), self.at(t1_ns)
        if a is None or b is None:
            return None
        return np.linalg.inv(a) @ b

    def grow(self, distance_m: float | None) -> Callable[[np.ndarray], np.ndarray]:
        """The covariance widening (6, 6) -> (6, 6) of a prediction over ``distance_m`` of odometry
        (None: no odometry), floored at the track's sigma floors."""
        cfg = self.config

        def grow(cov: np.ndarray) -> np.ndarray:
            if distance_m is None:
                add = np.array([cfg.no_odom_sigma_m ** 2] * 3 + [math.radians(cfg.no_odom_sigma_deg) ** 2] * 3)
            else:
                add = np.array([(cfg.odom_sigma_per_m * distance_m) ** 2] * 3
                               + [math.radians(cfg.odom_sigma_deg_per_m * distance_m) ** 2] * 3)
            out = cov + np.diag(add)
            floor = np.array([cfg.track_sigma_floor_m ** 2] * 3 + [math.radians(cfg.track_sigma_floor_deg) ** 2] * 3)
            return out + np.diag(np.clip(floor - np.diag(out), 0.0, None))
        return grow


__all__ = ["Motion", "MotionConfig", "OdometryBuffer"]
