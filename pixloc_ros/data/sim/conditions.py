"""Appearance conditions of the synthetic world: the mapping season and the query seasons.

A ``Condition`` says how the same street looks on another day: sun, sky, haze, snow on the
ground, foliage, lit windows, and how many parked cars changed. Geometry of buildings, roads
and poles never changes; cars and tree crowns do (see ``world.World.scene``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Condition:
    """One appearance condition; colours are linear-ish RGB in [0, 1]."""

    name: str
    sun_azimuth_deg: float  # compass-free: angle of the sun direction in the map xy plane, from +x
    sun_elevation_deg: float
    sun_color: RGB
    sun_intensity: float  # 0: no direct light (overcast)
    ambient_color: RGB
    ambient_intensity: float
    sky_zenith: RGB
    sky_horizon: RGB
    cloud_cover: float  # 0 clear .. 1 fully covered
    cloud_color: RGB
    fog_distance_m: float  # haze: e-folding distance; inf = none
    exposure: float  # multiplies the final radiance
    saturation: float  # 1 = unchanged
    tint: RGB  # white balance / colour cast multiplied in at the end
    snow: float  # 0..1 snow cover on upward-facing surfaces
    foliage: str  # "summer", "autumn" or "bare"
    foliage_colors: tuple[RGB, ...]  # palette the tree crowns draw from
    grass_color: RGB
    wet: float  # 0..1 darkening of asphalt (rain)
    leaves_on_ground: float  # 0..1 fallen leaves on sidewalks and gutters
    windows_lit: float  # fraction of windows lit from inside (dusk)
    lamps_on: bool
    car_change: float  # fraction of mapping-day parked cars moved, removed or replaced
    noise_sigma: float  # sensor noise std, in [0, 1] intensity units
    date_epoch_s: int  # a plausible day for the bag timestamps (UTC seconds)

    @property
    def sun_direction(self) -> np.ndarray:
        """(3,) unit vector pointing from the scene to the sun, map frame (z up)."""
        az, el = math.radians(self.sun_azimuth_deg), math.radians(self.sun_elevation_deg)
        return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])


_GREENS = ((0.20, 0.36, 0.12), (0.27, 0.42, 0.14), (0.16, 0.30, 0.13), (0.31, 0.45, 0.18))
_AUTUMN = ((0.72, 0.36, 0.08), (0.80, 0.58, 0.12), (0.62, 0.18, 0.07), (0.55, 0.45, 0.12), (0.30, 0.38, 0.12))

CONDITIONS: dict[str, Condition] = {
    # The mapping day: a clear summer afternoon.
    "summer": Condition(
        name="summer", sun_azimuth_deg=215.0, sun_elevation_deg=48.0, sun_color=(1.0, 0.96, 0.88),
        sun_intensity=0.75, ambient_color=(0.80, 0.86, 1.0), ambient_intensity=0.55,
        sky_zenith=(0.25, 0.47, 0.85), sky_horizon=(0.70, 0.82, 0.95), cloud_cover=0.25,
        cloud_color=(0.97, 0.97, 0.98), fog_distance_m=900.0, exposure=1.05, saturation=1.05,
        tint=(1.0, 1.0, 1.0), snow=0.0, foliage="summer", foliage_colors=_GREENS,
        grass_color=(0.28, 0.45, 0.16), wet=0.0, leaves_on_ground=0.0, windows_lit=0.0, lamps_on=False,
        car_change=0.0, noise_sigma=1.2 / 255, date_epoch_s=1689422400),  # 2023-07-15
    # Grey, diffuse light, slightly wet, a few weeks later.
    "overcast": Condition(
        name="overcast", sun_azimuth_deg=160.0, sun_elevation_deg=35.0, sun_color=(0.9, 0.92, 0.95),
        sun_intensity=0.12, ambient_color=(0.86, 0.88, 0.92), ambient_intensity=0.95,
        sky_zenith=(0.62, 0.65, 0.70), sky_horizon=(0.80, 0.81, 0.83), cloud_cover=0.95,
        cloud_color=(0.72, 0.73, 0.76), fog_distance_m=320.0, exposure=0.95, saturation=0.75,
        tint=(0.97, 0.99, 1.03), snow=0.0, foliage="summer", foliage_colors=_GREENS[1:],
        grass_color=(0.26, 0.40, 0.17), wet=0.45, leaves_on_ground=0.0, windows_lit=0.0, lamps_on=False,
        car_change=0.35, noise_sigma=1.8 / 255, date_epoch_s=1693828800),  # 2023-09-04
    # Low warm sun, orange and red trees, leaves in the gutters.
    "autumn": Condition(
        name="autumn", sun_azimuth_deg=250.0, sun_elevation_deg=22.0, sun_color=(1.0, 0.82, 0.60),
        sun_intensity=0.8, ambient_color=(0.78, 0.80, 0.92), ambient_intensity=0.62,
        sky_zenith=(0.30, 0.45, 0.75), sky_horizon=(0.88, 0.80, 0.70), cloud_cover=0.35,
        cloud_color=(0.98, 0.92, 0.85), fog_distance_m=600.0, exposure=1.08, saturation=1.1,
        tint=(1.04, 1.0, 0.93), snow=0.0, foliage="autumn", foliage_colors=_AUTUMN,
        grass_color=(0.42, 0.42, 0.18), wet=0.1, leaves_on_ground=0.7, windows_lit=0.0, lamps_on=False,
        car_change=0.4, noise_sigma=1.5 / 255, date_epoch_s=1698062400),  # 2023-10-23
    # Snow on the ground, bare trees, cold flat light.
    "snow": Condition(
        name="snow", sun_azimuth_deg=190.0, sun_elevation_deg=18.0, sun_color=(0.95, 0.95, 1.0),
        sun_intensity=0.25, ambient_color=(0.88, 0.92, 1.0), ambient_intensity=0.85,
        sky_zenith=(0.66, 0.70, 0.78), sky_horizon=(0.86, 0.88, 0.91), cloud_cover=0.85,
        cloud_color=(0.80, 0.82, 0.86), fog_distance_m=260.0, exposure=0.92, saturation=0.8,
        tint=(0.95, 0.99, 1.06), snow=1.0, foliage="bare", foliage_colors=_GREENS,
        grass_color=(0.85, 0.87, 0.90), wet=0.6, leaves_on_ground=0.0, windows_lit=0.03, lamps_on=False,
        car_change=0.45, noise_sigma=1.8 / 255, date_epoch_s=1705752000),  # 2024-01-20
    # After sunset: dark blue sky, lit windows and street lamps, noisy sensor.
    "dusk": Condition(
        name="dusk", sun_azimuth_deg=290.0, sun_elevation_deg=2.0, sun_color=(1.0, 0.55, 0.30),
        sun_intensity=0.18, ambient_color=(0.55, 0.60, 0.85), ambient_intensity=0.42,
        sky_zenith=(0.10, 0.16, 0.36), sky_horizon=(0.85, 0.52, 0.36), cloud_cover=0.3,
        cloud_color=(0.45, 0.35, 0.42), fog_distance_m=500.0, exposure=1.15, saturation=0.95,
        tint=(1.0, 0.97, 1.02), snow=0.0, foliage="summer", foliage_colors=_GREENS,
        grass_color=(0.25, 0.38, 0.16), wet=0.0, leaves_on_ground=0.0, windows_lit=0.45, lamps_on=True,
        car_change=0.3, noise_sigma=3.5 / 255, date_epoch_s=1691092800),  # 2023-08-03
}

MAPPING_CONDITION = "summer"
QUERY_CONDITIONS: tuple[str, ...] = ("overcast", "autumn", "snow", "dusk")


def get_condition(condition: str | Condition) -> Condition:
    """Return the named condition (or pass a ``Condition`` through); ValueError lists the names."""
    if isinstance(condition, Condition):
        return condition
    try:
        return CONDITIONS[condition]
    except KeyError:
        raise ValueError(f"Unknown condition {condition!r}; known: {sorted(CONDITIONS)}") from None
