"""The synthetic street world: a loop of streets with a cross street, buildings, trees, poles,
parked cars and road markings (``generate.generate_world`` makes one from a seed).

Frames and units: the world frame is the map frame, metres, z up, the ground is the plane
z = 0. Streets run along x or y. Nodes of the street graph (centre-line corners/junctions),
with the default ``WorldConfig``::

    F(0,80) ------ E(60,80) ------ D(120,80)
      |               |               |
    A(0,0)  ------ B(60,0)  ------ C(120,0)

``World`` holds the semantic objects (what a person would name); ``World.scene(condition)``
turns them into flat ``Primitives`` arrays for the renderer, applying the per-condition
variants (parked cars moved or gone, foliage colour or bare trees).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from pixloc_ros.data.sim.conditions import Condition, get_condition


class Shape(IntEnum):
    """Geometric primitive types the renderer intersects."""

    BOX = 0  # centre (3,), half extents (3,), yaw about z
    CYLINDER = 1  # base centre (3,), unit axis (3,), radius, length; capped
    ELLIPSOID = 2  # centre (3,), axis-aligned radii (3,)


class Kind(IntEnum):
    """Material of a primitive: picks the shader in ``render.py``."""

    GROUND = 0  # the plane z = 0 (implicit, not in Primitives)
    BUILDING = 1
    SIDEWALK = 2
    CAR_BODY = 3
    CAR_CABIN = 4
    WHEEL = 5
    TRUNK = 6
    CROWN = 7
    POLE = 8
    LAMP_HEAD = 9
    SIGN = 10
    BIN = 11


NUM_PARAMS = 16  # per-primitive material parameters (meaning per Kind, see the builders below)


@dataclass(frozen=True)
class WorldConfig:
    """Street layout; the defaults give a 400 m loop plus an 80 m cross street."""

    loop_x_m: float = 120.0  # length of the loop along x (centre lines)
    loop_y_m: float = 80.0  # length of the loop along y
    cross_x_m: float = 60.0  # x of the cross street joining the two long sides (two T junctions)
    road_width_m: float = 11.0  # kerb to kerb: 2 driving lanes + 2 parking strips
    parking_width_m: float = 2.2  # parking strip along each kerb
    sidewalk_width_m: float = 3.0
    sidewalk_height_m: float = 0.12
    lane_offset_m: float = 1.65  # centre of the right driving lane from the centre line
    parking_pitch_m: float = 6.0  # parking bay length (bay ticks are painted at this pitch)

    @property
    def half_road(self) -> float:
        return 0.5 * self.road_width_m

    @property
    def frontage(self) -> float:
        """Distance from a street's centre line to the building line."""
        return self.half_road + self.sidewalk_width_m


@dataclass(frozen=True)
class Street:
    """A straight street between two graph nodes; ``s`` runs from ``start`` to ``end``."""

    name: str  # e.g. "AB"
    start: tuple[float, float]
    end: tuple[float, float]

    @property
    def length(self) -> float:
        return float(math.hypot(self.end[0] - self.start[0], self.end[1] - self.start[1]))

    @property
    def direction(self) -> np.ndarray:
        """(2,) unit vector from start to end."""
        d = np.subtract(self.end, self.start, dtype=np.float64)
        return d / np.linalg.norm(d)

    @property
    def left(self) -> np.ndarray:
        """(2,) unit normal to the left of ``direction``."""
        d = self.direction
        return np.array([-d[1], d[0]])


@dataclass
class Building:
    """A box building; its facade style is given by ``params`` (see ``_building_params``)."""

    center: np.ndarray  # (3,) box centre, metres
    half: np.ndarray  # (3,) half extents along x, y, z
    front_face: int  # box face code facing the street (axis * 2 + (normal positive))
    params: np.ndarray  # (NUM_PARAMS,) facade style


@dataclass
class Tree:
    position: np.ndarray  # (2,) trunk base on the sidewalk
    trunk_radius: float
    trunk_height: float
    crown_radii: np.ndarray  # (3,) ellipsoid radii
    seed: int


@dataclass
class Pole:
    """A street lamp (``kind`` "lamp") or a sign post (``kind`` "sign")."""

    kind: str
    position: np.ndarray  # (2,)
    height: float
    toward_road: np.ndarray  # (2,) unit vector from the pole to the road
    facing: np.ndarray  # (2,) unit normal of a sign plate (faces approaching traffic)
    color: np.ndarray  # (3,) sign plate colour
    seed: int


@dataclass
class CarSlot:
    """A parking bay: centre on the ground, heading of a car parked in it."""

    position: np.ndarray  # (2,)
    yaw: float  # radians, heading of a parked car (travel direction of that side)


