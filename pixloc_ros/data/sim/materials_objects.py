"""Materials of what stands on the street: building facades (windows, shops, signs, bricks, glass),
cars, wheels, trees, poles, lamps, signs and bins. Each shader returns (albedo (N, 3), emissive
(N, 3) or None) for a ``Surface``.
"""
from __future__ import annotations

import numpy as np

from pixloc_ros.data.sim import textures as tx
from pixloc_ros.data.sim.conditions import Condition
from pixloc_ros.data.sim.world import STYLE_BRICK, STYLE_GLASS, STYLE_PANELS, STYLE_PLASTER, Scene
from pixloc_ros.data.sim.surfaces import Surface, box_local, cylinder_frame, snow_color, snow_cover


SHOP_PALETTE = np.array([(0.75, 0.12, 0.10), (0.10, 0.30, 0.65), (0.10, 0.50, 0.25), (0.90, 0.70, 0.10),
                  (0.15, 0.15, 0.18), (0.85, 0.85, 0.82), (0.55, 0.15, 0.50), (0.95, 0.45, 0.10)], np.float32)


def sign_glyphs(cu, cv, cell_w, cell_h, key, seed, fw, density=0.5):
    """Pseudo-text: each ``cell_w`` x ``cell_h`` cell holds a 3x5 bitmap glyph chosen by hash.

    cu, cv: coordinates inside the text block (metres, from its lower-left corner)."""
    ci = np.floor(cu / cell_w).astype(np.int64)
    gx = np.floor((cu - ci * cell_w) / cell_w * 4.0).astype(np.int64)  # 3 columns + spacing
    gy = np.floor(cv / cell_h * 6.0).astype(np.int64)  # 5 rows + spacing
    inside = (gx >= 0) & (gx < 3) & (gy >= 0) & (gy < 5)
    bit = (tx.hash01(key, ci, gx * 8 + gy, seed=seed) < density) & inside
    w = tx._octave_weight(4.0 / cell_w, fw)  # a glyph stroke is cell_w / 4 wide
    return bit * w + (1 - w) * density * 15.0 / 24.0


def shade_building(scene: Scene, s: Surface):
    cond = scene.condition
    prims = scene.primitives
    q = box_local(prims, s.ids, s.p)
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
        pcol = SHOP_PALETTE[(tx.hash01(seed, slot.astype(np.int64), seed=65) * len(SHOP_PALETTE)).astype(np.int64) % len(SHOP_PALETTE)]
        ptxt = sign_glyphs(su - 0.75, z - 1.6, 0.25, 0.32, (seed * 31 + slot).astype(np.int64), 66, fw, 0.5)
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
    glass = glass_color(cond, (vv - sill) / np.maximum(win_h, 0.1), h_win)
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
        shop_glass = glass_color(cond, z / 2.5, inside) * (0.8 + 0.5 * ((display - 0.5) * wd + 0.5))[:, None]
        col = np.where(sh[:, None], tx.mix(col, np.array([0.15, 0.15, 0.16], np.float32), shopframe), col)
        col = np.where(sh[:, None], tx.mix(col, shop_glass, shopwin), col)
        if cond.lamps_on:  # shops lit after sunset
            emissive += np.array([1.0, 0.9, 0.7], np.float32) * (0.45 * shopwin * sh * (0.5 + 0.5 * display))[:, None]
        # Sign band with pseudo-lettering across the shop front.
        band = (z > ground_h - 1.0) & (z < ground_h - 0.25) & sh
        bcol = SHOP_PALETTE[hue % len(SHOP_PALETTE)]
        text_col = np.where((bcol.sum(1) > 1.6)[:, None], np.array([0.1, 0.1, 0.12], np.float32), np.array([0.97, 0.97, 0.95], np.float32))
        letters = sign_glyphs(u - gmargin - 0.3, z - (ground_h - 0.9), 0.42, 0.55, seed, 59, fw)
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
    col = tx.mix(col, snow_color(s), snow_cover(cond, s))
    return col.astype(np.float32), emissive


def glass_color(cond: Condition, t, h):
    """Window glass: dark interior with a reflection of the sky, varying per window ``h``."""
    sky = np.asarray(cond.sky_horizon, np.float32)
    dark = np.array([0.08, 0.09, 0.11], np.float32)
    refl = (0.25 + 0.35 * np.clip(t, 0, 1) + 0.2 * (h - 0.5))
    return tx.mix(dark, sky * 0.75, refl)


