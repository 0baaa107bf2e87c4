"""CPU renderer of the synthetic street world: RGB and depth for a pinhole camera (numpy).

Vectorised ray casting: one ray per pixel through its centre, intersected with the ground
plane and, primitive by primitive, with boxes, capped cylinders and ellipsoids. Each primitive
is tested only on the pixels of its projected bounding box (frustum culling for free), so the
cost grows with the screen area of what is visible, not with the size of the world.

Shading is procedural and defined in world/surface coordinates (``textures.py``) so the same
facade looks the same from every view: facades with windows, shop signs and bricks, asphalt
grain, lane markings, paving, bark, foliage, car paint, sky gradient and clouds. Lighting is
Lambertian sun + sky ambient, with sun shadows from a shadow map (built once per scene), haze,
exposure, colour cast and sensor noise per condition.

Rendering more views of a generated dataset (e.g. for training)::

    data = synth.load_dataset(DIR)
    rgb, depth = render(data.world, "snow", data.camera, cam_from_world, noise_seed=0)

Conventions: ``cam_from_world`` maps world (map) points to the camera optical frame (z
forward, x right, y down); pixel (0, 0) is the centre of the top-left pixel; depth is the
camera z of the surface hit (metres), ``inf`` for sky.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixloc_ros.data.sim import textures as tx
from pixloc_ros.data.sim.conditions import Condition, get_condition
from pixloc_ros.data.sim.world import (STYLE_BRICK, STYLE_GLASS, STYLE_PANELS, STYLE_PLASTER, Kind, Scene,
    Shape, World)

SKY = -1  # primitive index of a pixel that sees the sky
GROUND = -2  # primitive index of a pixel that sees the ground plane
NEAR = 0.05  # metres: nothing closer to the camera is drawn


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole intrinsics in pixels, origin at the centre of the top-left pixel (OpenCV/ROS)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float = 61.0) -> "PinholeCamera":
        """Square pixels, principal point at the image centre, horizontal field of view in degrees."""
        f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
        return cls(width, height, float(f), float(f), (width - 1) / 2.0, (height - 1) / 2.0)


@dataclass
class RayHits:
    """Per-pixel result of ray casting, all (H, W)."""

    depth: np.ndarray  # float32 camera z of the hit, metres; inf for sky
    prim: np.ndarray  # int32 primitive index, SKY or GROUND
    face: np.ndarray  # int8 face code (box: axis*2 + positive; cylinder: 0 side, 1 bottom, 2 top)
    dirs: np.ndarray  # (H, W, 3) float32 world ray directions with camera-z component 1
    origin: np.ndarray  # (3,) float64 camera centre in the world
    R: np.ndarray  # (3, 3) rotation of cam_from_world


def as_rotation_translation(cam_from_world) -> tuple[np.ndarray, np.ndarray]:
    """Accept a (4, 4) or (3, 4) matrix, an (R, t) pair, or an object with ``to_4x4()`` (engine
    ``Pose``); return (R (3, 3), t (3,)) float64."""
    if hasattr(cam_from_world, "to_4x4"):
        m = cam_from_world.to_4x4()
        m = m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m)
        return m[:3, :3].astype(np.float64), m[:3, 3].astype(np.float64)
    if isinstance(cam_from_world, (tuple, list)) and len(cam_from_world) == 2:
        R, t = cam_from_world
        return np.asarray(R, np.float64).reshape(3, 3), np.asarray(t, np.float64).reshape(3)
    m = np.asarray(cam_from_world, np.float64)
    if m.shape in ((4, 4), (3, 4)):
        return m[:3, :3], m[:3, 3]
    raise ValueError(f"cam_from_world must be a 4x4/3x4 matrix, (R, t) or a Pose; got shape {m.shape}")


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


# ---------------------------------------------------------------------------------------------
# Ray casting
# ---------------------------------------------------------------------------------------------

def camera_rays(camera: PinholeCamera, R: np.ndarray) -> np.ndarray:
    """World directions of the pixel rays, (3, H, W) float32 planes, scaled so that camera z = 1."""
    u = (np.arange(camera.width, dtype=np.float64) - camera.cx) / camera.fx
    v = (np.arange(camera.height, dtype=np.float64) - camera.cy) / camera.fy
    # world = R^T d_cam = R[0] * u + R[1] * v + R[2] (rows of R are the camera axes in the world)
    planes = (R[0][:, None, None] * u[None, None, :] + R[1][:, None, None] * v[None, :, None]
              + R[2][:, None, None])
    return np.ascontiguousarray(planes, np.float32)


def _screen_rects(lo, hi, camera: PinholeCamera, R, origin):
    """Pixel rectangles of axis-aligned boxes [lo, hi] (P, 3) projected into the camera, culled
    and sorted near to far.

    Returns (indices (K,), rects (K, 4) int [u0, u1, v0, v1), zmin (K,) lower bound of the
    camera depth of anything inside the box)."""
    corners = np.stack([np.where(np.array(bits, bool), hi, lo) for bits in np.ndindex(2, 2, 2)], 1)  # (P, 8, 3)
    pc = (corners - origin) @ R.T  # camera frame
    z = pc[..., 2]
    behind = (z < NEAR).all(1)
    straddle = (z < NEAR).any(1) & ~behind
    zc = np.maximum(z, NEAR)
    u = camera.fx * pc[..., 0] / zc + camera.cx
    v = camera.fy * pc[..., 1] / zc + camera.cy
    u0 = np.floor(u.min(1)) - 1
    u1 = np.ceil(u.max(1)) + 2
    v0 = np.floor(v.min(1)) - 1
    v1 = np.ceil(v.max(1)) + 2
    u0[straddle], v0[straddle] = 0, 0
    u1[straddle], v1[straddle] = camera.width, camera.height
    u0, u1 = np.clip(u0, 0, camera.width), np.clip(u1, 0, camera.width)
    v0, v1 = np.clip(v0, 0, camera.height), np.clip(v1, 0, camera.height)
    keep = ~behind & (u1 > u0) & (v1 > v0)
    rects = np.stack([u0, u1, v0, v1], 1).astype(np.int64)
    zmin = np.maximum(z.min(1), NEAR)
    idx = np.nonzero(keep)[0]
    order = np.argsort(zmin[idx], kind="stable")
    idx = idx[order]
    return idx, rects[idx], zmin[idx]


def _hit_box(dx, dy, dz, oc, half, axis):
    """Slab test of rays (planes dx, dy, dz of shape (h, w)) against a box; returns t (inf: miss)."""
    c, s = float(axis[0]), float(axis[1])
    if abs(s) > 1e-12:  # rotate into the box frame
        o = (c * oc[0] + s * oc[1], -s * oc[0] + c * oc[1], oc[2])
        dl = (c * dx + s * dy, -s * dx + c * dy, dz)
    else:
        o, dl = oc, (dx, dy, dz)
    tn = tf = None
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(3):
            inv = np.float32(1.0) / dl[k]
            a = (np.float32(-half[k] - o[k])) * inv
            b = (np.float32(half[k] - o[k])) * inv
            lo_, hi_ = np.minimum(a, b), np.maximum(a, b)
            tn = lo_ if tn is None else np.maximum(tn, lo_)
            tf = hi_ if tf is None else np.minimum(tf, hi_)
    return np.where((tn <= tf) & (tn > NEAR), tn, np.float32(np.inf))


def _box_face(dx, dy, dz, oc, half, axis, t):
    """Face code (axis * 2 + normal positive) of box hits at ray parameters ``t`` (N,)."""
    c, s = float(axis[0]), float(axis[1])
    q = np.stack([oc[0] + t * dx, oc[1] + t * dy, oc[2] + t * dz], -1)
    ql = np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1], q[:, 2]], -1)
    rel = np.abs(ql) / np.asarray(half, np.float32)  # 1 on the face that was hit
    ax = rel.argmax(1)
    positive = ql[np.arange(len(t)), ax] > 0
    return (ax * 2 + positive).astype(np.int8)


def _hit_cylinder(dx, dy, dz, oc, radius, length, a):
    """Capped cylinder from ``oc``-relative base along unit axis ``a``; returns (t, face)."""
    a0, a1, a2 = (np.float32(v) for v in a)
    da = a0 * dx + a1 * dy + a2 * dz
    wa = float(oc @ a)
    wp = (oc - wa * np.asarray(a)).astype(np.float32)
    px, py, pz = dx - da * a0, dy - da * a1, dz - da * a2
    A = px * px + py * py + pz * pz
    # Numerically stable in float32: distance of closest approach first, then the half chord
    # (B^2 - 4AC cancels catastrophically for thin, far cylinders).
    with np.errstate(divide="ignore", invalid="ignore"):
        t_c = -(px * wp[0] + py * wp[1] + pz * wp[2]) / A
        qx, qy, qz = wp[0] + t_c * px, wp[1] + t_c * py, wp[2] + t_c * pz
        half2 = (np.float32(radius * radius) - (qx * qx + qy * qy + qz * qz)) / A
        ok = (half2 >= 0) & (A > 1e-12)
        t_side = t_c - np.sqrt(np.where(ok, half2, 0))
    h = wa + t_side * da
    best = np.where(ok & (t_side > NEAR) & (h >= 0) & (h <= length), t_side, np.float32(np.inf))
    face = np.zeros(dx.shape, np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        for code, hc in ((1, 0.0), (2, length)):
            t_cap = np.float32(hc - wa) / da
            qx, qy, qz = wp[0] + t_cap * px, wp[1] + t_cap * py, wp[2] + t_cap * pz
            inside = (qx * qx + qy * qy + qz * qz <= radius * radius) & (t_cap > NEAR)
            better = inside & (t_cap < best)
            best = np.where(better, t_cap, best)
            face[better] = code
    return best, face


def _hit_ellipsoid(dx, dy, dz, oc, radii):
    """Axis-aligned ellipsoid: scale to the unit sphere, then the stable closest-approach form."""
    r = radii.astype(np.float32)
    o = (oc / radii).astype(np.float32)
    ex, ey, ez = dx / r[0], dy / r[1], dz / r[2]
    A = ex * ex + ey * ey + ez * ez
    t_c = -(ex * o[0] + ey * o[1] + ez * o[2]) / A
    qx, qy, qz = o[0] + t_c * ex, o[1] + t_c * ey, o[2] + t_c * ez
    half2 = (1.0 - (qx * qx + qy * qy + qz * qz)) / A
    ok = half2 >= 0
    t = t_c - np.sqrt(np.where(ok, half2, 0))
    return np.where(ok & (t > NEAR), t, np.float32(np.inf))


def raycast(scene: Scene, camera: PinholeCamera, cam_from_world) -> RayHits:
    """Cast one ray per pixel centre; return the nearest hit per pixel."""
    R, t = as_rotation_translation(cam_from_world)
    origin = -R.T @ t
    dirs = camera_rays(camera, R)
    DX, DY, DZ = dirs
    H, W = camera.height, camera.width
    depth = np.full((H, W), np.inf, np.float32)
    prim = np.full((H, W), SKY, np.int32)
    face = np.zeros((H, W), np.int8)
    # The ground plane z = 0 (the camera is above it).
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.float32(-origin[2]) / DZ
    ground = (DZ < 0) & (tg > NEAR)
    depth[ground] = tg[ground]
    prim[ground] = GROUND
    prims = scene.primitives
    visible, rects, zmin = _screen_rects(prims.aabb_min, prims.aabb_max, camera, R, origin)
    for i, (u0, u1, v0, v1), z_lo in zip(visible, rects, zmin):
        view = depth[v0:v1, u0:u1]
        if view.max() <= z_lo:  # everything in the rectangle is already nearer: occluded
            continue
        dx, dy, dz = DX[v0:v1, u0:u1], DY[v0:v1, u0:u1], DZ[v0:v1, u0:u1]
        oc = origin - prims.center[i]
        shape = prims.shape[i]
        fc = None
        if shape == Shape.BOX:
            th = _hit_box(dx, dy, dz, oc, prims.size[i], prims.axis[i])
        elif shape == Shape.CYLINDER:
            th, fc = _hit_cylinder(dx, dy, dz, oc, prims.size[i, 0], prims.size[i, 1], prims.axis[i])
        else:
            th = _hit_ellipsoid(dx, dy, dz, oc, prims.size[i])
        closer = th < view
        if not closer.any():
            continue
        tc = th[closer]
        view[closer] = tc
        prim[v0:v1, u0:u1][closer] = i
        if shape == Shape.BOX:
            fc_c = _box_face(dx[closer], dy[closer], dz[closer], oc.astype(np.float32), prims.size[i], prims.axis[i], tc)
        elif fc is not None:
            fc_c = fc[closer]
        else:
            fc_c = 0
        face[v0:v1, u0:u1][closer] = fc_c
    return RayHits(depth, prim, face, np.moveaxis(dirs, 0, -1), origin, R)


# ---------------------------------------------------------------------------------------------
# Shading
# ---------------------------------------------------------------------------------------------

@dataclass
class _Surface:
    """Pixels of one material, flattened: world point, normal, footprint and primitive rows."""

    p: np.ndarray  # (N, 3) float64 world points
    n: np.ndarray  # (N, 3) float32 unit normals (world)
    fw: np.ndarray  # (N,) float32 pixel footprint on the surface, metres
    face: np.ndarray  # (N,) int8
    ids: np.ndarray  # (N,) primitive indices (GROUND for the ground)


def _box_local(prims, ids, p):
    c, s = prims.axis[ids, 0], prims.axis[ids, 1]
    d = p - prims.center[ids]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], -1).astype(np.float32)


def _box_normals(prims, ids, face):
    axis = face // 2
    sign = np.where(face % 2 == 1, 1.0, -1.0)
    nl = np.zeros((len(ids), 3))
    nl[np.arange(len(ids)), axis] = sign
    c, s = prims.axis[ids, 0], prims.axis[ids, 1]
    return np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)


def _cylinder_frame(prims, ids, p):
    """Axial coordinate h, angle around the axis and radial vector of points on cylinders."""
    a = prims.axis[ids]
    w = p - prims.center[ids]
    h = np.einsum("ij,ij->i", w, a)
    radial = w - h[:, None] * a
    ref = np.where(np.abs(a[:, 2:3]) > 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 0, 1.0]]))
    e1 = np.cross(a, ref)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(a, e1)
    ang = np.arctan2(np.einsum("ij,ij->i", radial, e2), np.einsum("ij,ij->i", radial, e1))
    return h.astype(np.float32), ang.astype(np.float32), radial


def _normals(scene: Scene, ids, face, p):
    prims = scene.primitives
    n = np.zeros((len(ids), 3))
    ground = ids == GROUND
    n[ground, 2] = 1.0
    obj = ~ground
    if not obj.any():
        return n.astype(np.float32)
    oid = ids[obj]
    shape = prims.shape[oid]
    out = np.zeros((len(oid), 3))
    b = shape == Shape.BOX
    out[b] = _box_normals(prims, oid[b], face[obj][b])
    c = shape == Shape.CYLINDER
    if c.any():
        _, _, radial = _cylinder_frame(prims, oid[c], p[obj][c])
        a = prims.axis[oid[c]]
        fc = face[obj][c]
        nn = radial / np.maximum(np.linalg.norm(radial, axis=1, keepdims=True), 1e-9)
        nn = np.where((fc == 1)[:, None], -a, np.where((fc == 2)[:, None], a, nn))
        out[c] = nn
    e = shape == Shape.ELLIPSOID
    if e.any():
        g = (p[obj][e] - prims.center[oid[e]]) / prims.size[oid[e]] ** 2
        out[e] = g / np.linalg.norm(g, axis=1, keepdims=True)
    n[obj] = out
    return n.astype(np.float32)


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
    color[sky] = _sky(cond, dirs[sky] / dnorm[sky, None])

    hit = np.nonzero(~sky)[0]
    ids = prim[hit]
    # float32 is plenty for texturing (1e-5 m at 300 m) and twice as fast as float64.
    p = hits.origin.astype(np.float32) + depth[hit, None] * dirs[hit]
    n = _normals(scene, ids, face[hit], p)
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
        s = _Surface(p[sel], n[sel], fw[sel], face[hit][sel], ids[sel])
        a, e = _SHADERS[Kind(int(kind))](scene, s)
        albedo[sel] = a
        if e is not None:
            emissive[sel] = e

    # Lighting: sky ambient (brighter on up-facing surfaces) + Lambertian sun.
    L = cond.sun_direction.astype(np.float32)
    ndl = np.clip(n @ L, 0.0, 1.0)
    if cond.sun_intensity >= 0.3:  # hard shadows only under a clear sun
        ndl *= _sun_visibility(scene, p, n, ndl > 0)
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
    color *= _vignette(camera)[..., None]
    # Soft shoulder instead of hard clipping of highlights.
    bright = color > 0.85
    color[bright] = 0.85 + 0.15 * (1.0 - np.exp(-(color[bright] - 0.85) / 0.15))
    if noise_seed is not None and cond.noise_sigma > 0:
        rng = np.random.default_rng(noise_seed)
        color += rng.standard_normal(color.shape, dtype=np.float32) * np.float32(cond.noise_sigma)
    return np.clip(color * 255.0 + 0.5, 0, 255).astype(np.uint8)


# Primitive kinds that cast sun shadows (kerbs are too low to matter).
_CASTERS = (Kind.BUILDING, Kind.CAR_BODY, Kind.CAR_CABIN, Kind.TRUNK, Kind.CROWN, Kind.POLE, Kind.LAMP_HEAD,
            Kind.SIGN, Kind.BIN)


SHADOW_TEXEL_M = 0.12  # shadow-map resolution on surfaces facing the sun


@dataclass
class _ShadowMap:
    """Orthographic depth map seen from the sun: for each texel, the light-space depth of the
    first surface the sunlight hits. Computed once per scene (static geometry and sun)."""

    e1: np.ndarray  # (3,) light-space axes: e1, e2 span the map, e3 points along the light
    e2: np.ndarray
    e3: np.ndarray
    a0: float  # light-space coordinates of texel (0, 0)
    b0: float
    depth: np.ndarray  # (Hb, Wa) float32 light-space depth of the first hit


def _shadow_map(scene: Scene) -> _ShadowMap:
    if "shadow_map" in scene.cache:
        return scene.cache["shadow_map"]
    prims = scene.primitives
    L = scene.condition.sun_direction
    e3 = -L / np.linalg.norm(L)
    e1 = np.cross(e3, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e3, e1)
    casters = np.nonzero(np.isin(prims.kind, _CASTERS))[0]
    # Map extent: the streets and the facades along them (receivers up to 30 m high); casters
    # outside still shade it, receivers outside are never close enough to the camera to matter.
    cfg = scene.world.config
    margin = cfg.frontage + 4.0
    box_lo = np.array([-margin, -margin, 0.0])
    box_hi = np.array([cfg.loop_x_m + margin, cfg.loop_y_m + margin, 30.0])
    corners = np.array([np.where(np.array(b, bool), box_hi, box_lo) for b in np.ndindex(2, 2, 2)])
    a = corners @ e1
    b = corners @ e2
    a0, b0 = a.min(), b.min()
    Wa = int(np.ceil((a.max() - a0) / SHADOW_TEXEL_M)) + 1
    Hb = int(np.ceil((b.max() - b0) / SHADOW_TEXEL_M)) + 1
    A = a0 + np.arange(Wa) * SHADOW_TEXEL_M
    B = b0 + np.arange(Hb) * SHADOW_TEXEL_M
    # Light rays start on the plane d = d0 (in front of everything) and travel along e3; the
    # map starts as the ground plane z = 0, whose depth is affine in (a, b).
    d0 = float((corners @ e3).min()) - 60.0
    depth = (d0 - (A[None, :] * e1[2] + B[:, None] * e2[2] + d0 * e3[2]) / e3[2]).astype(np.float32)
    lo, hi = prims.aabb_min[casters], prims.aabb_max[casters]
    cc = np.stack([np.where(np.array(bb, bool)[None], hi, lo) for bb in np.ndindex(2, 2, 2)], 1)
    ia0 = np.clip(np.floor(((cc @ e1).min(1) - a0) / SHADOW_TEXEL_M).astype(int), 0, Wa)
    ia1 = np.clip(np.ceil(((cc @ e1).max(1) - a0) / SHADOW_TEXEL_M).astype(int) + 1, 0, Wa)
    ib0 = np.clip(np.floor(((cc @ e2).min(1) - b0) / SHADOW_TEXEL_M).astype(int), 0, Hb)
    ib1 = np.clip(np.ceil(((cc @ e2).max(1) - b0) / SHADOW_TEXEL_M).astype(int) + 1, 0, Hb)
    for k, i in enumerate(casters):
        if ia1[k] <= ia0[k] or ib1[k] <= ib0[k]:
            continue
        aa, bb = np.meshgrid(A[ia0[k]:ia1[k]], B[ib0[k]:ib1[k]])
        o = aa.reshape(-1, 1) * e1 + bb.reshape(-1, 1) * e2 + d0 * e3
        t = _parallel_ray_hits(prims, i, o, e3)
        view = depth[ib0[k]:ib1[k], ia0[k]:ia1[k]]
        np.minimum(view, (d0 + t).reshape(view.shape).astype(np.float32), out=view)
    sm = _ShadowMap(e1, e2, e3, float(a0), float(b0), depth)
    scene.cache["shadow_map"] = sm
    return sm


def _sun_visibility(scene: Scene, p: np.ndarray, n: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """1 where the sun reaches the surface point, 0 in shadow, soft over about a texel; (N,).

    Looks the points up in the scene's sun shadow map with a normal offset against acne and
    2x2 percentage-closer filtering against blocky edges."""
    vis = np.ones(len(p), np.float32)
    if not lit.any():
        return vis
    sm = _shadow_map(scene)
    q = p[lit].astype(np.float64) + n[lit] * 0.06
    fa = (q @ sm.e1 - sm.a0) / SHADOW_TEXEL_M
    fb = (q @ sm.e2 - sm.b0) / SHADOW_TEXEL_M
    d = q @ sm.e3 - 0.04
    Hb, Wa = sm.depth.shape
    ia, ib = np.floor(fa).astype(np.int64), np.floor(fb).astype(np.int64)
    wa, wb = (fa - ia).astype(np.float32), (fb - ib).astype(np.float32)
    out = np.zeros(len(q), np.float32)
    for da, db, w in ((0, 0, (1 - wa) * (1 - wb)), (1, 0, wa * (1 - wb)), (0, 1, (1 - wa) * wb), (1, 1, wa * wb)):
        ja, jb = ia + da, ib + db
        inside = (ja >= 0) & (ja < Wa) & (jb >= 0) & (jb < Hb)
        stored = np.full(len(q), np.inf, np.float32)
        stored[inside] = sm.depth[jb[inside], ja[inside]]
        out += w * (d <= stored)
    vis[lit] = out
    return vis


def _parallel_ray_hits(prims, i: int, o: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Entry distance of rays o + t L (o (n, 3) float64, common unit direction L) into
    primitive ``i``; inf where missed. (The primary rays share an origin instead.)"""
    shape = prims.shape[i]
    d = o - prims.center[i]
    inf = np.full(len(o), np.inf)
    if shape == Shape.BOX:
        c, s = prims.axis[i, 0], prims.axis[i, 1]
        ol = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
        Ll = np.array([c * L[0] + s * L[1], -s * L[0] + c * L[1], L[2]])
        Ll = np.where(np.abs(Ll) < 1e-12, 1e-12, Ll)
        h = prims.size[i]
        a = (-h - ol) / Ll
        b = (h - ol) / Ll
        tn = np.minimum(a, b).max(1)
        tf = np.maximum(a, b).min(1)
        return np.where((tn <= tf) & (tn > 0), tn, inf)
    if shape == Shape.CYLINDER:
        ax = prims.axis[i]
        r, length = prims.size[i, 0], prims.size[i, 1]
        la = float(L @ ax)
        Lp = L - la * ax
        wa = d @ ax
        wp = d - wa[:, None] * ax
        A = float(Lp @ Lp)
        if A < 1e-12:
            return inf
        B = 2.0 * (wp @ Lp)
        C = np.einsum("ij,ij->i", wp, wp) - r * r
        disc = B * B - 4 * A * C
        ok = disc >= 0
        t = (-B - np.sqrt(np.where(ok, disc, 0.0))) / (2 * A)
        h = wa + t * la
        return np.where(ok & (t > 0) & (h >= 0) & (h <= length), t, inf)
    r = prims.size[i]
    ol = d / r
    Ll = L / r
    A = float(Ll @ Ll)
    B = 2.0 * (ol @ Ll)
    C = np.einsum("ij,ij->i", ol, ol) - 1.0
    disc = B * B - 4 * A * C
    t = (-B - np.sqrt(np.maximum(disc, 0.0))) / (2 * A)
    return np.where((disc >= 0) & (t > 0), t, inf)


