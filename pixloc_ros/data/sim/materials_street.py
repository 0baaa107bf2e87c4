"""Materials of the street itself: asphalt with road markings, manholes, leaves and snow, and the
sidewalks. Each shader returns (albedo (N, 3), emissive (N, 3) or None) for a ``Surface``.
"""
from __future__ import annotations

import numpy as np

from pixloc_ros.data.sim import textures as tx
from pixloc_ros.data.sim.conditions import Condition
from pixloc_ros.data.sim.world import Scene, World
from pixloc_ros.data.sim.surfaces import Surface, snow_color, snow_cover


def street_coords(world: World, x: np.ndarray, y: np.ndarray):
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


def road_markings(world: World, idx, s, lat, fw, x, y):
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


def manhole_tree(scene: Scene):
    """KD-tree of the manhole covers (cached per scene)."""
    if "manholes" not in scene.cache:
        from scipy.spatial import cKDTree
        scene.cache["manholes"] = cKDTree(scene.world.manholes)
    return scene.cache["manholes"]


def shade_ground(scene: Scene, s: Surface):
    world, cond = scene.world, scene.condition
    cfg = world.config
    x, y, fw = s.p[:, 0], s.p[:, 1], s.fw
    idx, st, lat = street_coords(world, x, y)
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
    paint = road_markings(world, idx, st, lat, fw, x, y)
    col = tx.mix(col, np.array([0.88, 0.88, 0.84], np.float32) * (1.0 - 0.25 * cond.wet), paint)
    # Manhole covers: cast-iron discs with concentric ribs.
    if len(world.manholes):
        r, _ = manhole_tree(scene).query(np.stack([x, y], 1), distance_upper_bound=0.45)
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
        wet_track = tx.mix(col * 0.9, snow_color(s) * 0.8, 0.25)  # slush: wet asphalt, grey snow
        col = tx.mix(wet_track, snow_color(s), cover)
    if cond.leaves_on_ground > 0:
        gutter = road & (np.abs(lat) > cfg.half_road - 1.2)
        col = leaf_litter(col, s, cond, gutter.astype(np.float32))
    return col, None


def leaf_litter(col, s: Surface, cond: Condition, where: np.ndarray):
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


def shade_sidewalk(scene: Scene, s: Surface):
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
    idx, _, lat = street_coords(world, x, y)
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
    cover = snow_cover(cond, s)
    col = tx.mix(col, snow_color(s), cover)
    if cond.leaves_on_ground > 0:
        col = leaf_litter(col, s, cond, top.astype(np.float32) * 0.8)
    return col, None
