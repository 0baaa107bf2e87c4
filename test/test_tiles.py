"""Tiled maps: tiling, round trip, retrieval across tile boundaries, loading ahead, eviction,
damaged tiles (core/maps/tiles.py, core/maps/tile_loader.py, core/maps/tiled_index.py)."""
import json
import math
import time

import numpy as np
import pytest
import torch
from city_fixtures import build_city_map, cam_from_world

from pixloc_ros.core.geometry.camera import Camera
from pixloc_ros.core.maps.mapfile_format import MapFileError
from pixloc_ros.core.maps.mapfile import open_map
from pixloc_ros.core.maps.retrieval import MapIndex
from pixloc_ros.core.maps.open_index import open_map_index
from pixloc_ros.core.maps.tile_loader import TileLoaderConfig
from pixloc_ros.core.maps.tiled_index import TiledMapIndex
from pixloc_ros.core.maps.tiles import (INDEX_NAME, TileError, TileGrid, open_tiled_map, split_map,
    tile_file_name)

TILE = 20.0


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    root = tmp_path_factory.mktemp("city")
    one_file = build_city_map(root / "city.pxmap")
    summary = split_map(open_map(one_file), root / "city_tiles", TILE)
    return one_file, root / "city_tiles", summary


def tiled_index(folder, **cfg) -> TiledMapIndex:
    """Loader without its thread: ``loader.wait_idle()`` does the loading, deterministically."""
    return TiledMapIndex.open(folder, loader_config=TileLoaderConfig(**cfg), start_loader=False)