_VIGNETTES: dict = {}


def _vignette(camera: PinholeCamera) -> np.ndarray:
    """(H, W) float32 gain falling to ~0.8 in the corners, cached per camera."""
    if camera not in _VIGNETTES:
        yy, xx = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
        r2 = ((xx - camera.cx) / (0.5 * camera.width)) ** 2 + ((yy - camera.cy) / (0.5 * camera.width)) ** 2
        _VIGNETTES[camera] = (1.0 - 0.12 * r2).astype(np.float32)
    return _VIGNETTES[camera]


def _sky(cond: Condition, d: np.ndarray) -> np.ndarray:
    """Sky colour for unit view directions (N, 3): gradient, clouds at infinity, sun glow."""
    sin_el = np.clip(d[:, 2], -1, 1)
    t = tx.smoothstep(0.0, 0.6, sin_el)
    col = tx.mix(cond.sky_horizon, cond.sky_zenith, t)
    up = sin_el > 0.01
    if cond.cloud_cover > 0 and up.any():
        # Clouds at infinity (direction only): no parallax, so no SfM point can sit on them;
        # soft, so they give SIFT little to detect.
        k = 900.0 / np.maximum(sin_el[up], 0.01)
        x = d[up, 0] * k
        y = d[up, 1] * k
        n = tx.fbm2(x / 420.0, y / 420.0, seed=77, octaves=3)
        cover = tx.smoothstep(1.0 - cond.cloud_cover - 0.2, 1.0 - cond.cloud_cover + 0.35, n)
        cover *= tx.smoothstep(0.01, 0.12, sin_el[up])
        shade_ = 0.88 + 0.12 * tx.fbm2(x / 200.0, y / 200.0, seed=78, octaves=2)
        col[up] = tx.mix(col[up], np.asarray(cond.cloud_color, np.float32) * shade_[:, None], cover)
    sun = cond.sun_direction.astype(np.float32)
    glow = np.clip(d @ sun, 0, 1) ** 24 * 0.35 * min(1.0, cond.sun_intensity * 1.5)
    col += glow[:, None] * np.asarray(cond.sun_color, np.float32)
    return col