@dataclass
class ParkedCar:
    slot: int  # index into World.car_slots
    shift: float  # metres along the heading, from the slot centre
    lateral: float  # metres to the car's left
    yaw_jitter: float  # radians
    length: float
    width: float
    body_height: float  # top of the body above ground
    cabin_height: float  # top of the cabin above ground
    van: bool
    color: np.ndarray  # (3,) paint
    seed: int


@dataclass
class Primitives:
    """Flat arrays of everything the renderer intersects (P primitives)."""

    shape: np.ndarray  # (P,) int8 Shape
    kind: np.ndarray  # (P,) int16 Kind
    center: np.ndarray  # (P, 3) float64 box/ellipsoid centre, cylinder base centre
    size: np.ndarray  # (P, 3) float64 box half extents / ellipsoid radii / cylinder (radius, length, 0)
    axis: np.ndarray  # (P, 3) float64 cylinder unit axis; box: (cos yaw, sin yaw, 0)
    params: np.ndarray  # (P, NUM_PARAMS) float32 material parameters
    aabb_min: np.ndarray  # (P, 3)
    aabb_max: np.ndarray  # (P, 3)

    def __len__(self) -> int:
        return int(self.shape.shape[0])


@dataclass
class Scene:
    """What the renderer needs for one condition: primitives plus the ground description."""

    world: "World"
    condition: Condition
    primitives: Primitives
    cache: dict = field(default_factory=dict, repr=False)  # renderer's per-scene data (shadow map)


@dataclass
class World:
    """The semantic street world generated by ``generate_world``."""

    seed: int
    config: WorldConfig
    nodes: dict[str, tuple[float, float]]
    streets: list[Street]
    buildings: list[Building]
    sidewalks: list[tuple[np.ndarray, np.ndarray]]  # (min xy, max xy) rectangles, raised kerbs
    trees: list[Tree]
    poles: list[Pole]
    bins: list[np.ndarray]  # (2,) positions of litter bins
    car_slots: list[CarSlot]
    cars: list[ParkedCar]  # the mapping day's parked cars
    manholes: np.ndarray  # (M, 2) manhole cover centres on the road
    _scenes: dict = field(default_factory=dict, repr=False, compare=False)

    def cars_for(self, condition: Condition | str) -> list[ParkedCar]:
        """Parked cars on the day of ``condition``: the mapping cars with ``car_change`` of them
        moved, replaced or removed, and some empty bays filled. Deterministic per (seed, name)."""
        condition = get_condition(condition)
        if condition.car_change <= 0:
            return list(self.cars)
        rng = np.random.default_rng([self.seed, zlib.crc32(condition.name.encode())])
        occupied = {c.slot for c in self.cars}
        cars: list[ParkedCar] = []
        for car in self.cars:
            if rng.random() >= condition.car_change:
                cars.append(car)
                continue
            action = rng.random()
            if action < 0.4:
                continue  # left
            if action < 0.7:  # same car, parked a little differently
                cars.append(ParkedCar(**{**car.__dict__, "shift": float(rng.uniform(-1.2, 1.2)),
                                         "lateral": float(rng.uniform(-0.2, 0.2))}))
            else:  # another car in the bay
                cars.append(random_car(rng, car.slot))
        for slot in range(len(self.car_slots)):
            if slot not in occupied and rng.random() < 0.5 * condition.car_change:
                cars.append(random_car(rng, slot))
        return cars

    def scene(self, condition: Condition | str) -> Scene:
        """The renderable scene for ``condition`` (cached per condition name)."""
        condition = get_condition(condition)
        key = condition
        if key not in self._scenes:
            self._scenes[key] = Scene(self, condition, _build_primitives(self, condition))
        return self._scenes[key]

    def __getstate__(self):  # scenes are rebuilt on demand in worker processes
        state = dict(self.__dict__)
        state["_scenes"] = {}
        return state


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------

# Facade styles (params[0]).
STYLE_BRICK, STYLE_PLASTER, STYLE_PANELS, STYLE_GLASS = 0, 1, 2, 3
_CAR_COLORS = [(0.85, 0.85, 0.86), (0.08, 0.08, 0.09), (0.45, 0.47, 0.50), (0.65, 0.07, 0.06),
               (0.10, 0.20, 0.50), (0.75, 0.76, 0.78), (0.20, 0.35, 0.25), (0.90, 0.75, 0.15),
               (0.35, 0.15, 0.10), (0.95, 0.95, 0.95), (0.25, 0.45, 0.70)]


def random_car(rng: np.random.Generator, slot: int) -> ParkedCar:
    """A random parked car (a van 15 % of the time) in bay ``slot``, colour and placement from ``rng``."""
    van = bool(rng.random() < 0.15)
    length = rng.uniform(4.8, 5.4) if van else rng.uniform(3.9, 4.8)
    return ParkedCar(slot, float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.12, 0.12)),
                     float(np.radians(rng.uniform(-2.0, 2.0))), length, rng.uniform(1.72, 1.9),
                     rng.uniform(0.9, 1.05), rng.uniform(1.85, 2.1) if van else rng.uniform(1.38, 1.55), van,
                     np.array(_CAR_COLORS[rng.integers(len(_CAR_COLORS))]) * rng.uniform(0.9, 1.05),
                     int(rng.integers(1 << 30)))


