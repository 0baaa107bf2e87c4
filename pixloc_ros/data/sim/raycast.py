"""Ray casting of the synthetic world: one ray per pixel through its centre, intersected with the
ground plane and, primitive by primitive, with boxes, capped cylinders and ellipsoids. Each primitive
is tested only on the pixels of its projected bounding box (frustum culling for free), so the
cost grows with the screen area of what is visible, not with the size of the world.

Conventions: ``cam_from_world`` maps world points to the camera optical frame (z forward, x right,
y down); pixel (0, 0) is the centre of the top-left pixel; depth is the camera z of the hit (metres),
``inf`` for sky.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixloc_ros.data.sim.world import Scene, Shape


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