# ---------------------------------------------------------------------------------------------
# Materials: each returns (albedo (N, 3), emissive (N, 3) or None)
# ---------------------------------------------------------------------------------------------

def _snow_cover(cond: Condition, s: _Surface, strength: float = 1.0) -> np.ndarray:
    """Fraction of snow on each pixel: on upward-facing surfaces, patchy at the edges."""
    if cond.snow <= 0:
        return np.zeros(len(s.fw), np.float32)
    up = tx.smoothstep(0.55, 0.85, s.n[:, 2])
    patchy = tx.smoothstep(0.25, 0.45, tx.fbm2(s.p[:, 0] * 0.7, s.p[:, 1] * 0.7, seed=5, octaves=3, fw=s.fw))
    return (cond.snow * strength * up * (0.35 + 0.65 * patchy)).astype(np.float32)


def _snow_color(s: _Surface) -> np.ndarray:
    g = tx.fbm2(s.p[:, 0] * 1.3, s.p[:, 1] * 1.3 + s.p[:, 2], seed=9, base_freq=1.0, octaves=5, fw=s.fw)
    return np.stack([0.86 + 0.10 * g, 0.88 + 0.10 * g, 0.92 + 0.08 * g], -1).astype(np.float32)


def _street_coords(world: World, x: np.ndarray, y: np.ndarray):
    """For ground points: index of the street containing them (-1: off-road), along-street
    coordinate ``s`` and lateral ``l`` (to the left of the street direction), metres.

    Where two streets overlap (junctions) the one whose centre line is nearer wins.
    """
    hw = world.config.half_road
    best = np.full(x.shape, np.inf, np.float32)
    idx = np.full(x.shape, -1, np.int32)
    s_out = np.zeros(x.shape, np.float32)
    l_out = np.zeros(x.shape, np.float32)
    for k, street in enumerate(world.streets):
        d, left = street.direction, street.left
        dx, dy = x - street.start[0], y - street.start[1]
        s = dx * d[0] + dy * d[1]
        lat = dx * left[0] + dy * left[1]
        inside = (s >= -hw) & (s <= street.length + hw) & (np.abs(lat) <= hw) & (np.abs(lat) < best)
        best = np.where(inside, np.abs(lat), best)
        idx = np.where(inside, k, idx)
        s_out = np.where(inside, s, s_out)
        l_out = np.where(inside, lat, l_out)
    return idx, s_out, l_out


