"""Generating a street world from a seed (``generate_world``): the street grid, rows of buildings with
their facade parameters, sidewalks, trees, poles, lamps, signs and bins, parking bays with the mapping
day's parked cars, and manhole covers. Deterministic per seed.
"""
from __future__ import annotations

import math

import numpy as np

from pixloc_ros.data.sim.world import (Building, CarSlot, Pole, STYLE_BRICK, STYLE_GLASS, STYLE_PANELS, STYLE_PLASTER, Street,
    Tree, World, WorldConfig, random_car)


_WALL_COLORS = {
    STYLE_BRICK: [(0.55, 0.25, 0.18), (0.62, 0.33, 0.22), (0.48, 0.28, 0.22), (0.66, 0.50, 0.38), (0.42, 0.20, 0.16)],
    STYLE_PLASTER: [(0.86, 0.80, 0.66), (0.78, 0.70, 0.58), (0.70, 0.76, 0.72), (0.90, 0.86, 0.78),
                    (0.80, 0.62, 0.50), (0.66, 0.70, 0.80), (0.88, 0.74, 0.46)],
    STYLE_PANELS: [(0.62, 0.62, 0.60), (0.55, 0.56, 0.58), (0.70, 0.68, 0.62), (0.50, 0.48, 0.46)],
    STYLE_GLASS: [(0.32, 0.40, 0.46), (0.26, 0.32, 0.36), (0.36, 0.42, 0.40)],
}
_SHOP_COLORS = [(0.75, 0.12, 0.10), (0.10, 0.30, 0.65), (0.10, 0.50, 0.25), (0.90, 0.70, 0.10),
                (0.15, 0.15, 0.18), (0.85, 0.85, 0.82), (0.55, 0.15, 0.50), (0.95, 0.45, 0.10)]


def generate_world(seed: int = 0, config: WorldConfig | None = None) -> World:
    """Generate the street world deterministically from ``seed``."""
    config = config or WorldConfig()
    rng = np.random.default_rng(seed)
    X, Y, cx = config.loop_x_m, config.loop_y_m, config.cross_x_m
    nodes = {"A": (0.0, 0.0), "B": (cx, 0.0), "C": (X, 0.0), "D": (X, Y), "E": (cx, Y), "F": (0.0, Y)}
    streets = [Street(a + b, nodes[a], nodes[b]) for a, b in
               (("A", "B"), ("B", "C"), ("C", "D"), ("D", "E"), ("E", "F"), ("F", "A"), ("B", "E"))]
    sidewalks = _sidewalks(config)
    buildings = _buildings(rng, config)
    poles, trees, bins = _street_furniture(rng, config, streets, nodes)
    slots = _car_slots(config, streets, nodes)
    cars = [random_car(rng, i) for i in range(len(slots)) if rng.random() < 0.55]
    manholes = _manholes(rng, config, streets)
    return World(seed, config, nodes, streets, buildings, sidewalks, trees, poles, bins, slots, cars, manholes)


