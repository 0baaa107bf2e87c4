"""The surfaces a ray hit, for shading: pixels of one material as world points, normals and pixel
footprints (``Surface``), the normals of each primitive shape, and the snow cover of upward faces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixloc_ros.data.sim import textures as tx
from pixloc_ros.data.sim.conditions import Condition
from pixloc_ros.data.sim.world import Scene, Shape
from pixloc_ros.data.sim.raycast import GROUND


# ---------------------------------------------------------------------------------------------
# Shading
# ---------------------------------------------------------------------------------------------

@dataclass
class Surface:
    """Pixels of one material, flattened: world point, normal, footprint and primitive rows."""

    p: np.ndarray  # (N, 3) float64 world points
    n: np.ndarray  # (N, 3) float32 unit normals (world)
    fw: np.ndarray  # (N,) float32 pixel footprint on the surface, metres
    face: np.ndarray  # (N,) int8
    ids: np.ndarray  # (N,) primitive indices (GROUND for the ground)


def box_local(prims, ids, p):
    c, s = prims.axis[ids, 0], prims.axis[ids, 1]
    d = p - prims.center[ids]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], -1).astype(np.float32)


def box_normals(prims, ids, face):
    axis = face // 2
    sign = np.where(face % 2 == 1, 1.0, -1.0)
    nl = np.zeros((len(ids), 3))
    nl[np.arange(len(ids)), axis] = sign
    c, s = prims.axis[ids, 0], prims.axis[ids, 1]
    return np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)


def cylinder_frame(prims, ids, p):
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


def surface_normals(scene: Scene, ids, face, p):
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
    out[b] = box_normals(prims, oid[b], face[obj][b])
    c = shape == Shape.CYLINDER
    if c.any():
        _, _, radial = cylinder_frame(prims, oid[c], p[obj][c])
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


# ---------------------------------------------------------------------------------------------
# Materials: each returns (albedo (N, 3), emissive (N, 3) or None)
# ---------------------------------------------------------------------------------------------

def snow_cover(cond: Condition, s: Surface, strength: float = 1.0) -> np.ndarray:
    """Fraction of snow on each pixel: on upward-facing surfaces, patchy at the edges."""
    if cond.snow <= 0:
        return np.zeros(len(s.fw), np.float32)
    up = tx.smoothstep(0.55, 0.85, s.n[:, 2])
    patchy = tx.smoothstep(0.25, 0.45, tx.fbm2(s.p[:, 0] * 0.7, s.p[:, 1] * 0.7, seed=5, octaves=3, fw=s.fw))
    return (cond.snow * strength * up * (0.35 + 0.65 * patchy)).astype(np.float32)


def snow_color(s: Surface) -> np.ndarray:
    g = tx.fbm2(s.p[:, 0] * 1.3, s.p[:, 1] * 1.3 + s.p[:, 2], seed=9, base_freq=1.0, octaves=5, fw=s.fw)
    return np.stack([0.86 + 0.10 * g, 0.88 + 0.10 * g, 0.92 + 0.08 * g], -1).astype(np.float32)