# ---------------------------------------------------------------------------------------------
# Scene assembly
# ---------------------------------------------------------------------------------------------

class _PrimitiveList:
    """Accumulates primitives as rows, then packs them into ``Primitives``."""

    def __init__(self):
        self.rows: list[tuple] = []

    def box(self, kind, center, half, yaw=0.0, params=()):
        self.rows.append((Shape.BOX, kind, center, half, (math.cos(yaw), math.sin(yaw), 0.0), params))

    def cylinder(self, kind, base, axis, radius, length, params=()):
        axis = np.asarray(axis, np.float64)
        self.rows.append((Shape.CYLINDER, kind, base, (radius, length, 0.0), axis / np.linalg.norm(axis), params))

    def ellipsoid(self, kind, center, radii, params=()):
        self.rows.append((Shape.ELLIPSOID, kind, center, radii, (0.0, 0.0, 1.0), params))

    def pack(self) -> Primitives:
        n = len(self.rows)
        shape = np.array([r[0] for r in self.rows], np.int8)
        kind = np.array([r[1] for r in self.rows], np.int16)
        center = np.array([r[2] for r in self.rows], np.float64).reshape(n, 3)
        size = np.array([r[3] for r in self.rows], np.float64).reshape(n, 3)
        axis = np.array([r[4] for r in self.rows], np.float64).reshape(n, 3)
        params = np.zeros((n, NUM_PARAMS), np.float32)
        for i, r in enumerate(self.rows):
            p = np.asarray(r[5], np.float32).ravel()
            params[i, :len(p)] = p
        lo, hi = _aabbs(shape, center, size, axis)
        return Primitives(shape, kind, center, size, axis, params, lo, hi)


def _aabbs(shape, center, size, axis):
    lo = np.empty_like(center)
    hi = np.empty_like(center)
    box = shape == Shape.BOX
    c, s = axis[box, 0], axis[box, 1]
    ex = np.abs(c) * size[box, 0] + np.abs(s) * size[box, 1]
    ey = np.abs(s) * size[box, 0] + np.abs(c) * size[box, 1]
    ext = np.stack([ex, ey, size[box, 2]], -1)
    lo[box], hi[box] = center[box] - ext, center[box] + ext
    cyl = shape == Shape.CYLINDER
    a, r, length = axis[cyl], size[cyl, 0:1], size[cyl, 1:2]
    p0, p1 = center[cyl], center[cyl] + a * length
    # Exact AABB of a capped cylinder: the end discs extend r * sqrt(1 - a_i^2) along axis i.
    disc = r * np.sqrt(np.clip(1.0 - a * a, 0.0, 1.0))
    lo[cyl], hi[cyl] = np.minimum(p0, p1) - disc, np.maximum(p0, p1) + disc
    ell = shape == Shape.ELLIPSOID
    lo[ell], hi[ell] = center[ell] - size[ell], center[ell] + size[ell]
    return lo, hi