def _road_markings(world: World, idx, s, lat, fw, x, y):
    """Paint coverage in [0, 1] for road pixels: centre dashes, parking lines and bay ticks,
    zebra crossings at every node."""
    cfg = world.config
    hw, pw = cfg.half_road, cfg.parking_width_m
    lengths = np.array([st.length for st in world.streets], np.float32)[np.maximum(idx, 0)]
    clear = cfg.frontage + 4.0
    mid = (s > hw + 4.5) & (s < lengths - hw - 4.5)
    dashes = tx.pulse_train(s, 9.0, 3.0 / 9.0, fw) * tx.box_1d(lat, -0.07, 0.07, fw) * mid
    alat = np.abs(lat)
    park_zone = (s > clear - 0.5 * cfg.parking_pitch_m) & (s < lengths - clear + 0.5 * cfg.parking_pitch_m)
    park_line = tx.box_1d(alat, hw - pw - 0.06, hw - pw + 0.06, fw) * park_zone
    ticks = tx.pulse_train(s + 0.06, cfg.parking_pitch_m, 0.12 / cfg.parking_pitch_m, fw) * \
        tx.box_1d(alat, hw - pw, hw - 0.15, fw) * park_zone
    zebra_zone = ((s > hw + 0.6) & (s < hw + 3.6)) | ((s < lengths - hw - 0.6) & (s > lengths - hw - 3.6))
    zebra = tx.pulse_train(lat + 0.25, 1.0, 0.5, fw) * tx.box_1d(lat, -hw + 0.4, hw - 0.4, fw) * zebra_zone
    paint = np.clip(dashes + park_line + ticks + zebra, 0, 1)
    wear = tx.smoothstep(0.25, 0.55, tx.fbm2(x * 1.7, y * 1.7, seed=21, octaves=4, fw=fw))
    return (paint * (0.55 + 0.45 * wear) * (idx >= 0)).astype(np.float32)


