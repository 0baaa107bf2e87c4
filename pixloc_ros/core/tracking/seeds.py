"""The initial poses of a frame: every live hypothesis (moved by the odometry), then fresh seeds -
the operator's initial pose and the keyframes near it, or the keyframes near the GNSS fix, the
leader moved along the road (where PixLoc's wrong minima lie), and, relocalizing with a wide
search, a grid around the seeds. Poses (4, 4) float64, ``map_from_cam``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum
from typing import Callable

import numpy as np

from ..geometry.pose import Pose
from ..maps.retrieval import MapIndex
from .frames import FrameInput
from .hypothesis_books import HypothesisTracker
from .priors import PriorConfig, Priors
from .reasons import Reason, Why
from .seed_grid import relocalization_grid


@dataclass
class SeedConfig:
    """How many initial poses a frame optimises, and which."""

    num_hypotheses: int = 4  # initial poses optimised per frame at most (live hypotheses + seeds)
    # Relocalizing with a wide search: the seeds of a frame spread over at least this many initial
    # poses in all (seed_grid.relocalization_grid: sideways / forward shifts of +-0.5 m around each
    # seed, and yaw steps over +-10 deg once there are 8 or more poses per seed), for priors further
    # off than PixLoc's basin (about 1 m and a few degrees). 0: the seeds alone. The LM cost grows
    # with the count: with the fused CUDA kernels 64 cost about what 4 do; on a CPU each one costs
    # about as much as a seed.
    relocalization_grid: int = 0
    probe_distance_m: float = 2.5  # along-road probe: the leader moved this far forward / backward
    tracking_challengers: int = 1  # seeds tried per tracked frame against the committed hypothesis (0: none)

    def __post_init__(self):
        if self.num_hypotheses < 1:
            raise ValueError(f"num_hypotheses must be >= 1, got {self.num_hypotheses}")
        if self.relocalization_grid < 0:
            raise ValueError(f"relocalization_grid must be >= 0, got {self.relocalization_grid}")
        if self.tracking_challengers < 0:
            raise ValueError(f"tracking_challengers must be >= 0, got {self.tracking_challengers}")


class SeedKind(Enum):
    """Where a seed came from."""

    INITIAL_POSE = "initialpose"  # the operator's pose itself
    KEYFRAME = "keyframe"  # a keyframe's own pose near the prior (PixLoc's retrieval initialisation)
    PROBE = "probe"  # the leader moved along the road
    GRID = "grid"  # the wide-search grid around the seeds


@dataclass
class Seed:
    """An initial pose tried this frame that continues no live hypothesis."""

    map_from_cam: np.ndarray  # (4, 4)
    kind: SeedKind
    keyframe: int = -1  # the map's keyframe row whose pose this is (KEYFRAME seeds), else -1
    # The stamp the pose stands for when it is not the frame's: a keyframe near a GNSS fix is where
    # the vehicle may have been when the fix was taken (``follow_odometry`` moves it to the frame).
    # None: the frame's stamp.
    prior_stamp_ns: int | None = None


@dataclass
class Start:
    """One initial pose of the frame's batch and the live hypothesis it continues (None: a seed)."""

    map_from_cam: np.ndarray  # (4, 4)
    source: int | None


def to_pose(T: np.ndarray) -> Pose:
    """(..., 4, 4) numpy transforms as the engine's ``Pose``."""
    return Pose.from_numpy(T[..., :3, :3], T[..., :3, 3])


