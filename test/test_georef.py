"""GNSS <-> map conversion through the georeference: round trips, known offsets, headings, files."""
import json
import math

import numpy as np
import pymap3d
import pytest

from pixloc_ros.core.geometry.georef import Georeference

ORIGINS = [
    Georeference(47.3769, 8.5417, 408.0, 90.0),  # Zurich, map = ENU
    Georeference(40.4406, -79.9959, 230.0, 37.5),  # Pittsburgh (CMU Seasons), rotated map
    Georeference(-33.8688, 151.2093, 20.0, 271.0),  # southern and eastern hemisphere
    Georeference(78.2232, 15.6267, 10.0, 0.0),  # high latitude, x pointing north
    Georeference(0.0, 179.9999, -5.0, 180.0),  # next to the antimeridian, below the ellipsoid
]


@pytest.mark.parametrize("georef", ORIGINS, ids=lambda g: f"{g.latitude_deg},{g.longitude_deg}")
def test_round_trip_to_millimetres(georef):
    rng = np.random.default_rng(0)
    xyz = np.concatenate([rng.uniform(-5000, 5000, (200, 3)) * [1, 1, 0.02], np.zeros((1, 3))])
    lat, lon, alt = georef.to_geodetic(xyz)
    back = georef.to_map(lat, lon, alt)
    assert np.abs(back - xyz).max() < 1e-3
    # and from geodetic: map -> geodetic -> map starting at random fixes near the origin
    lat0 = georef.latitude_deg + rng.uniform(-0.02, 0.02, 100)
    lon0 = georef.longitude_deg + rng.uniform(-0.02, 0.02, 100)
    alt0 = georef.altitude_m + rng.uniform(-30, 30, 100)
    lat1, lon1, alt1 = georef.to_geodetic(georef.to_map(lat0, lon0, alt0))
    # 1e-8 degree is ~1 mm on the ground
    assert np.abs(lat1 - lat0).max() < 1e-8
    assert np.abs(((lon1 - lon0) + 180) % 360 - 180).max() * math.cos(math.radians(georef.latitude_deg)) < 1e-8
    assert np.abs(alt1 - alt0).max() < 1e-3


def test_origin_maps_to_zero():
    for g in ORIGINS:
        np.testing.assert_allclose(g.to_map(g.latitude_deg, g.longitude_deg, g.altitude_m), 0.0, atol=1e-6)


def test_known_offset_north_along_y_for_heading_90():
    g = Georeference(47.0, 8.0, 500.0, 90.0)
    xyz = g.to_map(47.001, 8.0, 500.0)
    # one thousandth of a degree of latitude at 47 deg N: M * pi / 180e3, M the meridian radius
    a, e2 = 6378137.0, 6.69437999014e-3
    s = math.sin(math.radians(47.0005))
    meridian = a * (1 - e2) / (1 - e2 * s * s) ** 1.5
    assert xyz[1] == pytest.approx(meridian * math.radians(0.001), abs=0.01)  # ~111.2 m
    assert 111.0 < xyz[1] < 111.4
    assert abs(xyz[0]) < 1e-6 and abs(xyz[2]) < 0.01  # earth curvature: ~1 mm drop over 111 m


def test_known_offset_east_and_up():
    g = Georeference(0.0, 0.0, 0.0, 90.0)
    x, y, z = g.to_map(0.0, 0.001, 10.0)
    assert x == pytest.approx(6378137.0 * math.radians(0.001), abs=0.01)  # equator: a * dlon
    assert abs(y) < 1e-6 and z == pytest.approx(10.0, abs=0.01)


@pytest.mark.parametrize("heading", [0.0, 45.0, 90.0, 135.0, 200.0, 359.0])
def test_heading_rotates_about_up(heading):
    enu = Georeference(47.0, 8.0, 500.0, 90.0)
    rotated = Georeference(47.0, 8.0, 500.0, heading)
    fix = (47.0005, 8.0007, 512.0)
    p_enu = enu.to_map(*fix)
    p_map = rotated.to_map(*fix)
    # same height, same horizontal distance
    assert p_map[2] == pytest.approx(p_enu[2], abs=1e-9)
    assert np.hypot(*p_map[:2]) == pytest.approx(np.hypot(*p_enu[:2]), abs=1e-9)
    # the map's +x axis points along compass heading ``heading``: a point straight along it
    h = math.radians(heading)
    target_enu = np.array([math.sin(h), math.cos(h), 0.0]) * 100.0  # compass: east = sin, north = cos
    lat, lon, alt = pymap3d.enu2geodetic(*target_enu, 47.0, 8.0, 500.0)
    np.testing.assert_allclose(rotated.to_map(lat, lon, alt), [100.0, 0.0, 0.0], atol=1e-6)
    # heading 0 puts north on +x and east on -y (right-handed, z up)
    if heading == 0.0:
        lat, lon, alt = pymap3d.enu2geodetic(50.0, 0.0, 0.0, 47.0, 8.0, 500.0)
        np.testing.assert_allclose(rotated.to_map(lat, lon, alt), [0.0, -50.0, 0.0], atol=1e-6)


def test_map_from_enu_is_a_rotation():
    for g in ORIGINS:
        R = g.map_from_enu
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(R[2], [0, 0, 1], atol=1e-12)


def test_covariance_to_map():
    g = Georeference(47.0, 8.0, 500.0, 0.0)  # map x = north, y = west
    cov_enu = np.diag([4.0, 1.0, 9.0])  # east sigma 2, north sigma 1
    cov_map = g.covariance_to_map(cov_enu)
    np.testing.assert_allclose(np.diag(cov_map), [1.0, 4.0, 9.0], atol=1e-12)
    np.testing.assert_allclose(cov_map, cov_map.T)
    # a flat 9-vector (NavSatFix.position_covariance) is accepted
    np.testing.assert_allclose(g.covariance_to_map(cov_enu.reshape(-1)), cov_map)


def test_array_shapes_broadcast():
    g = ORIGINS[1]
    lat = np.full((4, 5), g.latitude_deg)
    xyz = g.to_map(lat, g.longitude_deg, g.altitude_m)
    assert xyz.shape == (4, 5, 3)
    lat2, lon2, alt2 = g.to_geodetic(xyz)
    assert lat2.shape == lon2.shape == alt2.shape == (4, 5)
    assert g.to_map(g.latitude_deg, g.longitude_deg, g.altitude_m).shape == (3,)


def test_save_load_round_trip(tmp_path):
    for i, g in enumerate(ORIGINS):
        path = tmp_path / f"g{i}.json"
        g.save(path)
        assert Georeference.load(path) == g


def test_load_defaults_heading_to_enu(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"latitude_deg": 1.0, "longitude_deg": 2.0, "altitude_m": 3.0}))
    assert Georeference.load(path).heading_deg == 90.0


@pytest.mark.parametrize("content, message", [
    ({"latitude_deg": 1.0, "longitude_deg": 2.0}, "needs latitude_deg"),
    ({"latitude_deg": 1.0, "longitude_deg": 2.0, "altitude_m": 3.0, "yaw": 4.0}, "unknown georeference fields"),
    ([1.0, 2.0, 3.0], "needs latitude_deg"),
    ({"latitude_deg": 91.0, "longitude_deg": 2.0, "altitude_m": 3.0}, "out of range"),
    ({"latitude_deg": 1.0, "longitude_deg": 2.0, "altitude_m": float("nan")}, "non-finite"),
])
def test_load_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        Georeference.load(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Georeference.load(tmp_path / "none.json")
