"""Drives through the synthetic world: a car following a lane with plausible dynamics, the
camera on it, wheel odometry that drifts and GNSS with metre-level noise.

Frames: ``world`` = ``map`` (z up). ``base_link``: x forward, y left, z up (REP-103), origin
on the ground under the vehicle (it rides up and down by the suspension's heave). The camera
optical frame: z forward, x right, y down, fixed on base_link by ``base_from_cam``.

Dynamics: the lane centre line is filleted at corners; the speed profile respects a top speed,
a lateral-acceleration limit in curves and acceleration/braking limits; the body rolls with
lateral acceleration, pitches with longitudinal acceleration, and picks up small road bumps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.core.geometry.transforms import make_transform, rot_x, rot_y, rot_z
from pixloc_ros.data.sim.world import World


def base_from_camera(height_m: float = 1.5, forward_m: float = 1.2, pitch_down_deg: float = 2.0) -> np.ndarray:
    """(4, 4) ``base_from_cam``: camera optical frame on base_link, looking forward and pitched
    down by ``pitch_down_deg``, ``height_m`` above the ground."""
    # Optical axes in base_link: x_cam = -y_base (right), y_cam = -z_base (down), z_cam = x_base.
    R0 = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    R = rot_y(math.radians(pitch_down_deg)) @ R0  # positive rotation about y_base tilts x down
    return make_transform(R, [forward_m, 0.0, height_m])


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------

@dataclass
class Path2D:
    """A planar path sampled every ``ds`` metres."""

    s: np.ndarray  # (N,) arc length, metres
    xy: np.ndarray  # (N, 2) metres, map frame
    heading: np.ndarray  # (N,) radians, unwrapped
    curvature: np.ndarray  # (N,) 1/metres, positive turning left

    @property
    def length(self) -> float:
        return float(self.s[-1])


def _sample_polyline_with_fillets(corners: np.ndarray, radii: np.ndarray, ds: float) -> np.ndarray:
    """Points every ~``ds`` along the polyline ``corners`` (K, 2) whose interior corners are
    replaced by circular arcs of ``radii`` (K,) (ends ignored)."""
    pieces = []
    prev_end = corners[0]
    for k in range(1, len(corners) - 1):
        a, q, b = corners[k - 1], corners[k], corners[k + 1]
        d1 = (q - a) / np.linalg.norm(q - a)
        d2 = (b - q) / np.linalg.norm(b - q)
        cross = d1[0] * d2[1] - d1[1] * d2[0]
        angle = math.atan2(cross, float(d1 @ d2))
        if abs(angle) < 1e-6:
            continue  # straight through a junction
        tan_len = radii[k] * math.tan(abs(angle) / 2)
        p_in, p_out = q - d1 * tan_len, q + d2 * tan_len
        pieces.append(_segment(prev_end, p_in, ds))
        left = np.array([-d1[1], d1[0]]) * np.sign(cross)
        centre = p_in + left * radii[k]
        a0 = math.atan2(p_in[1] - centre[1], p_in[0] - centre[0])
        n = max(2, int(math.ceil(abs(angle) * radii[k] / ds)))
        angles = a0 + np.linspace(0.0, angle, n + 1)[1:]
        pieces.append(centre + radii[k] * np.stack([np.cos(angles), np.sin(angles)], 1))
        prev_end = p_out
    pieces.append(_segment(prev_end, corners[-1], ds))
    return np.concatenate(pieces, 0)


def _segment(a, b, ds):
    n = max(1, int(math.ceil(np.linalg.norm(b - a) / ds)))
    t = np.linspace(0.0, 1.0, n + 1)[:-1] if n > 1 else np.zeros(1)
    return a + (b - a) * t[:, None]


def _resample(points: np.ndarray, ds: float) -> Path2D:
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    points = points[keep]
    s_raw = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    s = np.arange(0.0, s_raw[-1], ds)
    xy = np.stack([np.interp(s, s_raw, points[:, 0]), np.interp(s, s_raw, points[:, 1])], 1)
    d = np.gradient(xy, ds, axis=0)
    heading = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    curvature = np.gradient(heading, ds)
    return Path2D(s, xy, heading, _smooth(curvature, int(round(1.0 / ds))))


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    if width <= 1:
        return x
    kernel = np.ones(width) / width
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def route_path(world: World, route: Sequence[str], lateral_offset_m: float | None = None,
               right_turn_radius_m: float = 7.0, left_turn_radius_m: float = 11.0,
               wander_m: float = 0.0, seed: int = 0, ds: float = 0.05) -> Path2D:
    """The lane path along the street-graph nodes ``route`` (e.g. "ABCD" or ["A", "B"]),
    driving on the right at ``lateral_offset_m`` from the centre line (default: lane centre),
    with filleted corners and a slow lateral wander of amplitude ``wander_m``."""
    names = list(route)
    if len(names) < 2:
        raise ValueError(f"A route needs at least two nodes, got {route!r}")
    for a, b in zip(names, names[1:]):
        if not any({a, b} == {st.name[0], st.name[1]} for st in world.streets):
            raise ValueError(f"No street between nodes {a!r} and {b!r}")
    offset = world.config.lane_offset_m if lateral_offset_m is None else lateral_offset_m
    nodes = np.array([world.nodes[n] for n in names], np.float64)
    dirs = np.diff(nodes, axis=0)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rights = np.stack([dirs[:, 1], -dirs[:, 0]], 1)
    corners = [nodes[0] + rights[0] * offset]
    radii = [0.0]
    for k in range(1, len(nodes) - 1):
        # Intersection of the two offset lines through node k.
        p1, d1 = nodes[k] + rights[k - 1] * offset, dirs[k - 1]
        p2, d2 = nodes[k] + rights[k] * offset, dirs[k]
        cross = d1[0] * d2[1] - d1[1] * d2[0]
        if abs(cross) < 1e-9:
            corners.append(p1)
            radii.append(0.0)
            continue
        lam = ((p2 - p1)[0] * d2[1] - (p2 - p1)[1] * d2[0]) / cross
        corners.append(p1 + d1 * lam)
        radii.append(left_turn_radius_m if cross > 0 else right_turn_radius_m)
    corners.append(nodes[-1] + rights[-1] * offset)
    radii.append(0.0)
    points = _resample(_sample_polyline_with_fillets(np.array(corners), np.array(radii), ds), ds).xy
    # Steering is not instantaneous: a 3 m moving average eases the curvature in and out of
    # the arcs (roughly a clothoid), so yaw rate and body roll have no steps.
    window = max(1, int(round(3.0 / ds)))
    points = np.stack([_smooth(points[:, 0], window), _smooth(points[:, 1], window)], 1)
    path = _resample(points, ds)
    if wander_m > 0:
        rng = np.random.default_rng(seed)
        lam1, lam2 = rng.uniform(35, 60), rng.uniform(80, 140)
        ph1, ph2 = rng.uniform(0, 2 * np.pi, 2)
        lateral = wander_m * (0.6 * np.sin(2 * np.pi * path.s / lam1 + ph1) + 0.4 * np.sin(2 * np.pi * path.s / lam2 + ph2))
        normal = np.stack([-np.sin(path.heading), np.cos(path.heading)], 1)
        path = _resample(path.xy + normal * lateral[:, None], ds)
    return path


def crop_path(path: Path2D, s0: float, s1: float) -> Path2D:
    """The part of ``path`` between arc lengths ``s0`` and ``s1`` (s restarts at 0)."""
    keep = (path.s >= s0) & (path.s <= s1)
    if keep.sum() < 2:
        raise ValueError(f"crop [{s0}, {s1}] leaves nothing of a {path.length:.1f} m path")
    return Path2D(path.s[keep] - path.s[keep][0], path.xy[keep], path.heading[keep], path.curvature[keep])


# ---------------------------------------------------------------------------------------------
# Vehicle dynamics
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dynamics:
    """Speed limits and body motion of the car."""

    top_speed_mps: float = 9.0  # cruising speed on straights (~32 km/h, a city street)
    start_speed_mps: float = 6.0
    max_lateral_accel: float = 2.0  # m/s^2 in curves
    max_accel: float = 1.2  # m/s^2
    max_brake: float = 2.0  # m/s^2
    speed_variation: float = 0.1  # slow relative variation of the cruising speed
    roll_per_lateral_accel_deg: float = 0.45  # body roll, degrees per m/s^2
    pitch_per_accel_deg: float = 0.35  # nose dive when braking, degrees per m/s^2
    bump_pitch_deg: float = 0.15  # road roughness amplitude
    bump_roll_deg: float = 0.1
    heave_m: float = 0.01


@dataclass
class Trajectory:
    """A simulated drive, densely sampled in time: everything needed for ground truth and sensors."""

    t: np.ndarray  # (N,) seconds from the start
    s: np.ndarray  # (N,) arc length, metres
    xy: np.ndarray  # (N, 2)
    yaw: np.ndarray  # (N,) radians, unwrapped
    pitch: np.ndarray  # (N,) radians (positive: nose down, REP-103 rotation about +y)
    roll: np.ndarray  # (N,) radians (positive: right side down)
    z: np.ndarray  # (N,) heave of base_link, metres
    speed: np.ndarray  # (N,) m/s
    yaw_rate: np.ndarray  # (N,) rad/s

    @property
    def duration(self) -> float:
        return float(self.t[-1])

    def _interp(self, times, values):
        return np.interp(np.asarray(times, np.float64), self.t, values)

    def world_from_base(self, times) -> np.ndarray:
        """(N, 4, 4) ground-truth poses of base_link in the map at ``times`` (seconds)."""
        yaw, pitch, roll = (self._interp(times, v) for v in (self.yaw, self.pitch, self.roll))
        xyz = np.stack([self._interp(times, self.xy[:, 0]), self._interp(times, self.xy[:, 1]),
                        self._interp(times, self.z)], -1)
        return make_transform(rot_z(yaw) @ rot_y(pitch) @ rot_x(roll), xyz)

    def times_at_distances(self, distances) -> np.ndarray:
        """Times (seconds) at which the car has travelled ``distances`` (metres)."""
        return np.interp(np.asarray(distances, np.float64), self.s, self.t)


def simulate_trajectory(path: Path2D, dynamics: Dynamics = Dynamics(), seed: int = 0, dt: float = 0.01) -> Trajectory:
    """Drive along ``path`` with the speed profile and body motion of ``dynamics``."""
    rng = np.random.default_rng(seed)
    ds = float(path.s[1] - path.s[0])
    kappa = np.abs(path.curvature)
    lam = rng.uniform(60, 120)
    cruise = dynamics.top_speed_mps * (1.0 + dynamics.speed_variation * np.sin(2 * np.pi * path.s / lam + rng.uniform(0, 6.3)))
    v_lim = np.minimum(cruise, np.sqrt(dynamics.max_lateral_accel / np.maximum(kappa, 1e-6)))
    v = v_lim.copy()
    v[0] = min(v[0], dynamics.start_speed_mps)
    for i in range(1, len(v)):  # acceleration limit
        v[i] = min(v[i], math.sqrt(v[i - 1] ** 2 + 2 * dynamics.max_accel * ds))
    for i in range(len(v) - 2, -1, -1):  # braking limit
        v[i] = min(v[i], math.sqrt(v[i + 1] ** 2 + 2 * dynamics.max_brake * ds))
    v = np.maximum(v, 0.5)
    t_of_s = np.concatenate([[0.0], np.cumsum(ds / (0.5 * (v[1:] + v[:-1])))])
    t = np.arange(0.0, t_of_s[-1], dt)
    s = np.interp(t, t_of_s, path.s)
    speed = np.interp(t, t_of_s, v)
    xy = np.stack([np.interp(s, path.s, path.xy[:, 0]), np.interp(s, path.s, path.xy[:, 1])], 1)
    yaw = np.interp(s, path.s, path.heading)
    yaw_rate = np.gradient(yaw, dt)
    a_lon = _smooth(np.gradient(speed, dt), int(0.3 / dt))
    a_lat = speed * yaw_rate
    # Suspension: the body lags the forces a little (first-order response, ~0.25 s).
    a_lon, a_lat = _lowpass(a_lon, dt, 0.25), _lowpass(a_lat, dt, 0.25)
    phases = rng.uniform(0, 2 * np.pi, 6)
    bumps = lambda amp, k: amp * (0.5 * np.sin(2 * np.pi * s / 4.3 + phases[k]) + 0.3 * np.sin(2 * np.pi * s / 9.7 + phases[k + 1])
                                  + 0.2 * np.sin(2 * np.pi * s / 17.0 + phases[k + 2]))
    pitch = np.radians(-dynamics.pitch_per_accel_deg * a_lon + bumps(dynamics.bump_pitch_deg, 0))
    roll = np.radians(dynamics.roll_per_lateral_accel_deg * a_lat + bumps(dynamics.bump_roll_deg, 3))
    z = bumps(dynamics.heave_m, 1)
    return Trajectory(t, s, xy, yaw, pitch, roll, z, speed, yaw_rate)


def _lowpass(x: np.ndarray, dt: float, tau: float) -> np.ndarray:
    alpha = dt / (tau + dt)
    out = np.empty_like(x)
    acc = x[0]
    for i, value in enumerate(x):
        acc += alpha * (value - acc)
        out[i] = acc
    return out


# ---------------------------------------------------------------------------------------------
# Sensors
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OdometryNoise:
    """Wheel odometry errors. The scale error and the gyro bias are drawn once per drive (they
    make odometry drift); the white noise is drawn per sample."""

    speed_scale_sigma: float = 0.01  # relative wheel-speed scale error (1 %)
    speed_noise_mps: float = 0.05  # white noise on the measured speed
    yaw_rate_bias_sigma_dps: float = 0.03  # gyro bias, degrees per second (~100 deg/h)
    yaw_rate_noise_dps: float = 0.2  # white noise on the yaw rate


@dataclass(frozen=True)
class GnssNoise:
    """GNSS position errors: a slowly varying bias (first-order Gauss-Markov) plus white noise."""

    horizontal_bias_m: float = 0.8  # std of the bias per horizontal axis
    horizontal_white_m: float = 0.5  # std of the white part per horizontal axis
    vertical_bias_m: float = 1.2
    vertical_white_m: float = 0.8
    correlation_time_s: float = 30.0

    @property
    def horizontal_sigma_m(self) -> float:
        """Total std per horizontal axis (what NavSatFix's covariance states)."""
        return math.hypot(self.horizontal_bias_m, self.horizontal_white_m)

    @property
    def vertical_sigma_m(self) -> float:
        return math.hypot(self.vertical_bias_m, self.vertical_white_m)


UNKNOWN_VARIANCE = 1e3  # variance of components a planar wheel odometry does not observe


@dataclass
class OdometryTrack:
    """Planar wheel odometry: ``odom_from_base`` starts at identity and drifts."""

    times: np.ndarray  # (K,) seconds
    odom_from_base: np.ndarray  # (K, 4, 4)
    linear_velocity: np.ndarray  # (K, 3) m/s in base_link
    angular_velocity: np.ndarray  # (K, 3) rad/s in base_link
    pose_covariance: np.ndarray  # (K, 6, 6) ROS order (x y z rx ry rz), odom frame
    twist_covariance: np.ndarray  # (K, 6, 6)


def simulate_odometry(traj: Trajectory, times: np.ndarray, noise: OdometryNoise = OdometryNoise(),
                      seed: int = 0) -> OdometryTrack:
    """Dead reckoning from noisy wheel and gyro increments between consecutive ``times``
    (seconds, increasing), as real odometry integrates encoder ticks and gyro samples."""
    rng = np.random.default_rng(seed)
    times = np.asarray(times, np.float64)
    K = len(times)
    if K < 1:
        raise ValueError("simulate_odometry needs at least one time")
    speed = np.interp(times, traj.t, traj.speed)
    s_true = np.interp(times, traj.t, traj.s)
    yaw_true = np.interp(times, traj.t, traj.yaw)
    scale = rng.normal(0.0, noise.speed_scale_sigma)
    bias = math.radians(rng.normal(0.0, noise.yaw_rate_bias_sigma_dps))
    dt = np.diff(times)
    # Increments over each interval: distance with a scale error and noise, heading with bias and noise.
    ds = np.diff(s_true) * (1.0 + scale) + rng.normal(0.0, noise.speed_noise_mps, K - 1) * dt
    dyaw = np.diff(yaw_true) + (bias + rng.normal(0.0, math.radians(noise.yaw_rate_noise_dps), K - 1)) * dt
    yaw = np.concatenate([[0.0], np.cumsum(dyaw)])
    mid = yaw[:-1] + 0.5 * dyaw
    x = np.concatenate([[0.0], np.cumsum(ds * np.cos(mid))])
    y = np.concatenate([[0.0], np.cumsum(ds * np.sin(mid))])
    # Reported twist: the interval averages (the first sample repeats the second).
    with np.errstate(divide="ignore", invalid="ignore"):
        v_m = np.concatenate([[speed[0] * (1 + scale)], ds / dt]) if K > 1 else speed * (1 + scale)
        w_m = np.concatenate([[bias], dyaw / dt]) if K > 1 else np.array([bias])
    if K > 1:
        v_m[0], w_m[0] = v_m[1], w_m[1]
    poses = make_transform(rot_z(yaw), np.stack([x, y, np.zeros(K)], 1))
    pose_cov = np.zeros((K, 6, 6))
    pose_cov[:, :2, :2], pose_cov[:, 5, 5] = _odometry_covariance(times, x, y, yaw, v_m, noise)
    pose_cov[:, 2, 2] = pose_cov[:, 3, 3] = pose_cov[:, 4, 4] = UNKNOWN_VARIANCE
    twist_cov = np.zeros((K, 6, 6))
    twist_cov[:, 0, 0] = noise.speed_noise_mps ** 2 + (noise.speed_scale_sigma * np.abs(v_m)) ** 2
    twist_cov[:, 1, 1] = twist_cov[:, 2, 2] = 1e-4  # a car does not slide sideways or jump
    twist_cov[:, 3, 3] = twist_cov[:, 4, 4] = UNKNOWN_VARIANCE
    twist_cov[:, 5, 5] = math.radians(noise.yaw_rate_noise_dps) ** 2 + math.radians(noise.yaw_rate_bias_sigma_dps) ** 2
    lin = np.stack([v_m, np.zeros(K), np.zeros(K)], 1)
    ang = np.stack([np.zeros(K), np.zeros(K), w_m], 1)
    return OdometryTrack(times, poses, lin, ang, pose_cov, twist_cov)


def _odometry_covariance(times, x, y, yaw, v, noise: OdometryNoise):
    """Covariance of planar dead reckoning under the error model of ``OdometryNoise``, linearised
    along the integrated path: (K, 2, 2) position covariance and (K,) yaw variance.

    Terms: scale error s (position error s * chord), gyro bias b (heading error b * t bending
    the path), white speed noise (along the heading at each step) and white yaw-rate noise
    (each heading kick rotates the rest of the path about the point where it happened).
    """
    dt = np.diff(times, prepend=times[0])
    p = np.stack([x, y], 1)
    heading = np.stack([np.cos(yaw), np.sin(yaw)], 1)
    perp = np.stack([-np.sin(yaw), np.cos(yaw)], 1)
    elapsed = times - times[0]
    sig_b = math.radians(noise.yaw_rate_bias_sigma_dps)
    sig_w = math.radians(noise.yaw_rate_noise_dps)
    chord = p - p[0]
    d_bias = np.cumsum((elapsed * v * dt)[:, None] * perp, 0)  # d p / d b
    cov = noise.speed_scale_sigma ** 2 * np.einsum("ni,nj->nij", chord, chord)
    cov += sig_b ** 2 * np.einsum("ni,nj->nij", d_bias, d_bias)
    cov += noise.speed_noise_mps ** 2 * np.cumsum((dt ** 2)[:, None, None] * np.einsum("ni,nj->nij", heading, heading), 0)
    # Yaw-rate kick at step k (variance sig_w^2 dt_k^2) moves p(t) by kick * J (p(t) - p_k), J = rot(90 deg):
    # sum_k dt_k^2 (p - p_k)(p - p_k)^T = S0 p p^T - p S1^T - S1 p^T + S2 with running sums.
    w = dt ** 2
    S0 = np.cumsum(w)
    S1 = np.cumsum(w[:, None] * p, 0)
    S2 = np.cumsum(w[:, None, None] * np.einsum("ni,nj->nij", p, p), 0)
    M = S0[:, None, None] * np.einsum("ni,nj->nij", p, p) - np.einsum("ni,nj->nij", p, S1) \
        - np.einsum("ni,nj->nij", S1, p) + S2
    J = np.array([[0.0, -1.0], [1.0, 0.0]])
    cov += sig_w ** 2 * J @ M @ J.T
    var_yaw = (sig_b * elapsed) ** 2 + sig_w ** 2 * np.cumsum(dt ** 2) + 1e-8
    # Second order of the heading error (the path bends by 1 - cos(theta) ~ theta^2 / 2 of its
    # chord, in no fixed direction), and a floor for slip and numerical integration.
    second = 3.0 * (0.5 * var_yaw * np.linalg.norm(chord, axis=1)) ** 2
    cov += np.eye(2) * (second + 0.01 ** 2)[:, None, None]
    return cov, var_yaw


@dataclass
class GnssTrack:
    times: np.ndarray  # (G,) seconds
    latitude_deg: np.ndarray  # (G,)
    longitude_deg: np.ndarray  # (G,)
    altitude_m: np.ndarray  # (G,) ellipsoidal
    covariance_enu: np.ndarray  # (3, 3) stated position covariance, ENU, m^2
    error_map: np.ndarray  # (G, 3) the error actually added, map frame (for tests)


def simulate_gnss(traj: Trajectory, times: np.ndarray, georef: Georeference, noise: GnssNoise = GnssNoise(),
                  seed: int = 0) -> GnssTrack:
    """GNSS fixes of the base_link origin (antenna assumed there) at ``times`` (seconds)."""
    rng = np.random.default_rng(seed)
    times = np.asarray(times, np.float64)
    truth = traj.world_from_base(times)[:, :3, 3]
    G = len(times)
    bias = np.zeros((G, 3))
    sig_b = np.array([noise.horizontal_bias_m, noise.horizontal_bias_m, noise.vertical_bias_m])
    sig_w = np.array([noise.horizontal_white_m, noise.horizontal_white_m, noise.vertical_white_m])
    bias[0] = rng.normal(0.0, sig_b)
    for k in range(1, G):
        phi = math.exp(-(times[k] - times[k - 1]) / noise.correlation_time_s)
        bias[k] = phi * bias[k - 1] + math.sqrt(1 - phi * phi) * rng.normal(0.0, sig_b)
    err_enu = bias + rng.normal(0.0, sig_w, (G, 3))
    err_map = err_enu @ georef.map_from_enu.T
    lat, lon, alt = georef.to_geodetic(truth + err_map)
    cov = np.diag([noise.horizontal_sigma_m ** 2, noise.horizontal_sigma_m ** 2, noise.vertical_sigma_m ** 2])
    return GnssTrack(times, lat, lon, alt, cov, err_map)