def _manhole_tree(scene: Scene):
    """KD-tree of the manhole covers (cached per scene)."""
    if "manholes" not in scene.cache:
        from scipy.spatial import cKDTree
        scene.cache["manholes"] = cKDTree(scene.world.manholes)
    return scene.cache["manholes"]


def _shade_ground(scene: Scene, s: _Surface):
    world, cond = scene.world, scene.condition
    cfg = world.config
    x, y, fw = s.p[:, 0], s.p[:, 1], s.fw
    idx, st, lat = _street_coords(world, x, y)
    road = idx >= 0
    # Asphalt: grain at many scales, repaired patches, sealed cracks and oil stains.
    grain = tx.fbm2(x, y, seed=11, base_freq=0.12, octaves=8, fw=fw)
    patch_n = tx.fbm2(x, y, seed=12, base_freq=0.07, octaves=3, fw=fw)
    patch = tx.smoothstep(0.60, 0.60 + 0.01 + 0.3 * fw, patch_n)
    crack_n = tx.fbm2(x, y, seed=15, base_freq=0.35, octaves=3, fw=fw)
    crack_w = 0.02
    crack = np.clip(1.0 - np.abs(crack_n - 0.5) / (0.45 * (crack_w + fw)), 0, 1) * (crack_w / (crack_w + fw))
    crack *= tx.smoothstep(0.45, 0.55, tx.value_noise2(x * 0.06, y * 0.06, seed=16))
    alat_lane = np.abs(np.abs(lat) - cfg.lane_offset_m)
    stain = tx.smoothstep(0.72, 0.8, tx.value_noise2(x * 1.3, y * 1.3, seed=17)) * tx.smoothstep(0.9, 0.4, alat_lane)
    # Aggregate: centimetre-sized stones, visible only close up (faded by the footprint).
    stones = (tx.value_noise2(x * 60.0, y * 60.0, seed=18) - 0.5) * tx._octave_weight(60.0, fw)
    asphalt = (0.30 * (0.70 + 0.60 * grain + 0.35 * stones) * (1.0 - 0.22 * patch) * (1.0 - 0.55 * crack) * (1.0 - 0.35 * stain)
               * (1.0 - 0.4 * cond.wet)).astype(np.float32)
    col = np.repeat(asphalt[:, None], 3, 1) * np.array([1.0, 1.0, 1.03 + 0.05 * cond.wet], np.float32)
    paint = _road_markings(world, idx, st, lat, fw, x, y)
    col = tx.mix(col, np.array([0.88, 0.88, 0.84], np.float32) * (1.0 - 0.25 * cond.wet), paint)
    # Manhole covers: cast-iron discs with concentric ribs.
    if len(world.manholes):
        r, _ = _manhole_tree(scene).query(np.stack([x, y], 1), distance_upper_bound=0.45)
        near = np.isfinite(r)
        if near.any():
            r = r[near].astype(np.float32)
            disc = tx.box_1d(r, -1.0, 0.34, fw[near])
            ribs = tx.pulse_train(r, 0.07, 0.5, fw[near])
            iron = (0.16 + 0.10 * ribs)[:, None] * np.array([1.0, 0.97, 0.93], np.float32)
            col[near] = tx.mix(col[near], iron, disc)
    # Off the road (behind buildings, in alleys and courtyards): grass and soil.
    off = ~road
    if off.any():
        g = tx.fbm2(x[off], y[off], seed=13, base_freq=0.3, octaves=6, fw=fw[off])
        col[off] = np.asarray(cond.grass_color, np.float32) * (0.65 + 0.7 * g)[:, None]
    if cond.snow > 0:
        # Snow everywhere but in the wheel tracks of the driving lanes.
        alat = np.abs(lat)
        edge = tx.fbm2(x * 2.0, y * 2.0, seed=14, octaves=4, fw=fw)
        wobble = (edge - 0.5) * 0.25
        track = tx.box_1d(np.abs(alat - cfg.lane_offset_m) + wobble, 0.58, 1.0, fw) * road
        slush = track * tx.smoothstep(0.3, 0.5, edge + 0.1)
        cover = cond.snow * (1.0 - 0.85 * slush)
        wet_track = tx.mix(col * 0.9, _snow_color(s) * 0.8, 0.25)  # slush: wet asphalt, grey snow
        col = tx.mix(wet_track, _snow_color(s), cover)
    if cond.leaves_on_ground > 0:
        gutter = road & (np.abs(lat) > cfg.half_road - 1.2)
        col = _leaves(col, s, cond, gutter.astype(np.float32))
    return col, None


def _leaves(col, s: _Surface, cond: Condition, where: np.ndarray):
    """Fallen leaves: small coloured specks, averaged into a tint when smaller than a pixel."""
    x, y = s.p[:, 0], s.p[:, 1]
    n = tx.value_noise2(x * 7.0, y * 7.0, seed=31)
    speck = tx.smoothstep(0.62, 0.7, n)
    w = tx._octave_weight(7.0, s.fw)
    speck = speck * w + (1 - w) * 0.3
    hue = tx.value_noise2(x * 7.0, y * 7.0, seed=32)
    leaf = tx.mix(np.array([0.75, 0.40, 0.08], np.float32), np.array([0.55, 0.20, 0.06], np.float32), hue)
    density = cond.leaves_on_ground * where * tx.smoothstep(0.3, 0.6, tx.fbm2(x * 0.3, y * 0.3, seed=33, octaves=2))
    return tx.mix(col, leaf, speck * density)


def _shade_sidewalk(scene: Scene, s: _Surface):
    world, cond = scene.world, scene.condition
    x, y, fw = s.p[:, 0], s.p[:, 1], s.fw
    top = s.face == 5
    slab = 0.6
    ix, iy = np.floor(x / slab), np.floor(y / slab)
    w_slab = tx._octave_weight(1.0 / slab, fw)
    tone = 0.5 + (tx.hash01(ix.astype(np.int64), iy.astype(np.int64), seed=41) - 0.5) * w_slab
    joints = np.maximum(tx.pulse_train(x + 0.008, slab, 0.016 / slab, fw), tx.pulse_train(y + 0.008, slab, 0.016 / slab, fw))
    grain = tx.fbm2(x, y, seed=42, base_freq=1.5, octaves=5, fw=fw)
    base = (0.58 + 0.12 * (tone - 0.5) * 2) * (0.85 + 0.3 * grain) * (1.0 - 0.45 * joints)
    col = np.stack([base * 1.0, base * 0.98, base * 0.95], -1).astype(np.float32)
    # Kerb stones along the road edge, and the kerb's vertical face.
    idx, _, lat = _street_coords(world, x, y)
    dist_to_road = np.full(x.shape, np.inf, np.float32)
    hw = world.config.half_road
    for street in world.streets:
        d, left = street.direction, street.left
        dx, dy = x - street.start[0], y - street.start[1]
        sa = dx * d[0] + dy * d[1]
        la = np.abs(dx * left[0] + dy * left[1])
        within = (sa > -hw) & (sa < street.length + hw)
        dist_to_road = np.where(within, np.minimum(dist_to_road, la - hw), dist_to_road)
    kerb = (dist_to_road < 0.3) | ~top
    kerb_col = (0.68 + 0.12 * tx.fbm2(x * 2 + s.p[:, 2] * 3, y * 2, seed=43, octaves=4, fw=fw))
    kerb_joint = tx.pulse_train(x + y, 1.0, 0.015, fw)
    kerb_rgb = np.repeat((kerb_col * (1.0 - 0.4 * kerb_joint))[:, None], 3, 1).astype(np.float32)
    col = np.where(kerb[:, None], kerb_rgb, col)
    cover = _snow_cover(cond, s)
    col = tx.mix(col, _snow_color(s), cover)
    if cond.leaves_on_ground > 0:
        col = _leaves(col, s, cond, top.astype(np.float32) * 0.8)
    return col, None


