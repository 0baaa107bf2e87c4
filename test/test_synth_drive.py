"""Drives: plausible car motion on the lane, a camera on base_link, odometry and GNSS whose
errors match the noise they state."""

import numpy as np
import pytest

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.sim.drive import (Dynamics, GnssNoise, OdometryNoise, base_from_camera, route_path,
    simulate_gnss, simulate_odometry, simulate_trajectory)
from pixloc_ros.core.geometry.transforms import invert_transform
from pixloc_ros.data.sim.generate import generate_world

GEOREF = Georeference(40.4433, -79.9436, 250.0, 72.0)


@pytest.fixture(scope="module")
def world():
    return generate_world(1)


@pytest.fixture(scope="module")
def drive(world):
    path = route_path(world, "ABCDEFABE", wander_m=0.25, seed=2)
    return path, simulate_trajectory(path, Dynamics(top_speed_mps=9.5), seed=3)


def test_the_car_drives_like_a_car(world, drive):
    path, traj = drive
    dyn = Dynamics(top_speed_mps=9.5)
    assert path.length > 500  # the loop plus the cross street
    assert traj.speed.max() <= dyn.top_speed_mps * (1 + dyn.speed_variation) + 1e-6
    a_lat = traj.speed * traj.yaw_rate
    assert np.abs(a_lat).max() < dyn.max_lateral_accel * 1.15
    a_lon = np.gradient(traj.speed, traj.t)
    assert a_lon.max() < dyn.max_accel * 1.1 and a_lon.min() > -dyn.max_brake * 1.1
    # Mostly upright: pitch and roll stay within a degree or two, small most of the time.
    for angle in (traj.pitch, traj.roll):
        assert np.degrees(np.abs(angle)).max() < 2.0
        assert np.degrees(np.abs(angle)).mean() < 0.6
    assert np.abs(traj.z).max() < 0.02
    # It turns left at five corners: C, D, F, A and into the cross street at B.
    assert abs(np.degrees(traj.yaw[-1] - traj.yaw[0]) - 450.0) < 5.0  # wander tilts the ends a little
    # ...and it stays in its lane (right of the centre line, away from the parked cars).
    cfg = world.config
    for street in world.streets:
        d, left = street.direction, street.left
        rel = traj.xy - street.start
        s, lat = rel @ d, rel @ left
        on = (s > cfg.frontage + 8) & (s < street.length - cfg.frontage - 8) & (np.abs(lat) < cfg.half_road)
        if on.any():
            assert np.all(np.abs(np.abs(lat[on]) - cfg.lane_offset_m) < 0.35), street.name


def test_camera_is_mounted_forward_on_base_link():
    T = base_from_camera(height_m=1.5, forward_m=1.2, pitch_down_deg=2.0)
    R = T[:3, :3]
    assert np.allclose(R @ R.T, np.eye(3)) and np.isclose(np.linalg.det(R), 1.0)
    optical_axis = R[:, 2]  # camera z in base_link
    assert optical_axis[0] > 0.99 and np.isclose(np.degrees(np.arcsin(-optical_axis[2])), 2.0)
    assert np.allclose(R[:, 0], [0, -1, 0], atol=1e-9)  # image x points right (-y of base_link)
    assert np.allclose(T[:3, 3], [1.2, 0, 1.5])
    assert np.allclose(invert_transform(T) @ T, np.eye(4))


def _relative(T0, T):
    return invert_transform(T0)[None] @ T


def test_odometry_drifts_within_its_stated_covariance(drive):
    _, traj = drive
    times = np.arange(0.0, traj.duration, 0.05)
    truth = traj.world_from_base(times)
    d2_all, yaw_z = [], []
    for seed in range(6):
        odo = simulate_odometry(traj, times, OdometryNoise(), seed=seed)
        assert np.allclose(odo.odom_from_base[0], np.eye(4))
        gt = _relative(truth[0], truth)
        err = odo.odom_from_base[:, :2, 3] - gt[:, :2, 3]
        cov = odo.pose_covariance[:, :2, :2]
        # Planar odometry ignores the few-cm heave of the body: compare in the plane.
        d2 = np.einsum("ni,nij,nj->n", err, np.linalg.inv(cov), err)
        d2_all.append(d2)
        yaw_err = np.arctan2(odo.odom_from_base[:, 1, 0], odo.odom_from_base[:, 0, 0]) - np.arctan2(gt[:, 1, 0], gt[:, 0, 0])
        yaw_err = (yaw_err + np.pi) % (2 * np.pi) - np.pi
        yaw_z.append(yaw_err[1:] / np.sqrt(odo.pose_covariance[1:, 5, 5]))
        # It drifts: after the whole drive the error is tens of centimetres at least.
        assert np.linalg.norm(err[-1]) > 0.05
        # Twist: measured speed vs truth within its stated std.
        speed = np.interp(times, traj.t, traj.speed)
        z_v = (odo.linear_velocity[:, 0] - speed) / np.sqrt(odo.twist_covariance[:, 0, 0])
        assert np.abs(z_v).max() < 5.0
    d2_all, yaw_z = np.concatenate(d2_all), np.concatenate(yaw_z)
    # Chi-square with 2 dof: mean 2, 99.9 % below 13.8; the stated covariance is neither
    # optimistic nor wildly pessimistic (6 drives: the scale and bias draws dominate).
    assert np.mean(d2_all < 13.8) > 0.99 and 0.5 < np.mean(d2_all) < 4.0, np.percentile(d2_all, [50, 99, 100])
    assert np.abs(yaw_z).max() < 4.5 and 0.1 < np.mean(yaw_z ** 2) < 3.0


def test_gnss_errors_match_the_stated_sigma(drive):
    _, traj = drive
    noise = GnssNoise()
    times = np.arange(0.0, traj.duration, 1.0)
    truth = traj.world_from_base(times)[:, :3, 3]
    errors = []
    for seed in range(10):
        fixes = simulate_gnss(traj, times, GEOREF, noise, seed=seed)
        measured = GEOREF.to_map(fixes.latitude_deg, fixes.longitude_deg, fixes.altitude_m)
        err = measured - truth
        assert np.allclose(err, fixes.error_map, atol=1e-4)  # the geodetic round trip is exact
        assert np.allclose(fixes.covariance_enu, np.diag([noise.horizontal_sigma_m ** 2] * 2 + [noise.vertical_sigma_m ** 2]))
        errors.append(err @ GEOREF.map_from_enu)  # back to ENU, where the sigmas are stated
    e = np.concatenate(errors)
    sig = np.array([noise.horizontal_sigma_m, noise.horizontal_sigma_m, noise.vertical_sigma_m])
    rms = np.sqrt((e ** 2).mean(0))
    assert np.all(rms > 0.7 * sig) and np.all(rms < 1.3 * sig), (rms, sig)
    assert np.all(np.abs(e) < 5 * sig)
    # Metre-level noise, correlated in time (a bias that wanders), like real GNSS.
    assert 0.5 < noise.horizontal_sigma_m < 3.0
    lag1 = np.mean([np.corrcoef(x[:-1, 0], x[1:, 0])[0, 1] for x in errors])
    assert lag1 > 0.4
