"""Sizes of the synthetic datasets (``PRESETS``: small for the demo, full for CMU-Seasons-like runs;
``TEST_PRESET`` for the test suite), the map's georeference and the cameras a preset renders with.
"""
from __future__ import annotations

from dataclasses import dataclass

from pixloc_ros.core.geometry.georef import Georeference
from pixloc_ros.data.sim.conditions import QUERY_CONDITIONS
from pixloc_ros.data.sim.raycast import PinholeCamera


FORMAT = "pixloc_ros.synth/1"
# The map origin: near Carnegie Mellon University, Pittsburgh (where CMU Seasons was recorded);
# the map's x axis points 72 degrees east of north, so map != ENU and the rotation is exercised.
DEFAULT_GEOREF = Georeference(latitude_deg=40.4433, longitude_deg=-79.9436, altitude_m=250.0, heading_deg=72.0)


@dataclass(frozen=True)
class SynthPreset:
    """How much to generate."""

    name: str
    width: int  # image size, pixels
    height: int
    hfov_deg: float  # horizontal field of view (CMU Seasons: ~61 deg at 1024x768)
    keyframe_spacing_m: float  # mapping keyframes every this many metres
    mapping_route: str  # street-graph nodes the mapping drive visits
    query_length_m: float  # length of each query drive
    max_query_frames: int  # cap on images per query drive
    camera_rate_hz: float
    odom_rate_hz: float
    gnss_rate_hz: float
    sift_max_features: int
    match_max_pairs_per_image: int
    query_conditions: tuple[str, ...] = QUERY_CONDITIONS
    mapping_length_m: float | None = None  # crop the mapping drive (tests, small); None: whole route
    mapping_scale: float = 1.0  # mapping images are this many times the query size (same field of view)
    sift_peak_threshold: float | None = None  # SIFT DoG contrast threshold; None: COLMAP's 0.02 / 3
    match_max_ratio: float = 0.8  # Lowe ratio of the matcher (COLMAP: 0.8)
    # Guided matching with the known poses: Sampson error bound, mapping pixels; None: off.
    match_epipolar_error_px: float | None = None
    # Points triangulated under a smaller angle are dropped (relative depth error ~ 1 / angle).
    sfm_min_tri_angle_deg: float = 1.5

    def __post_init__(self):
        w, h = self.width * self.mapping_scale, self.height * self.mapping_scale
        if self.mapping_scale < 1 or w != round(w) or h != round(h):
            raise ValueError(f"mapping_scale {self.mapping_scale} must be >= 1 and give whole-pixel images "
                             f"from {self.width}x{self.height}")

    @property
    def mapping_size(self) -> tuple[int, int]:
        """(width, height) of the mapping images, pixels."""
        return round(self.width * self.mapping_scale), round(self.height * self.mapping_scale)


PRESETS: dict[str, SynthPreset] = {
    # Tests, CI and the demo: 320x240 queries, ~30 frames per season. PixLoc needs hundreds of
    # map points per query: SIFT on 320x240 keyframes finds ~600 keypoints and at most ~300
    # observations of track >= 3 per keyframe whatever the spacing; 640x480 keyframes (4 m
    # apart, guided matching) give ~440. They cost ~1.8 s of CPU each (render 1.2 s, SIFT,
    # matching), so the mapping drive covers the first 210 m of the route (52 keyframes:
    # streets AB, BC, CD; the queries drive there too) to stay < 2 min on 2 cores; the whole
    # 470 m would take about twice as long. Compile with --max-image-edge 320 (world.json).
    "small": SynthPreset("small", 320, 240, 61.0, keyframe_spacing_m=4.0, mapping_route="ABCDEFABE",
                         query_length_m=85.0, max_query_frames=30, camera_rate_hz=3.0, odom_rate_hz=20.0,
                         gnss_rate_hz=2.0, sift_max_features=8192, match_max_pairs_per_image=8,
                         mapping_length_m=210.0, mapping_scale=2.0, sift_peak_threshold=0.004,
                         match_max_ratio=0.9, match_epipolar_error_px=2.0),
    # CMU-Seasons-like: 1024x768, keyframes every 2.5 m, 5 Hz query drives of ~250 m.
    "full": SynthPreset("full", 1024, 768, 61.0, keyframe_spacing_m=2.5, mapping_route="ABCDEFABE",
                        query_length_m=250.0, max_query_frames=400, camera_rate_hz=5.0, odom_rate_hz=50.0,
                        gnss_rate_hz=1.0, sift_max_features=8192, match_max_pairs_per_image=10),
}
# A tiny dataset for the test suite: the first 80 m of the mapping route (~26 keyframes, mapped
# at the query size so that maps compile without resizing, ~270 observations of track >= 3 per
# keyframe) and 6-frame query drives in every query condition; ~25 s on 2 cores. At 320x240 the
# keypoints are coarser: a 2 degree minimum triangulation angle keeps the depths within a few %.
TEST_PRESET = SynthPreset("test", 320, 240, 61.0, keyframe_spacing_m=3.0, mapping_route="ABCDEFABE",
                          query_length_m=24.0, max_query_frames=6, camera_rate_hz=3.0, odom_rate_hz=20.0,
                          gnss_rate_hz=2.0, sift_max_features=8192, match_max_pairs_per_image=8,
                          mapping_length_m=80.0, sift_peak_threshold=0.003, match_epipolar_error_px=2.0,
                          sfm_min_tri_angle_deg=2.0)


def get_preset(preset: str | SynthPreset) -> SynthPreset:
    """Look up a preset by name (or pass one through); ValueError lists the names."""
    if isinstance(preset, SynthPreset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"Unknown preset {preset!r}; known: {sorted(PRESETS)}") from None


# ---------------------------------------------------------------------------------------------
# Planning (no rendering)
# ---------------------------------------------------------------------------------------------

def camera_for(preset: SynthPreset) -> PinholeCamera:
    """The query camera of a preset (pixel-centre principal point at the image centre)."""
    return PinholeCamera.from_fov(preset.width, preset.height, preset.hfov_deg)


def mapping_camera_for(preset: SynthPreset) -> PinholeCamera:
    """The mapping camera: the query camera scaled by ``preset.mapping_scale`` (pixel-centre
    origin: c' = (c + 0.5) * s - 0.5), so that resizing a keyframe to the query size gives
    exactly the query camera."""
    cam, s = camera_for(preset), preset.mapping_scale
    w, h = preset.mapping_size
    return PinholeCamera(w, h, cam.fx * s, cam.fy * s, (cam.cx + 0.5) * s - 0.5, (cam.cy + 0.5) * s - 0.5)