def _sidewalks(config: WorldConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    X, Y, cx = config.loop_x_m, config.loop_y_m, config.cross_x_m
    hw, sw = config.half_road, config.sidewalk_width_m
    rects = []
    for x0, x1 in ((0.0, cx), (cx, X)):  # the ring around each inner block
        y0, y1 = 0.0, Y
        rects += [((x0 + hw, y0 + hw), (x1 - hw, y0 + hw + sw)), ((x0 + hw, y1 - hw - sw), (x1 - hw, y1 - hw)),
                  ((x0 + hw, y0 + hw + sw), (x0 + hw + sw, y1 - hw - sw)),
                  ((x1 - hw - sw, y0 + hw + sw), (x1 - hw, y1 - hw - sw))]
    # the outer ring around the loop
    rects += [((-hw - sw, -hw - sw), (X + hw + sw, -hw)), ((-hw - sw, Y + hw), (X + hw + sw, Y + hw + sw)),
              ((-hw - sw, -hw), (-hw, Y + hw)), ((X + hw, -hw), (X + hw + sw, Y + hw))]
    return [(np.array(a, np.float64), np.array(b, np.float64)) for a, b in rects]


def _building_params(rng: np.random.Generator, tall_backdrop: bool = False) -> np.ndarray:
    """Facade parameters, one row per building:

    0 style, 1-3 wall rgb, 4 floor height, 5 ground floor height, 6 window width, 7 window
    height, 8 window pitch, 9 sill height, 10 has shop front (0/1), 11 shop/sign hue index,
    12 trim brightness, 13 seed, 14 front face code, 15 blank side walls (0/1).
    """
    style = int(rng.choice([STYLE_BRICK, STYLE_PLASTER, STYLE_PANELS, STYLE_GLASS],
                           p=[0.1, 0.1, 0.5, 0.3] if tall_backdrop else [0.35, 0.4, 0.15, 0.1]))
    colors = _WALL_COLORS[style]
    wall = np.array(colors[rng.integers(len(colors))]) * rng.uniform(0.85, 1.1, 3)
    floor_h = rng.uniform(2.9, 3.6)
    pitch = rng.uniform(2.0, 3.6)
    win_w = min(rng.uniform(0.8, 1.7), pitch - 0.5)
    win_h = rng.uniform(1.2, 1.9) if style != STYLE_GLASS else floor_h - 0.5
    sill = rng.uniform(0.7, 1.0) if style != STYLE_GLASS else 0.25
    if style == STYLE_GLASS:
        win_w = pitch - rng.uniform(0.15, 0.35)
    shop = float(rng.random() < (0.0 if tall_backdrop else 0.65))
    ground_h = rng.uniform(3.8, 4.6) if shop else floor_h
    return np.array([style, *np.clip(wall, 0, 1), floor_h, ground_h, win_w, win_h, pitch, sill, shop,
                     rng.integers(len(_SHOP_COLORS)), rng.uniform(0.6, 1.3), rng.integers(1 << 30), 0,
                     float(rng.random() < 0.7)], np.float32)


def _face_toward(normal_xy: tuple[float, float]) -> int:
    """Box face code (axis * 2 + positive) of an axis-aligned outward normal in the xy plane."""
    nx, ny = normal_xy
    if abs(nx) > abs(ny):
        return 0 * 2 + int(nx > 0)
    return 1 * 2 + int(ny > 0)


def _row_of_buildings(rng, start, end, normal, depth_range, height_range, out: list[Building],
                      tall_backdrop=False, gap_prob=0.2):
    """Fill the building line from ``start`` to ``end`` (2D points) with boxes whose front faces
    look along ``normal`` (toward the street); they extend away from it by ``depth_range``."""
    start, end, normal = (np.asarray(v, np.float64) for v in (start, end, normal))
    length = float(np.linalg.norm(end - start))
    along = (end - start) / length
    cursor = 0.0
    while cursor < length - 4.0:
        width = min(rng.uniform(8.0, 18.0) if not tall_backdrop else rng.uniform(18.0, 35.0), length - cursor)
        depth = rng.uniform(*depth_range)
        height = rng.uniform(*height_range)
        setback = rng.uniform(0.0, 1.5) if rng.random() < 0.2 else 0.0
        centre2 = start + along * (cursor + width / 2) - normal * (setback + depth / 2)
        extent_along, extent_normal = width / 2, depth / 2
        half = np.abs(along) * extent_along + np.abs(normal) * extent_normal
        params = _building_params(rng, tall_backdrop)
        face = _face_toward(tuple(normal))
        params[14] = face
        out.append(Building(np.array([centre2[0], centre2[1], height / 2]),
                            np.array([half[0], half[1], height / 2]), face, params))
        cursor += width
        if rng.random() < gap_prob:
            cursor += rng.uniform(2.0, 5.0)  # an alley between two buildings


def _buildings(rng: np.random.Generator, config: WorldConfig) -> list[Building]:
    X, Y, cx = config.loop_x_m, config.loop_y_m, config.cross_x_m
    f = config.frontage
    out: list[Building] = []
    depth, height = (9.0, 15.0), (7.0, 22.0)
    for x0, x1 in ((0.0, cx), (cx, X)):  # inner blocks: four sides each
        _row_of_buildings(rng, (x0 + f, f), (x1 - f, f), (0, -1), depth, height, out)
        _row_of_buildings(rng, (x1 - f, Y - f), (x0 + f, Y - f), (0, 1), depth, height, out)
        _row_of_buildings(rng, (x0 + f, Y - f - 10), (x0 + f, f + 10), (-1, 0), depth, height, out)
        _row_of_buildings(rng, (x1 - f, f + 10), (x1 - f, Y - f - 10), (1, 0), depth, height, out)
    ext = 18.0  # outer rows run past the corners so that a corner view ends on walls
    _row_of_buildings(rng, (X + f + ext, -f), (-f - ext, -f), (0, 1), depth, height, out)
    _row_of_buildings(rng, (-f - ext, Y + f), (X + f + ext, Y + f), (0, -1), depth, height, out)
    _row_of_buildings(rng, (-f, -f), (-f, Y + f), (1, 0), depth, height, out)
    _row_of_buildings(rng, (X + f, Y + f), (X + f, -f), (-1, 0), depth, height, out)
    # A skyline of taller buildings farther out, seen above and between the first rows.
    b = f + 30.0
    bd, bh = (15.0, 25.0), (22.0, 48.0)
    _row_of_buildings(rng, (X + b, -b), (-b, -b), (0, 1), bd, bh, out, True, 0.3)
    _row_of_buildings(rng, (-b, Y + b), (X + b, Y + b), (0, -1), bd, bh, out, True, 0.3)
    _row_of_buildings(rng, (-b, -b + 20), (-b, Y + b - 20), (1, 0), bd, bh, out, True, 0.3)
    _row_of_buildings(rng, (X + b, Y + b - 20), (X + b, -b + 20), (-1, 0), bd, bh, out, True, 0.3)
    return out


def _near_node(p: np.ndarray, nodes, clearance: float) -> bool:
    return any(abs(p[0] - n[0]) < clearance and abs(p[1] - n[1]) < clearance for n in nodes.values())


def _street_furniture(rng, config: WorldConfig, streets, nodes):
    """Lamps, signs, trees and bins along both sidewalks of every street."""
    hw = config.half_road
    poles: list[Pole] = []
    trees: list[Tree] = []
    bins: list[np.ndarray] = []
    clear = config.frontage + 3.0
    for street in streets:
        d, left = street.direction, street.left
        start = np.asarray(street.start)
        for side in (-1.0, 1.0):  # -1: right of the direction of travel, +1: left
            out_normal = left * side  # from the street centre toward this sidewalk
            lamp_phase = rng.uniform(4.0, 16.0)
            lamp_s = [s for s in np.arange(lamp_phase, street.length, 25.0)]
            occupied = []
            for s in lamp_s:
                p = start + d * s + out_normal * (hw + 0.45)
                if _near_node(p, nodes, clear):
                    continue
                poles.append(Pole("lamp", p, rng.uniform(6.5, 7.5), -out_normal, d, np.zeros(3), int(rng.integers(1 << 30))))
                occupied.append(s)
                if rng.random() < 0.5:
                    bins.append(start + d * (s + 1.2) + out_normal * (hw + 0.6))
                    occupied.append(s + 1.2)
            if rng.random() < 0.85:  # a row of street trees on this side
                s = rng.uniform(3.0, 8.0)
                while s < street.length:
                    p = start + d * s + out_normal * (hw + 1.0)
                    if not _near_node(p, nodes, clear) and all(abs(s - o) > 2.5 for o in occupied):
                        crown = rng.uniform(1.6, 2.6)
                        trees.append(Tree(p, rng.uniform(0.12, 0.2), rng.uniform(2.6, 3.4),
                                          np.array([crown, crown * rng.uniform(0.9, 1.1), crown * rng.uniform(1.0, 1.35)]),
                                          int(rng.integers(1 << 30))))
                        occupied.append(s)
                    s += rng.uniform(8.0, 15.0)
            # Signs: at both ends, facing the traffic that approaches the node on this side.
            for end_s, facing in ((street.length - config.frontage - 2.0, -d), (config.frontage + 2.0, d)):
                travel = d if side < 0 else -d  # right-hand traffic on this side
                if np.dot(facing, travel) > 0 or rng.random() < 0.4:
                    continue
                p = start + d * end_s + out_normal * (hw + 0.35)
                color = np.array([(0.80, 0.08, 0.08), (0.08, 0.25, 0.70), (0.95, 0.80, 0.10)][rng.integers(3)])
                poles.append(Pole("sign", p, rng.uniform(2.4, 2.9), -out_normal, facing, color, int(rng.integers(1 << 30))))
    return poles, trees, bins


def _car_slots(config: WorldConfig, streets, nodes) -> list[CarSlot]:
    """Parking bays every ``parking_pitch_m`` along both parking strips, away from junctions."""
    slots = []
    pitch = config.parking_pitch_m
    lateral = config.half_road - 0.5 * config.parking_width_m
    clear = config.frontage + 4.0
    for street in streets:
        d, left = street.direction, street.left
        start = np.asarray(street.start)
        heading = math.atan2(d[1], d[0])
        for side in (-1.0, 1.0):
            for k in range(int(street.length // pitch)):
                s = (k + 0.5) * pitch
                if s < clear or s > street.length - clear:
                    continue
                p = start + d * s + left * side * lateral
                slots.append(CarSlot(p, heading if side < 0 else heading + math.pi))
    return slots


def _manholes(rng, config: WorldConfig, streets) -> np.ndarray:
    out = []
    for street in streets:
        for s in np.arange(rng.uniform(8, 20), street.length - 8, rng.uniform(15, 25)):
            lateral = rng.choice([-1, 1]) * rng.uniform(0.4, 2.5)
            out.append(np.asarray(street.start) + street.direction * s + street.left * lateral)
    return np.array(out, np.float64).reshape(-1, 2)
