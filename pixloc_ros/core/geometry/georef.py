"""Georeference of a map: GNSS (WGS84 latitude, longitude, ellipsoidal altitude) <-> map frame.

The map frame is a local East-North-Up frame at the origin, rotated about Up so that its +x
axis points along ``heading_deg`` (compass heading: degrees clockwise from true north; 90 means
the map's x axis points east and the map frame *is* ENU). Geodetic maths comes from pymap3d.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pymap3d


@dataclass(frozen=True)
class Georeference:
    """Where the map frame's origin lies on Earth and which way its x axis points."""

    latitude_deg: float
    longitude_deg: float
    altitude_m: float  # above the WGS84 ellipsoid
    heading_deg: float = 90.0  # compass heading of the map's +x axis

    def __post_init__(self):
        if not (-90.0 <= self.latitude_deg <= 90.0) or not (-180.0 <= self.longitude_deg <= 180.0):
            raise ValueError(f"Georeference origin out of range: lat={self.latitude_deg}, lon={self.longitude_deg}")
        if not all(math.isfinite(v) for v in asdict(self).values()):
            raise ValueError(f"Georeference holds a non-finite value: {self}")

    @property
    def map_from_enu(self) -> np.ndarray:
        """(3, 3) rotation taking ENU vectors at the origin into the map frame."""
        # ENU x axis (east) has heading 90; the map's x axis has heading_deg, i.e. it is the
        # east axis rotated counter-clockwise (about Up) by yaw = 90 - heading.
        yaw = math.radians(90.0 - self.heading_deg)
        c, s = math.cos(yaw), math.sin(yaw)
        enu_from_map = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        return enu_from_map.T

    def to_map(self, latitude_deg, longitude_deg, altitude_m) -> np.ndarray:
        """WGS84 coordinates (scalars or arrays of shape (...)) -> map coordinates (..., 3), metres."""
        e, n, u = pymap3d.geodetic2enu(np.asarray(latitude_deg, np.float64), np.asarray(longitude_deg, np.float64),
                                       np.asarray(altitude_m, np.float64), self.latitude_deg, self.longitude_deg,
                                       self.altitude_m)
        enu = np.stack(np.broadcast_arrays(e, n, u), axis=-1)
        return enu @ self.map_from_enu.T

    def to_geodetic(self, xyz_map) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map coordinates (..., 3), metres -> (latitude_deg, longitude_deg, altitude_m), each (...)."""
        enu = np.asarray(xyz_map, np.float64) @ self.map_from_enu
        lat, lon, alt = pymap3d.enu2geodetic(enu[..., 0], enu[..., 1], enu[..., 2], self.latitude_deg,
                                             self.longitude_deg, self.altitude_m)
        return np.asarray(lat), np.asarray(lon), np.asarray(alt)

    def covariance_to_map(self, covariance_enu: np.ndarray) -> np.ndarray:
        """Rotate a (3, 3) position covariance from ENU (NavSatFix's convention) into the map frame."""
        R = self.map_from_enu
        return R @ np.asarray(covariance_enu, np.float64).reshape(3, 3) @ R.T

    def save(self, path: str | Path) -> None:
        """Write as JSON with the field names of this class."""
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Georeference":
        """Read the JSON written by ``save``; a clear error names a missing or unknown field."""
        data = json.loads(Path(path).read_text())
        fields = {"latitude_deg", "longitude_deg", "altitude_m", "heading_deg"}
        if not isinstance(data, dict) or not {"latitude_deg", "longitude_deg", "altitude_m"} <= data.keys():
            raise ValueError(f"{path}: a georeference needs latitude_deg, longitude_deg, altitude_m "
                             f"(and optionally heading_deg); found {sorted(data) if isinstance(data, dict) else data!r}")
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"{path}: unknown georeference fields {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in data.items()})