_SHOP = np.array([(0.75, 0.12, 0.10), (0.10, 0.30, 0.65), (0.10, 0.50, 0.25), (0.90, 0.70, 0.10),
                  (0.15, 0.15, 0.18), (0.85, 0.85, 0.82), (0.55, 0.15, 0.50), (0.95, 0.45, 0.10)], np.float32)


def _glyphs(cu, cv, cell_w, cell_h, key, seed, fw, density=0.5):
    """Pseudo-text: each ``cell_w`` x ``cell_h`` cell holds a 3x5 bitmap glyph chosen by hash.

    cu, cv: coordinates inside the text block (metres, from its lower-left corner)."""
    ci = np.floor(cu / cell_w).astype(np.int64)
    gx = np.floor((cu - ci * cell_w) / cell_w * 4.0).astype(np.int64)  # 3 columns + spacing
    gy = np.floor(cv / cell_h * 6.0).astype(np.int64)  # 5 rows + spacing
    inside = (gx >= 0) & (gx < 3) & (gy >= 0) & (gy < 5)
    bit = (tx.hash01(key, ci, gx * 8 + gy, seed=seed) < density) & inside
    w = tx._octave_weight(4.0 / cell_w, fw)  # a glyph stroke is cell_w / 4 wide
    return bit * w + (1 - w) * density * 15.0 / 24.0


def _shade_building(scene: Scene, s: _Surface):
    cond = scene.condition
    prims = scene.primitives
    q = _box_local(prims, s.ids, s.p)
    half = prims.size[s.ids].astype(np.float32)
    P = prims.params[s.ids]
    face, fw = s.face, s.fw
    style, wall = P[:, 0].astype(np.int64), P[:, 1:4]
    floor_h, ground_h, win_w, win_h, pitch, sill = (P[:, k] for k in range(4, 10))
    shop, hue, trim, seed = P[:, 10] > 0.5, P[:, 11].astype(np.int64), P[:, 12], P[:, 13].astype(np.int64)
    front, blank = P[:, 14].astype(np.int64), P[:, 15] > 0.5
    # Facade coordinates: u to the right as seen from outside, z up from the ground.
    ax = face // 2
    pos = face % 2 == 1
    u = np.where(ax == 0, np.where(pos, q[:, 1] + half[:, 1], half[:, 1] - q[:, 1]),
                 np.where(pos, half[:, 0] - q[:, 0], q[:, 0] + half[:, 0]))
    width = np.where(ax == 0, 2 * half[:, 1], 2 * half[:, 0])
    z = q[:, 2] + half[:, 2]
    height = 2 * half[:, 2]
    side = face < 4
    is_front = face == front
    is_back = face == (front ^ 1)
    has_windows = side & (is_front | is_back | ~blank)

    # --- wall material ---
    weather = tx.fbm2(u * 0.7 + seed % 1000, z * 0.7, seed=51, base_freq=0.25, octaves=4, fw=fw)
    col = wall * (0.82 + 0.36 * weather)[:, None]
    brick = style == STYLE_BRICK
    if brick.any():
        course, blen = 0.077, 0.24
        row = np.floor(z / course)
        off = (row % 2) * blen * 0.5
        mortar = np.maximum(tx.pulse_train(z, course, 0.012 / course, fw), tx.pulse_train(u + off, blen, 0.012 / blen, fw))
        wb = tx._octave_weight(1.0 / blen, fw)
        var = (tx.hash01(row.astype(np.int64), np.floor((u + off) / blen).astype(np.int64), seed=52) - 0.5) * wb
        bcol = wall * (1.0 + 0.25 * var)[:, None]
        bcol = tx.mix(bcol, np.array([0.72, 0.70, 0.66], np.float32), mortar * 0.8)
        col = np.where(brick[:, None], bcol * (0.82 + 0.36 * weather)[:, None], col)
    plaster = style == STYLE_PLASTER
    if plaster.any():
        fine = tx.fbm2(u * 3.0, z * 3.0, seed=53, base_freq=1.0, octaves=4, fw=fw)
        col = np.where(plaster[:, None], col * (0.92 + 0.16 * fine)[:, None], col)
    panels = (style == STYLE_PANELS) | (style == STYLE_GLASS)
    if panels.any():
        pj = np.maximum(tx.pulse_train(u, 1.5, 0.025 / 1.5, fw), tx.pulse_train(z, floor_h, 0.03 / floor_h, fw))
        col = np.where(panels[:, None], col * (1.0 - 0.35 * pj)[:, None], col)

    # --- street-level clutter on walls without shop fronts: posters and graffiti ---
    street = side & (z < 2.8) & ~(shop & is_front)
    if street.any():
        slot = np.floor(u / 2.6)
        su = u - slot * 2.6
        has_poster = tx.hash01(seed, slot.astype(np.int64), face, seed=64) < 0.3
        poster = tx.rect(su, z, 0.7, 1.55, 0.9, 2.05, fw) * street * has_poster
        pcol = _SHOP[(tx.hash01(seed, slot.astype(np.int64), seed=65) * len(_SHOP)).astype(np.int64) % len(_SHOP)]
        ptxt = _glyphs(su - 0.75, z - 1.6, 0.25, 0.32, (seed * 31 + slot).astype(np.int64), 66, fw, 0.5)
        ptxt = ptxt * ((su > 0.75) & (su < 1.5) & (z > 1.6) & (z < 1.92))
        pcol = tx.mix(pcol, np.array([0.95, 0.95, 0.92], np.float32), ptxt)
        col = tx.mix(col, pcol, poster)
        tagged = (tx.hash01(seed, face, seed=67) < 0.4) & street
        g = tx.fbm2(u * 1.2 + seed % 997, z * 1.2, seed=68, octaves=3, fw=fw)
        blob = tx.smoothstep(0.6, 0.6 + 0.02 + 0.5 * fw, g) * tagged * (z > 0.3) * (z < 2.3)
        tag_hue = tx.value_noise2(u * 0.4 + seed % 991, z * 0.4, seed=69)
        tag_col = tx.mix(np.array([0.85, 0.15, 0.45], np.float32), np.array([0.15, 0.55, 0.85], np.float32), tag_hue)
        col = tx.mix(col, tag_col, blob)

    # --- windows on a regular grid ---
    zf = np.where(shop, z - ground_h, z)
    fl = np.floor(zf / floor_h)
    vv = zf - fl * floor_h
    n_floors = np.floor((height - np.where(shop, ground_h, 0) - 0.7) / floor_h)
    ncol = np.floor((width - 1.2) / pitch)
    margin = (width - ncol * pitch) / 2
    colx = np.floor((u - margin) / pitch)
    cu = u - margin - (colx + 0.5) * pitch
    on_grid = has_windows & (zf >= 0) & (fl < n_floors) & (colx >= 0) & (colx < ncol)
    win = tx.rect(cu, vv, -win_w / 2, win_w / 2, sill, sill + win_h, fw) * on_grid
    surround = tx.rect(cu, vv, -win_w / 2 - 0.09, win_w / 2 + 0.09, sill - 0.12, sill + win_h + 0.07, fw) * on_grid
    wkey = (seed * 7 + face).astype(np.int64)
    h_win = tx.hash01(wkey, colx.astype(np.int64), fl.astype(np.int64), seed=54)
    glass = _glass(cond, (vv - sill) / np.maximum(win_h, 0.1), h_win)
    # Mullions and transoms: a cross in most windows, none in glass curtain walls.
    bars = np.maximum(tx.box_1d(cu, -0.03, 0.03, fw), tx.box_1d(vv - sill, win_h * 0.62 - 0.03, win_h * 0.62 + 0.03, fw))
    bars = bars * (style != STYLE_GLASS) * (h_win < 0.8)
    frame_col = np.where((trim > 1.0)[:, None], np.array([0.92, 0.92, 0.90], np.float32), np.array([0.25, 0.24, 0.23], np.float32))
    # Curtains half-drawn in some windows: a lighter cloth on one side.
    curtain = (h_win > 0.55) & (h_win < 0.75)
    cloth = tx.box_1d(cu, -win_w / 2, -win_w / 2 + win_w * (0.2 + 0.4 * h_win), fw) * curtain
    cloth_col = tx.mix(np.array([0.85, 0.80, 0.70], np.float32), np.array([0.60, 0.25, 0.20], np.float32), (h_win * 7) % 1.0)
    glass = tx.mix(glass, cloth_col * 0.8, cloth)
    pane = tx.mix(glass, frame_col, bars)
    col = tx.mix(col, frame_col * (0.9 + 0.2 * (trim - 1))[:, None], np.clip(surround - win, 0, 1) * 0.85)
    col = tx.mix(col, pane, win)
    emissive = np.zeros_like(col)
    if cond.windows_lit > 0:
        lit = (tx.hash01(wkey, colx.astype(np.int64), fl.astype(np.int64), seed=55) < cond.windows_lit)
        warm = tx.mix(np.array([1.0, 0.78, 0.45], np.float32), np.array([0.85, 0.9, 1.0], np.float32), (h_win * 13) % 1.0)
        emissive += warm * (0.75 * win * lit * (1 - bars))[:, None]

    # --- shop fronts on the ground floor of the street side ---
    sh = shop & is_front & (z < ground_h)
    if sh.any():
        gcols = np.floor((width - 1.0) / 3.0)
        gmargin = (width - gcols * 3.0) / 2
        gi = np.floor((u - gmargin) / 3.0)
        gu = u - gmargin - (gi + 0.5) * 3.0
        ok = sh & (gi >= 0) & (gi < gcols)
        door = tx.hash01(seed, gi.astype(np.int64), seed=56) < 0.3
        top_w = np.where(door, 2.3, ground_h - 1.25)
        bottom_w = np.where(door, 0.0, 0.45)
        half_w = np.where(door, 0.6, 1.2)
        shopwin = tx.rect(gu, z, -half_w, half_w, bottom_w, top_w, fw) * ok
        shopframe = tx.rect(gu, z, -half_w - 0.08, half_w + 0.08, bottom_w - 0.08, top_w + 0.08, fw) * ok
        inside = tx.fbm2(u * 1.5, z * 1.5, seed=57, octaves=3, fw=fw)
        display = tx.hash01(seed, np.floor(u / 0.4).astype(np.int64), np.floor(z / 0.35).astype(np.int64), seed=58)
        wd = tx._octave_weight(1 / 0.4, fw)
        shop_glass = _glass(cond, z / 2.5, inside) * (0.8 + 0.5 * ((display - 0.5) * wd + 0.5))[:, None]
        col = np.where(sh[:, None], tx.mix(col, np.array([0.15, 0.15, 0.16], np.float32), shopframe), col)
        col = np.where(sh[:, None], tx.mix(col, shop_glass, shopwin), col)
        if cond.lamps_on:  # shops lit after sunset
            emissive += np.array([1.0, 0.9, 0.7], np.float32) * (0.45 * shopwin * sh * (0.5 + 0.5 * display))[:, None]
        # Sign band with pseudo-lettering across the shop front.
        band = (z > ground_h - 1.0) & (z < ground_h - 0.25) & sh
        bcol = _SHOP[hue % len(_SHOP)]
        text_col = np.where((bcol.sum(1) > 1.6)[:, None], np.array([0.1, 0.1, 0.12], np.float32), np.array([0.97, 0.97, 0.95], np.float32))
        letters = _glyphs(u - gmargin - 0.3, z - (ground_h - 0.9), 0.42, 0.55, seed, 59, fw)
        sign = tx.mix(bcol, text_col, letters * ((u > gmargin + 0.3) & (u < width - gmargin - 0.3)))
        col = np.where(band[:, None], sign, col)
        if cond.lamps_on:
            emissive += sign * (0.25 * band)[:, None]
    # Cornice over the ground floor and a parapet band at the roof line.
    cornice = side & (tx.box_1d(z, ground_h - 0.18, ground_h + 0.02, fw) > 0.5) & shop
    parapet = side & (z > height - 0.45)
    col = np.where((cornice | parapet)[:, None], wall * 0.7 * trim[:, None], col)
    plinth = side & (z < 0.45) & ~(sh)
    col = np.where(plinth[:, None], col * 0.65, col)
    # Roof: dark gravel, or snow.
    roof = face == 5
    g = tx.fbm2(q[:, 0], q[:, 1], seed=60, base_freq=0.5, octaves=4, fw=fw)
    col = np.where(roof[:, None], np.repeat((0.25 + 0.1 * g)[:, None], 3, 1), col)
    col = tx.mix(col, _snow_color(s), _snow_cover(cond, s))
    return col.astype(np.float32), emissive


