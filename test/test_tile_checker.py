"""Tiles checked in a child process (core/maps/tile_checker.py, TileLoader's "process" checker): it
runs at a lower priority in a session of its own, ends with the loader (or the node's process),
and a checker that dies, hangs or cannot start is reported and never stalls or stops the loader."""
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from city_fixtures import build_city_map, cam_from_world

from pixloc_ros.core.maps.mapfile_format import MapCorruptedError, file_identity
from pixloc_ros.core.maps.mapfile import open_map
from pixloc_ros.core.maps.tile_checker import TileChecker
from pixloc_ros.core.maps.tile_loader import TileLoaderConfig
from pixloc_ros.core.maps.tiled_index import TiledMapIndex
from pixloc_ros.core.maps.tiles import split_map, tile_file_name

TILE = 20.0
NEAR_TILE_2_0 = cam_from_world([45.0, 5.0, 1.5], 0.0)  # in tile (2, 0), 5 m from (1, 0)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    root = tmp_path_factory.mktemp("city_checker")
    split_map(open_map(build_city_map(root / "city.pxmap")), root / "tiles", TILE)
    return root / "tiles"


def gone(pid: int) -> bool:
    """The process has ended (no /proc entry, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def nice_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize("own_session", [False, True])
def test_tiles_are_checked_in_a_low_priority_process_that_ends_with_the_loader(tiles, own_session):
    cfg = TileLoaderConfig(load_radius_m=25.0, checker_niceness=12, checker_own_session=own_session)
    index = TiledMapIndex.open(tiles, loader_config=cfg)
    index.retrieve(NEAR_TILE_2_0)
    assert index.loader.wait_idle(60)
    checker = index.loader.checker
    pid = checker.pid
    assert pid is not None and pid != os.getpid() and not gone(pid)
    assert nice_of(pid) == min(19, os.nice(0) + 12)  # a lower priority than this process
    # In the node's session it spends the node's share of the CPU; in its own, it has a group of its own.
    assert (os.getsid(pid) != os.getsid(0)) == own_session
    if own_session and os.path.exists(f"/proc/{pid}/autogroup"):
        with open(f"/proc/{pid}/autogroup") as f:
            assert f.read().split()[-1] == str(nice_of(pid))
    assert len(index.loader.loaded_keys) >= 3 and index.loader.check_seconds > 0
    assert index.health().values["tile_checker"] == f"process (nice +12, pid {pid})"
    for number in np.flatnonzero(index.loader.ready_mask):
        tile, table = index.loader.get(int(number))
        assert tile.fully_verified  # checked (in the child) before it was served
        assert 3 in table._track_ok  # the track-length mask was made on the loader thread
    assert len(index.retrieve(NEAR_TILE_2_0).points) > 0
    index.close()
    assert gone(pid) and checker.pid is None


def test_a_hung_checker_is_killed_reported_and_replaced(tiles, caplog):
    cfg = TileLoaderConfig(load_radius_m=5.0, lookahead_m=0.0, check_timeout_s=1.5)
    index = TiledMapIndex.open(tiles, loader_config=cfg, start_loader=False)
    checker = index.loader.checker
    assert checker.check((0, 0)).ok  # started and answering
    first = checker.pid
    os.kill(first, signal.SIGSTOP)  # hangs (as on a dead network disk)
    index.retrieve(NEAR_TILE_2_0)
    start = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="pixloc_ros.core.maps.tile_loader"):
        index.loader.wait_idle()
    assert time.monotonic() - start < 30
    assert (2, 0) in index.loader.loaded_keys and index.health().level == "ok"  # the new one checked it
    assert checker.pid != first and gone(first)
    assert any("gave no answer within 1.5 s" in r.getMessage() and "killed by signal 9" in r.getMessage()
               for r in caplog.records)
    index.close()


CRASHING_CHECKER = textwrap.dedent("""
    import os, sys
    from pixloc_ros.core.maps import tile_checker, tiles
    real = tiles.TiledMap.open_tile
    def open_tile(self, key, verify=True):
        if tuple(key) == (2, 0):
            os.abort()  # a crash of the checker while it checks this tile
        return real(self, key, verify)
    tiles.TiledMap.open_tile = open_tile
    sys.exit(tile_checker.main(sys.argv[1:]))
""")


def test_a_tile_whose_check_crashes_the_checker_twice_is_reported_and_skipped(tiles, caplog):
    index = TiledMapIndex.open(tiles, loader_config=TileLoaderConfig(load_radius_m=25.0), start_loader=False)
    index.loader.checker = TileChecker(index.tiled, command=[sys.executable, "-c", CRASHING_CHECKER])
    errors = []
    index.loader.on_error = errors.append
    index.retrieve(NEAR_TILE_2_0)
    with caplog.at_level(logging.ERROR, logger="pixloc_ros.core.maps.tile_loader"):
        index.loader.wait_idle()
    health = index.health()
    assert [f.key for f in health.failed] == [(2, 0)] and health.level == "error"
    assert len(errors) == 1 and "(2, 0)" in errors[0] and "killed by signal 6" in errors[0]
    assert "second time" in errors[0]
    assert sum("starting a new one" in r.getMessage() for r in caplog.records) == 1  # the first crash
    assert index.loader.checker.starts == 3  # one crash each time, then one that checked the rest
    assert {(1, 0), (3, 0)} <= set(index.loader.loaded_keys)  # the rest of the map serves
    r = index.retrieve(NEAR_TILE_2_0, num_keyframes=3, max_distance_m=50.0)
    assert len(r.points) > 0
    index.close()


def test_a_checker_that_cannot_start_leaves_the_checks_to_the_loader_thread(tiles, caplog):
    index = TiledMapIndex.open(tiles, loader_config=TileLoaderConfig(load_radius_m=25.0), start_loader=False)
    index.loader.checker = TileChecker(index.tiled, command=[str(tiles / "no-such-interpreter")])
    index.retrieve(NEAR_TILE_2_0)
    with caplog.at_level(logging.ERROR, logger="pixloc_ros.core.maps.tile_loader"):
        index.loader.wait_idle()
    assert index.loader.checker is None and (2, 0) in index.loader.loaded_keys
    assert index.health().values["tile_checker"] == "loader thread"
    assert all(index.loader.get(int(n))[0].fully_verified for n in np.flatnonzero(index.loader.ready_mask))
    assert any("could not start" in r.getMessage() and "loader thread instead" in r.getMessage()
               for r in caplog.records)
    index.close()


def test_the_checker_ends_when_the_process_that_started_it_dies(tiles):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        from city_fixtures import cam_from_world
        from pixloc_ros.core.maps.tile_loader import TileLoaderConfig
        from pixloc_ros.core.maps.tiled_index import TiledMapIndex
        index = TiledMapIndex.open({str(tiles)!r}, loader_config=TileLoaderConfig(load_radius_m=25.0))
        index.retrieve(cam_from_world([45.0, 5.0, 1.5], 0.0))
        index.loader.wait_idle(60)
        print(index.loader.checker.pid, flush=True)
        os._exit(1)  # no close(): as when the node is killed
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 20
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)


def test_a_file_replaced_after_its_check_is_not_taken_as_checked(tiles, tmp_path):
    path = tiles / tile_file_name((1, 0))
    tile = open_map(path)
    checked = file_identity(path)
    assert tile.identity == checked
    with pytest.raises(MapCorruptedError, match="changed between its check and its opening"):
        tile.mark_checked((*checked[:3], checked[3] + 1))  # another modification time
    assert not tile.fully_verified
    tile.mark_checked(checked)
    assert tile.fully_verified
    tile.close()