def _build_primitives(world: World, condition: Condition) -> Primitives:
    cfg = world.config
    prims = _PrimitiveList()
    for b in world.buildings:
        prims.box(Kind.BUILDING, b.center, b.half, 0.0, b.params)
    for lo, hi in world.sidewalks:
        centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, cfg.sidewalk_height_m / 2])
        half = np.array([(hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2, cfg.sidewalk_height_m / 2])
        prims.box(Kind.SIDEWALK, centre, half, 0.0, [zlib.crc32(lo.tobytes()) % 100000])
    z0 = cfg.sidewalk_height_m
    for tree in world.trees:
        _add_tree(prims, tree, condition, z0)
    for pole in world.poles:
        _add_pole(prims, pole, z0)
    for k, p in enumerate(world.bins):
        prims.cylinder(Kind.BIN, (p[0], p[1], z0), (0, 0, 1), 0.28, 0.95, [k])
    for car in world.cars_for(condition):
        _add_car(prims, world.car_slots[car.slot], car)
    return prims.pack()


def _add_tree(prims: _PrimitiveList, tree: Tree, condition: Condition, z0: float):
    x, y = tree.position
    rng = np.random.default_rng(tree.seed)
    top = z0 + tree.trunk_height
    prims.cylinder(Kind.TRUNK, (x, y, z0), (0, 0, 1), tree.trunk_radius, tree.trunk_height + 0.6, [tree.seed % 9973])
    hue = rng.integers(1 << 20)
    if condition.foliage == "bare":
        # Winter: the crown is gone; a leader and a few limbs show the tree's structure.
        prims.cylinder(Kind.TRUNK, (x, y, top), (0, 0, 1), tree.trunk_radius * 0.6, tree.crown_radii[2] * 1.4, [tree.seed % 9973])
        for k in range(6):
            az = rng.uniform(0, 2 * np.pi)
            el = np.radians(rng.uniform(30, 65))
            direction = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))
            base_z = top + rng.uniform(-0.3, 0.8)
            prims.cylinder(Kind.TRUNK, (x, y, base_z), direction, tree.trunk_radius * rng.uniform(0.3, 0.45),
                           tree.crown_radii[0] * rng.uniform(0.9, 1.3), [tree.seed % 9973])
        return
    colors = condition.foliage_colors
    color = np.asarray(colors[hue % len(colors)], np.float32) * rng.uniform(0.9, 1.1)
    scale = 1.0 if condition.foliage == "summer" else rng.uniform(0.75, 1.0)
    radii = tree.crown_radii * scale
    centre = np.array([x, y, top + radii[2] * 0.55])
    prims.ellipsoid(Kind.CROWN, centre, radii * 0.85, [*color, tree.seed % 9973, scale])
    # Lobes around the core break the silhouette of a single ellipsoid.
    for k in range(5):
        az = rng.uniform(0, 2 * np.pi)
        el = rng.uniform(-0.3, 0.9)
        offset = np.array([np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)]) * radii * 0.55
        prims.ellipsoid(Kind.CROWN, centre + offset, radii * rng.uniform(0.45, 0.6),
                        [*(color * rng.uniform(0.9, 1.1)), tree.seed % 9973, scale])


def _add_pole(prims: _PrimitiveList, pole: Pole, z0: float):
    x, y = pole.position
    if pole.kind == "lamp":
        prims.cylinder(Kind.POLE, (x, y, z0), (0, 0, 1), 0.09, pole.height, [0.42, 0.44, 0.46, pole.seed % 997])
        arm = pole.toward_road * 1.6
        mid = np.array([x + arm[0] / 2, y + arm[1] / 2, z0 + pole.height - 0.1])
        yaw = math.atan2(pole.toward_road[1], pole.toward_road[0])
        prims.box(Kind.POLE, mid, (0.8, 0.05, 0.05), yaw, [0.42, 0.44, 0.46, pole.seed % 997])
        head = np.array([x + arm[0], y + arm[1], z0 + pole.height - 0.22])
        prims.box(Kind.LAMP_HEAD, head, (0.35, 0.16, 0.09), yaw, [pole.seed % 997])
    else:
        prims.cylinder(Kind.POLE, (x, y, z0), (0, 0, 1), 0.04, pole.height, [0.60, 0.62, 0.64, pole.seed % 997])
        yaw = math.atan2(pole.facing[1], pole.facing[0])
        plate = np.array([x + pole.facing[0] * 0.06, y + pole.facing[1] * 0.06, z0 + pole.height - 0.35])
        prims.box(Kind.SIGN, plate, (0.02, 0.33, 0.33), yaw, [*pole.color, pole.seed % 997])


def _add_car(prims: _PrimitiveList, slot: CarSlot, car: ParkedCar):
    yaw = slot.yaw + car.yaw_jitter
    fwd = np.array([math.cos(slot.yaw), math.sin(slot.yaw)])
    left = np.array([-fwd[1], fwd[0]])
    c2 = slot.position + fwd * car.shift + left * car.lateral
    f3 = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    l3 = np.array([-f3[1], f3[0], 0.0])
    clearance = 0.28
    paint = [*np.clip(car.color, 0, 1), car.seed % 99991, float(car.van), car.length, car.width]
    body_h = car.body_height - clearance
    prims.box(Kind.CAR_BODY, (c2[0], c2[1], clearance + body_h / 2), (car.length / 2, car.width / 2, body_h / 2), yaw, paint)
    if car.van:
        cab_len, cab_shift = car.length * 0.78, -car.length * 0.08
    else:
        cab_len, cab_shift = car.length * 0.5, -car.length * 0.06
    cab_h = car.cabin_height - car.body_height
    cab_c = np.array([c2[0], c2[1], car.body_height + cab_h / 2]) + f3 * cab_shift
    prims.box(Kind.CAR_CABIN, cab_c, (cab_len / 2, car.width / 2 - 0.08, cab_h / 2), yaw, paint)
    wheel_r, wheel_w = 0.32, 0.22
    for along in (car.length * 0.33, -car.length * 0.33):
        for side in (1.0, -1.0):
            outer = np.array([c2[0], c2[1], wheel_r]) + f3 * along + l3 * side * (car.width / 2 + 0.01)
            prims.cylinder(Kind.WHEEL, outer, -l3 * side, wheel_r, wheel_w, [car.seed % 997])