# ---- the grid ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [7.0, 20.0, 250.0])
def test_grid_keys_contain_their_positions_and_keys_within_is_exact(size):
    rng = np.random.default_rng(3)
    grid = TileGrid(size, (3.0, -11.0))
    xy = rng.uniform(-2000, 2000, (500, 2))
    keys = grid.keys_of(xy)
    lo = np.asarray(grid.origin_xy) + keys * size
    assert np.all(xy >= lo - 1e-9) and np.all(xy < lo + size + 1e-9)
    for p in xy[:20]:
        radius = rng.uniform(0, 3 * size)
        near = grid.keys_within(p, radius)
        assert grid.key_of(p) in near and near[0] == grid.key_of(p)
        # every tile within the radius is listed, none beyond it, nearest first
        i0, j0 = grid.key_of(p)
        span = int(radius // size) + 2
        brute = {(i, j) for i in range(i0 - span, i0 + span + 1) for j in range(j0 - span, j0 + span + 1)
                 if grid.distance((i, j), p) <= radius}
        assert set(near) == brute
        d = [grid.distance(k, p) for k in near]
        assert d == sorted(d)


def test_grid_rejects_a_bad_size():
    for bad in (0.0, -5.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="tile size"):
            TileGrid(bad)


# ---- round trip -------------------------------------------------------------------------------
def test_split_round_trip_keeps_every_keyframe_observation_and_point(city):
    one_file, folder, summary = city
    m = open_map(one_file)
    tiled = open_tiled_map(folder, expected_fingerprint=m.weights_fingerprint)
    assert summary.num_tiles == len(tiled.entries) > 4
    assert tiled.index.num_keyframes == m.num_keyframes == summary.num_keyframes
    assert summary.num_observations == m.num_observations == tiled.num_observations
    used = np.unique(np.concatenate([m.keyframe_observations(i).point_index for i in range(m.num_keyframes)]))
    assert tiled.num_points == len(used)
    assert summary.num_point_rows > tiled.num_points  # boundary points are stored in each tile that sees them
    row_of_id = {int(k): i for i, k in enumerate(m.keyframe_ids)}
    assert sorted(tiled.index.keyframe_ids.tolist()) == sorted(row_of_id)
    for entry in tiled.entries:
        tile = tiled.open_tile(entry.key)
        centers = -np.einsum("kji,kj->ki", tile.keyframe_R, tile.keyframe_t)
        assert np.all(TileGrid(TILE).keys_of(centers) == entry.key)  # keyframes lie in their tile
        for local, kid in enumerate(tile.keyframe_ids):
            a, b = tile.keyframe_observations(local), m.keyframe_observations(row_of_id[int(kid)])
            for x, y in zip(a.arrays()[1:], b.arrays()[1:]):
                assert np.array_equal(x, y)  # uv, confidence, every level's features: bit-identical
            assert np.array_equal(tile.point_ids[a.point_index], m.point_ids[b.point_index])
            assert np.array_equal(tile.point_xyz[a.point_index], m.point_xyz[b.point_index])
            assert np.array_equal(tile.point_track_length[a.point_index], m.point_track_length[b.point_index])
            np.testing.assert_array_equal(tile.keyframe_R[local], m.keyframe_R[row_of_id[int(kid)]])
        tile.close()


def test_a_tile_is_a_map_and_the_index_is_not(city):
    one_file, folder, _ = city
    tile_path = folder / tile_file_name((2, 0))
    tile = MapIndex.open(tile_path)
    assert 0 < tile.num_keyframes < MapIndex.open(one_file).num_keyframes
    with pytest.raises(MapFileError, match="index of a tiled map"):
        MapIndex.open(folder / INDEX_NAME)
    assert isinstance(open_map_index(folder), TiledMapIndex)
    assert isinstance(open_map_index(folder / INDEX_NAME), TiledMapIndex)
    assert type(open_map_index(one_file)) is MapIndex


def test_other_weights_are_refused_at_open(city):
    _, folder, _ = city
    with pytest.raises(MapFileError, match="weights"):
        TiledMapIndex.open(folder, expected_fingerprint="0" * 64, start_loader=False)


# ---- retrieval along a drive ------------------------------------------------------------------
def drive(reverse=False):
    """Priors 0.7 m apart along street A eastwards, then left onto street B northwards (or A
    westwards from x = 60), a few decimetres off the keyframes, heading along the street."""
    rng = np.random.default_rng(5)
    out = []
    xs = np.arange(60.0, 1.0, -0.7) if reverse else np.arange(1.0, 47.0, 0.7)
    for x in xs:
        out.append(cam_from_world([x + rng.normal(0, 0.2), 5.0 + rng.normal(0, 0.5), 1.5], math.pi if reverse else 0.0))
    if not reverse:
        for y in np.arange(5.5, 38.0, 0.7):
            out.append(cam_from_world([47.0 + rng.normal(0, 0.5), y, 1.5], math.pi / 2))
    return out


def assert_same_points(a, b):
    assert a.keyframe_ids.tolist() == b.keyframe_ids.tolist()
    pa, pb = a.points, b.points
    assert len(pa) == len(pb) > 0
    assert torch.equal(pa.point_ids, pb.point_ids) and torch.equal(pa.keyframe_ids, pb.keyframe_ids)
    assert torch.equal(pa.xyz, pb.xyz)
    for l in range(3):
        assert torch.equal(pa.features[l], pb.features[l]) and torch.equal(pa.confidences[l], pb.confidences[l])


@pytest.mark.parametrize("mode,reverse", [("observations", False), ("averaged", False), ("observations", True)])
def test_drive_across_tile_boundaries_retrieves_what_the_one_file_map_does(city, mode, reverse):
    one_file, folder, _ = city
    reference = MapIndex.open(one_file)
    index = tiled_index(folder, load_radius_m=25.0, lookahead_m=20.0, max_loaded_tiles=6)
    camera = Camera.from_params(640, 480, 400.0, 400.0, 319.5, 239.5)
    priors = drive(reverse)
    index.prefetch(-priors[0][:3, :3].T @ priors[0][:3, 3])
    index.loader.wait_idle()
    tiles_seen, crossings = set(), 0
    for T in priors:
        expected = reference.retrieve(T, camera=camera, num_keyframes=3, mode=mode)
        got = index.retrieve(T, camera=camera, num_keyframes=3, mode=mode)
        assert_same_points(got, expected)
        tiles = {index.tiled.grid.key_of(reference.keyframe_centers[reference.keyframe_ids.tolist().index(k)])
                 for k in got.keyframe_ids}
        crossings += len(tiles) > 1  # a frame at a boundary: keyframes (and points) of two tiles
        tiles_seen |= tiles
        # Between frames the loader thread has time to open what the last prior asked for.
        index.loader.wait_idle()
    assert crossings >= 3 and len(tiles_seen) >= 4
    assert len(index.loader.loaded_keys) <= 6
    index.close()


def test_the_loader_loads_ahead_in_the_direction_of_travel(city):
    _, folder, _ = city
    index = tiled_index(folder, load_radius_m=5.0, lookahead_m=30.0, keep_margin_m=5.0, min_motion_m=1.0)
    for x in (21.0, 23.0, 25.0):  # eastwards along street A, inside tile (1, 0)
        index.retrieve(cam_from_world([x, 5.0, 1.5], 0.0))
    index.loader.wait_idle()
    assert (1, 0) in index.loader.loaded_keys and (2, 0) in index.loader.loaded_keys  # 30 m ahead
    assert (0, 0) not in index.loader.loaded_keys  # behind
    for x in (23.0, 21.0, 19.0):  # turn round: westwards
        index.retrieve(cam_from_world([x, 5.0, 1.5], math.pi))
    index.loader.wait_idle()
    assert {(0, 0), (1, 0)} <= set(index.loader.loaded_keys) and (2, 0) not in index.loader.loaded_keys


def test_a_keyframe_whose_tile_is_not_loaded_is_not_used_and_the_reason_is_given(city):
    one_file, folder, _ = city
    index = tiled_index(folder)
    T = cam_from_world([30.0, 5.0, 1.5], 0.0)
    r = index.retrieve(T)  # nothing loaded yet: nothing to read, no waiting
    assert len(r.points) == 0 and len(r.keyframe_ids) == 0
    assert "still loading" in index.unavailable_reason([30.0, 5.0, 1.5])
    assert index.health().level == "warn"
    index.loader.wait_idle()
    assert_same_points(index.retrieve(T), MapIndex.open(one_file).retrieve(T))
    assert index.unavailable_reason([30.0, 5.0, 1.5]) is None and index.health().level == "ok"


# ---- eviction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("threaded", [False, True])
def test_eviction_keeps_the_number_of_loaded_tiles_bounded(city, threaded):
    _, folder, _ = city
    cfg = TileLoaderConfig(load_radius_m=15.0, lookahead_m=20.0, keep_margin_m=5.0, max_loaded_tiles=3)
    index = TiledMapIndex.open(folder, loader_config=cfg, start_loader=threaded)
    most, history = 0, []
    for T in drive() + drive(reverse=True):
        index.retrieve(T)
        assert index.loader.wait_idle(timeout_s=30)
        loaded = index.loader.loaded_keys
        most = max(most, len(loaded))
        history.append(set(loaded))
        c = -T[:3, :3].T @ T[:3, 3]
        for key in loaded:  # only tiles near the car (or the point ahead of it) stay open
            assert index.tiled.grid.distance(key, c) <= 15.0 + 20.0 + 5.0 + 1e-9
    assert most == 3 and index.loader.evictions >= 5
    assert len(set().union(*history)) >= 6  # the drive went through more tiles than were ever open at once
    index.close()
    assert index.loader.loaded_keys == []


# ---- damaged tiles ----------------------------------------------------------------------------
@pytest.fixture
def city_copy(city, tmp_path):
    import shutil
    one_file, folder, _ = city
    shutil.copytree(folder, tmp_path / "tiles")
    return one_file, tmp_path / "tiles"


def _flip_observation_byte(path):
    raw = json.loads(_header_json(path))
    entry = raw["arrays"]["obs_feature_1"]
    offset = entry["offset"] + entry["nbytes"] // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _header_json(path):
    from pixloc_ros.core.maps.mapfile_format import PREAMBLE
    with open(path, "rb") as f:
        _, _, _, offset, length, _ = PREAMBLE.unpack(f.read(PREAMBLE.size))
        f.seek(offset)
        return f.read(length).decode()


@pytest.mark.parametrize("damage,checker", [("flipped_byte", "process"), ("missing", "process"), ("truncated", "process"),
                                            ("foreign", "process"), ("flipped_byte", "thread")])
def test_a_damaged_tile_is_reported_and_skipped_while_the_rest_keeps_serving(city_copy, damage, checker, tmp_path):
    one_file, folder = city_copy
    bad_key = (2, 0)
    bad = folder / tile_file_name(bad_key)
    if damage == "flipped_byte":
        _flip_observation_byte(bad)
    elif damage == "missing":
        bad.unlink()
    elif damage == "truncated":
        with open(bad, "r+b") as f:
            f.truncate(bad.stat().st_size - 100)
    else:  # a tile of another build of the same area (other features): not this map's tile
        other = build_city_map(tmp_path / "other.pxmap", seed=9)
        split_map(open_map(other), tmp_path / "other_tiles", TILE)
        bad.write_bytes((tmp_path / "other_tiles" / tile_file_name(bad_key)).read_bytes())
    errors = []
    index = TiledMapIndex.open(folder, loader_config=TileLoaderConfig(load_radius_m=25.0, checker=checker),
                               start_loader=False)
    assert (index.loader.checker is not None) == (checker == "process")
    index.loader.on_error = errors.append
    reference = MapIndex.open(one_file)
    T = cam_from_world([45.0, 5.0, 1.5], 0.0)  # in tile (2, 0), near tile (1, 0)... (2, 0) is 5 m ahead
    index.retrieve(T)
    index.loader.wait_idle()
    health = index.health()
    assert health.level == "error" and [f.key for f in health.failed] == [bad_key]
    assert len(errors) == 1 and str(bad_key) in errors[0]
    expect = {"flipped_byte": "CRC-32", "missing": "missing", "truncated": "truncated",
              "foreign": "does not belong"}[damage]
    assert expect in errors[0] and expect in health.message
    assert expect in index.unavailable_reason([45.0, 5.0, 1.5])
    # Near the bad tile: only keyframes of good tiles, each with exactly its one-file points.
    r = index.retrieve(T, num_keyframes=3, max_distance_m=50.0)
    bad_rows = set(np.flatnonzero(index.tiled.keyframe_tile == index.tiled.entries.index(index.tiled.tiles[bad_key])))
    assert len(r.keyframe_ids) == 3 and not set(r.keyframe_indices.tolist()) & bad_rows
    for kid in r.keyframe_ids:
        own = torch.as_tensor([int(kid)])
        got = r.points.select(torch.isin(r.points.keyframe_ids, own))
        want = reference.retrieve(reference.keyframe_cam_from_world[reference.keyframe_ids.tolist().index(kid)],
                                  num_keyframes=1).points
        assert torch.equal(got.point_ids, want.point_ids)
    # Elsewhere the map serves as before.
    far = cam_from_world([10.0, 5.0, 1.5], 0.0)
    index.retrieve(far)
    index.loader.wait_idle()
    assert_same_points(index.retrieve(far), reference.retrieve(far))
    assert index.health().level == "error"  # the failure stays reported


def test_the_start_up_check_reports_bad_tiles_without_failing(city_copy):
    _, folder = city_copy
    (folder / tile_file_name((3, 0))).unlink()
    index = tiled_index(folder)
    problems = index.verify()
    assert len(problems) == 1 and "(3, 0)" in problems[0] and "missing" in problems[0]
    assert index.health().level == "error" and [f.key for f in index.health().failed] == [(3, 0)]
    T = cam_from_world([30.0, 5.0, 1.5], 0.0)
    index.retrieve(T)
    index.loader.wait_idle()
    assert len(index.retrieve(T).points) > 0  # the rest serves


def test_a_corrupt_block_met_without_background_verification_drops_the_tile(city_copy):
    _, folder = city_copy
    _flip_observation_byte(folder / tile_file_name((1, 0)))
    index = tiled_index(folder, verify=False, load_radius_m=25.0)
    T = cam_from_world([30.0, 5.0, 1.5], 0.0)
    index.retrieve(T)
    index.loader.wait_idle()
    assert (1, 0) in index.loader.loaded_keys  # opened: the header and small arrays are fine
    hit = False
    for x in np.arange(21.0, 40.0, 1.0):  # touch every keyframe of the tile until the bad block
        index.retrieve(cam_from_world([x, 5.0, 1.5], 0.0), num_keyframes=4)
        if index.loader.failure((1, 0)) is not None:
            hit = True
            break
    assert hit and (1, 0) not in index.loader.loaded_keys and index.health().level == "error"
    assert "CRC-32" in index.loader.failure((1, 0)).message


def test_a_damaged_index_fails_at_start(city_copy):
    _, folder = city_copy
    index_path = folder / INDEX_NAME
    data = bytearray(index_path.read_bytes())
    data[-5] ^= 0xFF  # in the header (JSON at the end)
    index_path.write_bytes(bytes(data))
    with pytest.raises(MapFileError, match="header checksum"):
        open_map_index(folder)


def test_verify_on_open_checks_every_tile(city_copy):
    _, folder = city_copy
    TiledMapIndex.open(folder, verify=True, start_loader=False).close()
    _flip_observation_byte(folder / tile_file_name((3, 0)))
    with pytest.raises(TileError, match=r"\(3, 0\).*CRC-32"):
        TiledMapIndex.open(folder, verify=True, start_loader=False)


def test_the_background_thread_serves_without_blocking_the_caller(city):
    _, folder, _ = city
    index = TiledMapIndex.open(folder, loader_config=TileLoaderConfig(load_radius_m=25.0))
    T = cam_from_world([30.0, 5.0, 1.5], 0.0)
    index.retrieve(T)
    deadline = time.monotonic() + 30
    while not len(index.retrieve(T).points) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(index.retrieve(T).points) > 0 and index.loader.loads >= 1
    index.close()
