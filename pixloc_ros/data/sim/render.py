"""CPU renderer of the synthetic street world: RGB and depth for a pinhole camera (numpy).

``render`` casts one ray per pixel (``raycast``), colours every hit by its material (``materials_street``:
ground and sidewalks; ``materials_objects``: buildings, cars, trees, street furniture) from the surface
geometry of the hits (``surfaces``), and lights it (``lighting``: Lambertian sun with shadows from a
shadow map, sky ambient, sky colour, vignetting), then applies haze, exposure, colour cast and sensor
noise per condition.

Shading is procedural and defined in world/surface coordinates (``textures.py``) so the same
facade looks the same from every view.

Rendering more views of a generated dataset (e.g. for training)::

    data = load_dataset(DIR)  # data.sim.dataset
    rgb, depth = render(data.world, "snow", data.camera, cam_from_world, noise_seed=0)

Conventions: ``cam_from_world`` maps world (map) points to the camera optical frame (z
forward, x right, y down); pixel (0, 0) is the centre of the top-left pixel; depth is the
camera z of the surface hit (metres), ``inf`` for sky.
"""
from __future__ import annotations

import numpy as np

from pixloc_ros.data.sim import textures as tx
from pixloc_ros.data.sim.conditions import Condition, get_condition
from pixloc_ros.data.sim.world import Kind, Scene, World
from pixloc_ros.data.sim.lighting import sky_color, sun_visibility, vignette_map
from pixloc_ros.data.sim.materials_objects import (shade_bin, shade_building, shade_car, shade_crown, shade_lamp, shade_pole,
    shade_sign, shade_trunk, shade_wheel)
from pixloc_ros.data.sim.materials_street import shade_ground, shade_sidewalk
from pixloc_ros.data.sim.raycast import GROUND, PinholeCamera, RayHits, SKY, raycast
from pixloc_ros.data.sim.surfaces import Surface, surface_normals


def _as_camera(camera_params, width, height) -> PinholeCamera:
    if isinstance(camera_params, PinholeCamera):
        if width is not None and (width, height) != (camera_params.width, camera_params.height):
            raise ValueError(f"image size {width}x{height} differs from the camera's "
                             f"{camera_params.width}x{camera_params.height}")
        return camera_params
    values = [float(v) for v in np.asarray(camera_params, np.float64).ravel()]
    if len(values) != 4:
        raise ValueError(f"camera_params must be (fx, fy, cx, cy) or a PinholeCamera, got {len(values)} values")
    if width is None or height is None:
        raise ValueError("width and height are required with plain (fx, fy, cx, cy) camera parameters")
    return PinholeCamera(int(width), int(height), *values)