def _glass(cond: Condition, t, h):
    """Window glass: dark interior with a reflection of the sky, varying per window ``h``."""
    sky = np.asarray(cond.sky_horizon, np.float32)
    dark = np.array([0.08, 0.09, 0.11], np.float32)
    refl = (0.25 + 0.35 * np.clip(t, 0, 1) + 0.2 * (h - 0.5))
    return tx.mix(dark, sky * 0.75, refl)


def _shade_car(scene: Scene, s: _Surface, cabin: bool):
    cond = scene.condition
    prims = scene.primitives
    q = _box_local(prims, s.ids, s.p)
    half = prims.size[s.ids].astype(np.float32)
    P = prims.params[s.ids]
    paint, seed = P[:, 0:3], P[:, 3].astype(np.int64)
    face, fw = s.face, s.fw
    x, y, z = q[:, 0], q[:, 1], q[:, 2] + half[:, 2]
    hl, hwid, hh = half[:, 0], half[:, 1], 2 * half[:, 2]
    sheen = tx.fbm2(x * 2 + seed % 100, z * 2 + y, seed=61, octaves=3, fw=fw)
    col = paint * (0.9 + 0.2 * sheen)[:, None]
    front, back = face == 1, face == 0
    sides = (face == 2) | (face == 3)
    glass_col = _glass(cond, z / np.maximum(hh, 0.1), tx.hash01(seed, seed=62))
    if cabin:
        win_side = tx.rect(x, z, -hl + 0.12, hl - 0.12, hh * 0.12, hh * 0.9, fw) * sides
        pillar = tx.box_1d(x, -0.05, 0.05, fw) * sides
        win_end = tx.rect(y, z, -hwid + 0.08, hwid - 0.08, hh * 0.1, hh * 0.92, fw) * (front | back)
        glass = np.clip(win_side * (1 - pillar) + win_end, 0, 1)
        col = tx.mix(col, glass_col, glass)
    else:
        # Door seams, handles, bumpers, lights and number plates.
        seams = (tx.box_1d(x, -0.01, 0.01, fw) + tx.box_1d(x, hl * 0.45 - 0.01, hl * 0.45 + 0.01, fw)) * sides * (z > hh * 0.25)
        handle = (tx.rect(x, z, -0.22, -0.08, hh * 0.72, hh * 0.8, fw) + tx.rect(x, z, hl * 0.45 - 0.22, hl * 0.45 - 0.08, hh * 0.72, hh * 0.8, fw)) * sides
        col = tx.mix(col, np.array([0.05, 0.05, 0.05], np.float32), np.clip(seams * 0.8 + handle * 0.6, 0, 1))
        bumper = (z < hh * 0.28) & (front | back | sides)
        col = np.where(bumper[:, None], col * 0.45 + 0.04, col)
        lamp_y = np.abs(y)
        lamps = tx.rect(lamp_y, z, hwid * 0.55, hwid * 0.9, hh * 0.62, hh * 0.86, fw)
        head = lamps * front
        tail = lamps * back
        col = tx.mix(col, np.array([0.92, 0.92, 0.85], np.float32), head)
        col = tx.mix(col, np.array([0.70, 0.05, 0.04], np.float32), tail)
        grille = tx.rect(y, z, -hwid * 0.4, hwid * 0.4, hh * 0.4, hh * 0.6, fw) * front
        col = tx.mix(col, np.array([0.06, 0.06, 0.07], np.float32), grille)
        plate = tx.rect(y, z, -0.26, 0.26, hh * 0.12, hh * 0.12 + 0.11, fw) * (front | back)
        chars = _glyphs(y + 0.22, z - hh * 0.12 - 0.015, 0.062, 0.08, seed, 63, fw, 0.55)
        plate_col = tx.mix(np.array([0.93, 0.93, 0.90], np.float32), np.array([0.05, 0.05, 0.06], np.float32),
                           chars * ((y > -0.22) & (y < 0.22)))
        col = tx.mix(col, plate_col, plate)
    emissive = None
    if cond.lamps_on and not cabin:  # parking lights at dusk
        emissive = np.array([0.3, 0.02, 0.01], np.float32) * tail[:, None]
    col = tx.mix(col, _snow_color(s), _snow_cover(cond, s, 0.9))
    return col.astype(np.float32), emissive


