"""Light in the synthetic world: sun shadows from a shadow map built once per scene, sun visibility
of surface points, the sky's colour (gradient, clouds, sun glow) and lens vignetting.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixloc_ros.data.sim import textures as tx
from pixloc_ros.data.sim.conditions import Condition
from pixloc_ros.data.sim.world import Kind, Scene, Shape
from pixloc_ros.data.sim.raycast import PinholeCamera


# Primitive kinds that cast sun shadows (kerbs are too low to matter).
SHADOW_CASTERS = (Kind.BUILDING, Kind.CAR_BODY, Kind.CAR_CABIN, Kind.TRUNK, Kind.CROWN, Kind.POLE, Kind.LAMP_HEAD,
            Kind.SIGN, Kind.BIN)
SHADOW_TEXEL_M = 0.12  # shadow-map resolution on surfaces facing the sun


@dataclass
class ShadowMap:
    """Orthographic depth map seen from the sun: for each texel, the light-space depth of the
    first surface the sunlight hits. Computed once per scene (static geometry and sun)."""

    e1: np.ndarray  # (3,) light-space axes: e1, e2 span the map, e3 points along the light
    e2: np.ndarray
    e3: np.ndarray
    a0: float  # light-space coordinates of texel (0, 0)
    b0: float
    depth: np.ndarray  # (Hb, Wa) float32 light-space depth of the first hit


def build_shadow_map(scene: Scene) -> ShadowMap:
    if "shadow_map" in scene.cache:
        return scene.cache["shadow_map"]
    prims = scene.primitives
    L = scene.condition.sun_direction
    e3 = -L / np.linalg.norm(L)
    e1 = np.cross(e3, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e3, e1)
    casters = np.nonzero(np.isin(prims.kind, SHADOW_CASTERS))[0]
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
        t = parallel_ray_hits(prims, i, o, e3)
        view = depth[ib0[k]:ib1[k], ia0[k]:ia1[k]]
        np.minimum(view, (d0 + t).reshape(view.shape).astype(np.float32), out=view)
    sm = ShadowMap(e1, e2, e3, float(a0), float(b0), depth)
    scene.cache["shadow_map"] = sm
    return sm


def sun_visibility(scene: Scene, p: np.ndarray, n: np.ndarray, lit: np.ndarray) -> np.ndarray:
    """1 where the sun reaches the surface point, 0 in shadow, soft over about a texel; (N,).

    Looks the points up in the scene's sun shadow map with a normal offset against acne and
    2x2 percentage-closer filtering against blocky edges."""
    vis = np.ones(len(p), np.float32)
    if not lit.any():
        return vis
    sm = build_shadow_map(scene)
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


def parallel_ray_hits(prims, i: int, o: np.ndarray, L: np.ndarray) -> np.ndarray:
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


def vignette_map(camera: PinholeCamera) -> np.ndarray:
    """(H, W) float32 gain falling to ~0.8 in the corners, cached per camera."""
    if camera not in _VIGNETTES:
        yy, xx = np.mgrid[0:camera.height, 0:camera.width].astype(np.float32)
        r2 = ((xx - camera.cx) / (0.5 * camera.width)) ** 2 + ((yy - camera.cy) / (0.5 * camera.width)) ** 2
        _VIGNETTES[camera] = (1.0 - 0.12 * r2).astype(np.float32)
    return _VIGNETTES[camera]


def sky_color(cond: Condition, d: np.ndarray) -> np.ndarray:
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
