"""Planning a synthetic dataset before anything is rendered: the mapping keyframes along the mapping
route and the query drives (trajectory, odometry, GNSS and camera stamps) per condition.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data import bags
from pixloc_ros.data.sim.conditions import MAPPING_CONDITION, get_condition
from pixloc_ros.data.sim.drive import (Dynamics, GnssNoise, OdometryNoise, crop_path, route_path,
    simulate_gnss, simulate_odometry, simulate_trajectory)
from pixloc_ros.core.geometry.transforms import invert_transform, quat_xyzw_from_matrix
from pixloc_ros.data.sim.world import World
from .presets import SynthPreset


@dataclass
class Keyframe:
    name: str
    stamp_ns: int
    cam_from_world: np.ndarray  # (4, 4)


@dataclass
class QueryDrive:
    """A planned query drive: ground truth and sensors, ready to render and record."""

    condition: str
    camera_stamps_ns: np.ndarray  # (F,)
    world_from_base: np.ndarray  # (F, 4, 4) ground truth at the camera stamps
    odometry: list[bags.OdometrySample]
    gnss: list[bags.GnssFix]
    lateral_offset_m: float
    top_speed_mps: float


def plan_mapping(world: World, preset: SynthPreset, base_from_cam: np.ndarray, seed: int) -> list[Keyframe]:
    """Keyframes every ``keyframe_spacing_m`` along the mapping route, in the right lane.

    Where the route passes a place twice in the same direction, the second visit adds no
    keyframe (a second pass would only duplicate views)."""
    path = route_path(world, preset.mapping_route, wander_m=0.1, seed=seed + 1)
    if preset.mapping_length_m is not None:
        path = crop_path(path, 0.0, min(preset.mapping_length_m, path.length))
    traj = simulate_trajectory(path, Dynamics(top_speed_mps=8.0), seed=seed + 2)
    distances = np.arange(2.0, path.length - 1.0, preset.keyframe_spacing_m)
    times = traj.times_at_distances(distances)
    world_from_base = traj.world_from_base(times)
    t0 = get_condition(MAPPING_CONDITION).date_epoch_s * 1_000_000_000
    keyframes: list[Keyframe] = []
    kept_xy, kept_yaw = [], []
    for k, (t, T) in enumerate(zip(times, world_from_base)):
        xy, yaw = T[:2, 3], math.atan2(T[1, 0], T[0, 0])
        duplicate = any(np.linalg.norm(xy - p) < 0.5 * preset.keyframe_spacing_m
                        and abs(math.remainder(yaw - y, 2 * math.pi)) < math.radians(30)
                        for p, y in zip(kept_xy, kept_yaw))
        if duplicate:
            continue
        kept_xy.append(xy)
        kept_yaw.append(yaw)
        cam_from_world = invert_transform(T @ base_from_cam)
        keyframes.append(Keyframe(f"{len(keyframes):05d}.png", t0 + int(round(t * 1e9)), cam_from_world))
    return keyframes


def plan_query(world: World, preset: SynthPreset, condition: str, index: int, georef: Georeference,
               seed: int, odom_noise: OdometryNoise = OdometryNoise(), gnss_noise: GnssNoise = GnssNoise()) -> QueryDrive:
    """A query drive in ``condition``: the ``index``-th window of the mapping route, driven with
    another lateral offset, speed and wander, plus its odometry and GNSS."""
    cond = get_condition(condition)
    rng = np.random.default_rng([seed, index, 17])
    offset = world.config.lane_offset_m + float(rng.uniform(-0.4, 0.4))
    full = route_path(world, preset.mapping_route, lateral_offset_m=offset, wander_m=0.25, seed=int(rng.integers(1 << 30)))
    if preset.mapping_length_m is not None:
        full = crop_path(full, 0.0, min(preset.mapping_length_m, full.length))
    lead = 8.0  # metres driven before the first image (odometry and GNSS already running)
    length = min(preset.query_length_m + lead, full.length)
    n = max(1, len(preset.query_conditions))
    slack = max(full.length - length, 0.0)
    s0 = slack * (index + 0.5) / n + float(rng.uniform(-0.15, 0.15)) * slack / n
    s0 = float(np.clip(s0, 0.0, slack))
    path = crop_path(full, s0, s0 + length)
    top = float(rng.uniform(7.5, 10.5))
    traj = simulate_trajectory(path, Dynamics(top_speed_mps=top, start_speed_mps=top * 0.8), seed=int(rng.integers(1 << 30)))
    t_first = float(traj.times_at_distances(lead))
    cam_times = np.arange(t_first, traj.duration - 0.2, 1.0 / preset.camera_rate_hz)[: preset.max_query_frames]
    odo_times = np.arange(0.0, traj.duration, 1.0 / preset.odom_rate_hz)
    gnss_times = np.arange(0.0, traj.duration, 1.0 / preset.gnss_rate_hz)
    odo = simulate_odometry(traj, odo_times, odom_noise, seed=int(rng.integers(1 << 30)))
    fixes = simulate_gnss(traj, gnss_times, georef, gnss_noise, seed=int(rng.integers(1 << 30)))
    t0 = cond.date_epoch_s * 1_000_000_000
    ns = lambda t: t0 + int(round(float(t) * 1e9))
    odometry = [bags.OdometrySample(ns(t), tuple(T[:3, 3]), tuple(quat_xyzw_from_matrix(T[:3, :3])), cp,
                                    tuple(lin), tuple(ang), ct)
                for t, T, cp, lin, ang, ct in zip(odo.times, odo.odom_from_base, odo.pose_covariance,
                                                  odo.linear_velocity, odo.angular_velocity, odo.twist_covariance)]
    gnss = [bags.GnssFix(ns(t), float(la), float(lo), float(al), fixes.covariance_enu)
            for t, la, lo, al in zip(fixes.times, fixes.latitude_deg, fixes.longitude_deg, fixes.altitude_m)]
    return QueryDrive(condition, np.array([ns(t) for t in cam_times], np.int64), traj.world_from_base(cam_times),
                      odometry, gnss, offset, top)