def _shade_wheel(scene: Scene, s: _Surface):
    prims = scene.primitives
    h, ang, radial = _cylinder_frame(prims, s.ids, s.p)
    r = np.linalg.norm(radial, axis=1).astype(np.float32)
    rmax = prims.size[s.ids, 0].astype(np.float32)
    tread = tx.pulse_train(ang * rmax, 0.04, 0.5, s.fw)
    tyre = 0.07 + 0.03 * tread
    cap = s.face > 0
    spokes = tx.pulse_train(ang, 2 * np.pi / 5, 0.35, s.fw / np.maximum(r, 0.02))
    rim = np.where(r < rmax * 0.62, 0.55 + 0.25 * spokes, 0.07)
    rim = np.where(r < rmax * 0.14, 0.3, rim)
    val = np.where(cap, rim, tyre)
    return np.repeat(val[:, None], 3, 1).astype(np.float32), None


def _shade_trunk(scene: Scene, s: _Surface):
    prims = scene.primitives
    h, ang, radial = _cylinder_frame(prims, s.ids, s.p)
    r = prims.size[s.ids, 0].astype(np.float32)
    seed = prims.params[s.ids, 0].astype(np.int64)
    bark = tx.fbm2(ang * r * 9.0, h * 1.5 + seed % 100, seed=71, octaves=5, fw=s.fw)
    ridges = tx.fbm2(ang * r * 25.0, h * 2.0, seed=72, octaves=2, fw=s.fw)
    v = 0.55 + 0.7 * bark * (0.7 + 0.6 * ridges)
    col = np.array([0.30, 0.25, 0.20], np.float32) * v[:, None]
    col = tx.mix(col, _snow_color(s), _snow_cover(scene.condition, s, 0.7))
    return col.astype(np.float32), None


def _shade_crown(scene: Scene, s: _Surface):
    prims = scene.primitives
    P = prims.params[s.ids]
    base, seed = P[:, 0:3], P[:, 3]
    x, y, z = s.p[:, 0], s.p[:, 1], s.p[:, 2]
    clumps = tx.fbm3(x, y, z, seed=81, base_freq=1.8, octaves=2, fw=s.fw)
    leaves = tx.fbm3(x, y, z, seed=82, base_freq=7.0, octaves=2, fw=s.fw)
    v = (0.45 + 0.55 * tx.smoothstep(0.3, 0.7, clumps)) * (0.55 + 0.9 * leaves)
    # Each crown mixes two tones of its palette colour.
    tone = tx.value_noise3(x * 0.8 + seed, y * 0.8, z * 0.8, seed=83)
    col = base * (v * (0.85 + 0.3 * tone))[:, None]
    return col.astype(np.float32), None


def _shade_pole(scene: Scene, s: _Surface):
    P = scene.primitives.params[s.ids]
    base = P[:, 0:3]
    g = tx.fbm2(s.p[:, 0] * 3 + s.p[:, 1] * 3, s.p[:, 2] * 3, seed=91, octaves=4, fw=s.fw)
    band = tx.box_1d(s.p[:, 2], 0.1, 1.1, s.fw)  # a darker painted foot
    col = base * (0.85 + 0.3 * g)[:, None] * (1.0 - 0.45 * band)[:, None]
    return col.astype(np.float32), None


def _shade_lamp(scene: Scene, s: _Surface):
    col = np.full((len(s.fw), 3), 0.22, np.float32)
    emissive = None
    if scene.condition.lamps_on:
        emissive = np.where((s.face == 4)[:, None], np.array([1.0, 0.85, 0.55], np.float32), 0.0).astype(np.float32)
    return col, emissive


def _shade_sign(scene: Scene, s: _Surface):
    prims = scene.primitives
    q = _box_local(prims, s.ids, s.p)
    half = prims.size[s.ids].astype(np.float32)
    P = prims.params[s.ids]
    plate_col, seed = P[:, 0:3], P[:, 3].astype(np.int64)
    front = s.face == 1
    u, v = -q[:, 1], q[:, 2]
    border = 1.0 - tx.rect(u, v, -half[:, 1] + 0.05, half[:, 1] - 0.05, -half[:, 2] + 0.05, half[:, 2] - 0.05, s.fw)
    symbol = _glyphs(u + 0.18, v + 0.2, 0.36, 0.42, seed, 93, s.fw, 0.5) * tx.rect(u, v, -0.18, 0.18, -0.2, 0.22, s.fw)
    white = np.array([0.95, 0.95, 0.95], np.float32)
    col = tx.mix(plate_col, white, np.clip(border + symbol, 0, 1))
    col = np.where(front[:, None], col, np.array([0.55, 0.56, 0.58], np.float32))
    return col.astype(np.float32), None


def _shade_bin(scene: Scene, s: _Surface):
    h, ang, _ = _cylinder_frame(scene.primitives, s.ids, s.p)
    ribs = tx.pulse_train(ang * 0.28, 0.06, 0.5, s.fw)
    col = np.array([0.12, 0.28, 0.16], np.float32) * (0.8 + 0.3 * ribs)[:, None]
    col = np.where((s.face == 2)[:, None], np.array([0.08, 0.08, 0.08], np.float32), col)
    return col.astype(np.float32), None


_SHADERS = {
    Kind.GROUND: _shade_ground,
    Kind.BUILDING: _shade_building,
    Kind.SIDEWALK: _shade_sidewalk,
    Kind.CAR_BODY: lambda sc, s: _shade_car(sc, s, cabin=False),
    Kind.CAR_CABIN: lambda sc, s: _shade_car(sc, s, cabin=True),
    Kind.WHEEL: _shade_wheel,
    Kind.TRUNK: _shade_trunk,
    Kind.CROWN: _shade_crown,
    Kind.POLE: _shade_pole,
    Kind.LAMP_HEAD: _shade_lamp,
    Kind.SIGN: _shade_sign,
    Kind.BIN: _shade_bin,
}