def render(world: World, condition: Condition | str, camera_params, cam_from_world,
           width: int | None = None, height: int | None = None, *, noise_seed: int | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Render the world in ``condition`` seen by a pinhole camera.

    Args:
        camera_params: ``PinholeCamera`` or (fx, fy, cx, cy) in pixels, pixel-centre origin.
        cam_from_world: pose of the camera (see ``as_rotation_translation``).
        width, height: image size in pixels (taken from a ``PinholeCamera`` when omitted).
        noise_seed: seed of the sensor noise; ``None`` renders without noise.
    Returns:
        rgb (H, W, 3) uint8 and depth (H, W) float32 (camera z in metres, inf for sky).
    """
    camera = _as_camera(camera_params, width, height)
    scene = world.scene(get_condition(condition))
    hits = raycast(scene, camera, cam_from_world)
    rgb = shade(scene, camera, hits, noise_seed)
    return rgb, hits.depth


def shade(scene: Scene, camera: PinholeCamera, hits: RayHits, noise_seed: int | None = None) -> np.ndarray:
    """Colour every pixel of ``hits``; returns (H, W, 3) uint8 RGB."""
    cond = scene.condition
    H, W = camera.height, camera.width
    dirs = hits.dirs.reshape(-1, 3)
    depth = hits.depth.reshape(-1)
    prim = hits.prim.reshape(-1)
    face = hits.face.reshape(-1)
    color = np.zeros((H * W, 3), np.float32)

    dnorm = np.linalg.norm(dirs, axis=1)
    sky = prim == SKY
    color[sky] = sky_color(cond, dirs[sky] / dnorm[sky, None])

    hit = np.nonzero(~sky)[0]
    ids = prim[hit]
    # float32 is plenty for texturing (1e-5 m at 300 m) and twice as fast as float64.
    p = hits.origin.astype(np.float32) + depth[hit, None] * dirs[hit]
    n = surface_normals(scene, ids, face[hit], p)
    view = dirs[hit] / dnorm[hit, None]
    cosv = np.abs(np.einsum("ij,ij->i", n, view))
    dist = depth[hit] * dnorm[hit]
    f = 0.5 * (camera.fx + camera.fy)
    # Footprint of a pixel on the surface: stretched by obliquity; the geometric mean of the two
    # axes keeps oblique ground sharp enough across while still filtering along the view.
    fw = (dist / f / np.sqrt(np.maximum(cosv, 0.08))).astype(np.float32)

    kinds = np.where(ids == GROUND, Kind.GROUND, scene.primitives.kind[np.maximum(ids, 0)])
    albedo = np.zeros((len(hit), 3), np.float32)
    emissive = np.zeros((len(hit), 3), np.float32)
    for kind in np.unique(kinds):
        sel = np.nonzero(kinds == kind)[0]
        s = Surface(p[sel], n[sel], fw[sel], face[hit][sel], ids[sel])
        a, e = SHADERS[Kind(int(kind))](scene, s)
        albedo[sel] = a
        if e is not None:
            emissive[sel] = e

    # Lighting: sky ambient (brighter on up-facing surfaces) + Lambertian sun.
    L = cond.sun_direction.astype(np.float32)
    ndl = np.clip(n @ L, 0.0, 1.0)
    if cond.sun_intensity >= 0.3:  # hard shadows only under a clear sun
        ndl *= sun_visibility(scene, p, n, ndl > 0)
    ambient = np.asarray(cond.ambient_color, np.float32) * cond.ambient_intensity * (0.72 + 0.28 * n[:, 2:3])
    # Ambient occlusion near the ground: corners where walls meet the street are darker.
    ao = 0.78 + 0.22 * tx.smoothstep(0.0, 1.2, p[:, 2]).astype(np.float32)
    light = ambient * ao[:, None] + np.asarray(cond.sun_color, np.float32) * cond.sun_intensity * ndl[:, None]
    radiance = albedo * light + emissive
    # Haze toward the horizon colour.
    if np.isfinite(cond.fog_distance_m):
        fog = (1.0 - np.exp(-dist / cond.fog_distance_m)).astype(np.float32)[:, None]
        radiance = radiance + (np.asarray(cond.sky_horizon, np.float32) * 0.95 - radiance) * fog
    color[hit] = radiance

    color = color.reshape(H, W, 3) * np.float32(cond.exposure) * np.asarray(cond.tint, np.float32)
    lum = color @ np.array([0.299, 0.587, 0.114], np.float32)
    color = lum[..., None] + (color - lum[..., None]) * np.float32(cond.saturation)
    # Mild vignetting, as in a real lens.
    color *= vignette_map(camera)[..., None]
    # Soft shoulder instead of hard clipping of highlights.
    bright = color > 0.85
    color[bright] = 0.85 + 0.15 * (1.0 - np.exp(-(color[bright] - 0.85) / 0.15))
    if noise_seed is not None and cond.noise_sigma > 0:
        rng = np.random.default_rng(noise_seed)
        color += rng.standard_normal(color.shape, dtype=np.float32) * np.float32(cond.noise_sigma)
    return np.clip(color * 255.0 + 0.5, 0, 255).astype(np.uint8)


SHADERS = {
    Kind.GROUND: shade_ground,
    Kind.BUILDING: shade_building,
    Kind.SIDEWALK: shade_sidewalk,
    Kind.CAR_BODY: lambda sc, s: shade_car(sc, s, cabin=False),
    Kind.CAR_CABIN: lambda sc, s: shade_car(sc, s, cabin=True),
    Kind.WHEEL: shade_wheel,
    Kind.TRUNK: shade_trunk,
    Kind.CROWN: shade_crown,
    Kind.POLE: shade_pole,
    Kind.LAMP_HEAD: shade_lamp,
    Kind.SIGN: shade_sign,
    Kind.BIN: shade_bin,
}