def shade_car(scene: Scene, s: Surface, cabin: bool):
    cond = scene.condition
    prims = scene.primitives
    q = box_local(prims, s.ids, s.p)
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
    glass_col = glass_color(cond, z / np.maximum(hh, 0.1), tx.hash01(seed, seed=62))
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
        chars = sign_glyphs(y + 0.22, z - hh * 0.12 - 0.015, 0.062, 0.08, seed, 63, fw, 0.55)
        plate_col = tx.mix(np.array([0.93, 0.93, 0.90], np.float32), np.array([0.05, 0.05, 0.06], np.float32),
                           chars * ((y > -0.22) & (y < 0.22)))
        col = tx.mix(col, plate_col, plate)
    emissive = None
    if cond.lamps_on and not cabin:  # parking lights at dusk
        emissive = np.array([0.3, 0.02, 0.01], np.float32) * tail[:, None]
    col = tx.mix(col, snow_color(s), snow_cover(cond, s, 0.9))
    return col.astype(np.float32), emissive


def shade_wheel(scene: Scene, s: Surface):
    prims = scene.primitives
    h, ang, radial = cylinder_frame(prims, s.ids, s.p)
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


def shade_trunk(scene: Scene, s: Surface):
    prims = scene.primitives
    h, ang, radial = cylinder_frame(prims, s.ids, s.p)
    r = prims.size[s.ids, 0].astype(np.float32)
    seed = prims.params[s.ids, 0].astype(np.int64)
    bark = tx.fbm2(ang * r * 9.0, h * 1.5 + seed % 100, seed=71, octaves=5, fw=s.fw)
    ridges = tx.fbm2(ang * r * 25.0, h * 2.0, seed=72, octaves=2, fw=s.fw)
    v = 0.55 + 0.7 * bark * (0.7 + 0.6 * ridges)
    col = np.array([0.30, 0.25, 0.20], np.float32) * v[:, None]
    col = tx.mix(col, snow_color(s), snow_cover(scene.condition, s, 0.7))
    return col.astype(np.float32), None


def shade_crown(scene: Scene, s: Surface):
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


def shade_pole(scene: Scene, s: Surface):
    P = scene.primitives.params[s.ids]
    base = P[:, 0:3]
    g = tx.fbm2(s.p[:, 0] * 3 + s.p[:, 1] * 3, s.p[:, 2] * 3, seed=91, octaves=4, fw=s.fw)
    band = tx.box_1d(s.p[:, 2], 0.1, 1.1, s.fw)  # a darker painted foot
    col = base * (0.85 + 0.3 * g)[:, None] * (1.0 - 0.45 * band)[:, None]
    return col.astype(np.float32), None


def shade_lamp(scene: Scene, s: Surface):
    col = np.full((len(s.fw), 3), 0.22, np.float32)
    emissive = None
    if scene.condition.lamps_on:
        emissive = np.where((s.face == 4)[:, None], np.array([1.0, 0.85, 0.55], np.float32), 0.0).astype(np.float32)
    return col, emissive


def shade_sign(scene: Scene, s: Surface):
    prims = scene.primitives
    q = box_local(prims, s.ids, s.p)
    half = prims.size[s.ids].astype(np.float32)
    P = prims.params[s.ids]
    plate_col, seed = P[:, 0:3], P[:, 3].astype(np.int64)
    front = s.face == 1
    u, v = -q[:, 1], q[:, 2]
    border = 1.0 - tx.rect(u, v, -half[:, 1] + 0.05, half[:, 1] - 0.05, -half[:, 2] + 0.05, half[:, 2] - 0.05, s.fw)
    symbol = sign_glyphs(u + 0.18, v + 0.2, 0.36, 0.42, seed, 93, s.fw, 0.5) * tx.rect(u, v, -0.18, 0.18, -0.2, 0.22, s.fw)
    white = np.array([0.95, 0.95, 0.95], np.float32)
    col = tx.mix(plate_col, white, np.clip(border + symbol, 0, 1))
    col = np.where(front[:, None], col, np.array([0.55, 0.56, 0.58], np.float32))
    return col.astype(np.float32), None


def shade_bin(scene: Scene, s: Surface):
    h, ang, _ = cylinder_frame(scene.primitives, s.ids, s.p)
    ribs = tx.pulse_train(ang * 0.28, 0.06, 0.5, s.fw)
    col = np.array([0.12, 0.28, 0.16], np.float32) * (0.8 + 0.3 * ribs)[:, None]
    col = np.where((s.face == 2)[:, None], np.array([0.08, 0.08, 0.08], np.float32), col)
    return col.astype(np.float32), None