class SeedPlanner:
    """Plans each frame's initial poses from the priors, the live hypotheses and the map."""

    def __init__(self, config: SeedConfig, priors: PriorConfig, index: MapIndex):
        self.config = config
        self.priors = priors
        self.index = index

    def keyframe_seeds(self, position: np.ndarray, view_dir: np.ndarray | None, max_heading_deg: float,
                       radius_m: float, oversample: int = 1) -> list[Seed]:
        """The keyframes nearest ``position`` (map frame, m), nearest first, each as its own pose;
        ``num_hypotheses`` x ``oversample`` of them at most."""
        idx, _, _ = self.index.nearest_keyframes(position, view_dir, k=self.config.num_hypotheses * oversample,
                                                 max_heading_diff_deg=max_heading_deg, max_distance_m=radius_m,
                                                 require_observations=True)
        return [Seed(self.index.keyframe_world_from_cam[i], SeedKind.KEYFRAME, int(i)) for i in idx]

    def seeds(self, frame: FrameInput, priors: Priors, oversample: int = 1) -> tuple[list[Seed], Why | None]:
        """Fresh initial poses from the operator's initial pose or the GNSS fix (nearest keyframes),
        and why there are none (NO_PRIOR, PRIOR_OUTSIDE_MAP) when the list is empty. The keyframes
        near a GNSS fix are poses at the fix's stamp (``Seed.prior_stamp_ns``; ``follow_odometry``).
        oversample: look at this many times ``num_hypotheses`` keyframes (a rig's map holds every
        camera's keyframe at each place, and the caller keeps those of its cameras, one per place)."""
        stamp, base_from_cam = frame.stamp_ns, frame.base_from_cam
        operator = priors.initial_pose_at(stamp)
        if operator is not None:
            T = operator.map_from_base
            if operator.is_2d:
                yaw = math.atan2(T[1, 0], T[0, 0])
                T = self.index.lift_2d_pose(T[0, 3], T[1, 3], yaw, base_from_cam)
            map_from_cam = T @ base_from_cam
            near = self.keyframe_seeds(map_from_cam[:3, 3], map_from_cam[:3, 2], 45.0, 15.0, oversample)
            return [Seed(map_from_cam, SeedKind.INITIAL_POSE)] + near, None
        gnss = priors.gnss_at(stamp)
        if gnss.fix is not None:
            radius = max(gnss.fix.gate_m(self.priors.gnss_gate_sigmas), 5.0)
            near = self.keyframe_seeds(gnss.fix.xyz, None, 180.0, radius + 10.0, oversample)
            if not near:
                dist = self.index.distance_to_map(gnss.fix.xyz)
                return [], Why(Reason.PRIOR_OUTSIDE_MAP, f"GNSS fix is {dist:.0f} m from the nearest keyframe")
            return [replace(s, prior_stamp_ns=gnss.fix.stamp_ns) for s in near], None
        return [], gnss.stale or Why(Reason.NO_PRIOR, "waiting for an initial pose (/initialpose) or a GNSS fix")

    def probe(self, map_from_base: np.ndarray, base_from_cam: np.ndarray, frame_number: int) -> Seed:
        """``map_from_base`` moved along its forward axis by +-probe_distance_m (alternating per frame):
        the along-road place where PixLoc's wrong minima lie."""
        sign = 1.0 if frame_number % 2 == 0 else -1.0
        T = map_from_base.copy()
        T[:3, 3] += sign * self.config.probe_distance_m * T[:3, 0]
        return Seed(T @ base_from_cam, SeedKind.PROBE)

    def batch(self, frame: FrameInput, seeds: list[Seed], tracker: HypothesisTracker,
              frame_number: int) -> list[Start]:
        """This frame's initial poses: every live hypothesis (best first), then probes and seeds in
        the slots left (challengers only while tracking; the seeds rotate frame by frame), then the
        wide-search grid while relocalizing."""
        cfg = self.config
        live = tracker.ordered()
        starts = [Start(h.map_from_base @ frame.base_from_cam, h.id) for h in live]
        slots = cfg.num_hypotheses - len(starts)
        if tracker.committed is not None:
            slots = min(slots, cfg.tracking_challengers)
        extra: list[Seed] = []
        operator = any(s.kind == SeedKind.INITIAL_POSE for s in seeds)
        if live and slots > 0 and not operator:
            # The leader moved along the road on even frames (or always, with room), a fresh seed else.
            if frame_number % 2 == 0 or slots > 1 or not seeds:
                extra.append(self.probe(live[0].map_from_base, frame.base_from_cam, frame_number))
        shift = frame_number % max(len(seeds), 1)
        fresh = iter(seeds[shift:] + seeds[:shift] if tracker.committed is not None else seeds)
        while len(extra) < slots:
            seed = next(fresh, None)
            if seed is None:
                break
            extra.append(seed)
        extra = extra[:max(slots, 0)]
        wide = cfg.relocalization_grid - len(starts) - len(extra)
        if tracker.committed is None and extra and wide > 0:
            # Spread the seeds (each kept as it is) over the grid; the books merge what converges
            # to one place and keep the cheapest places (max_live_hypotheses).
            cam_from_world = to_pose(np.linalg.inv(np.stack([s.map_from_cam for s in extra])))
            grid = np.linalg.inv(relocalization_grid(cam_from_world, count=wide).to_4x4_numpy())
            extra += [Seed(map_from_cam, SeedKind.GRID) for map_from_cam in grid]
        return starts + [Start(s.map_from_cam, None) for s in extra]


def follow_odometry(seeds: list[Seed], base_from_cam: np.ndarray,
                    motion: Callable[[int], np.ndarray | None]) -> list[Seed]:
    """Seeds that stand for an earlier (or later) stamp moved to the frame with the odometry.

    A keyframe near a GNSS fix is a guess of where the vehicle was when the fix was taken; a fix
    is up to ``gnss_max_age_s`` old, metres of driving at road speed, which is beyond PixLoc's
    basin (it converges from about a metre) and puts every GNSS seed behind the car. Each such
    seed, as a base pose, is moved by the vehicle's own motion since the stamp, in its own frame
    (``map_from_base(frame) = map_from_base(fix) @ base(fix)_from_base(frame)``), so the guess
    keeps its heading and moves along it. ``base_from_cam`` (4, 4): the frame's camera (the
    seeds are its poses); ``motion(stamp_ns)``: base(stamp)_from_base(frame) (4, 4), None when
    the odometry does not cover it (the seed is kept as it is)."""
    cam_from_base = np.linalg.inv(base_from_cam)
    out = []
    for seed in seeds:
        delta = None if seed.prior_stamp_ns is None else motion(seed.prior_stamp_ns)
        if delta is None:
            out.append(seed)
            continue
        out.append(replace(seed, map_from_cam=seed.map_from_cam @ cam_from_base @ delta @ base_from_cam,
                           prior_stamp_ns=None))
    return out


__all__ = ["Seed", "SeedConfig", "SeedKind", "SeedPlanner", "Start", "follow_odometry", "to_pose"]
