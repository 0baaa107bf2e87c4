"""Background loading of map tiles around the vehicle (and ahead of it), with eviction.

The retrieval thread (the node's worker) only ever *reads* which tiles are ready and tells the
loader where it is (``observe``, a few microseconds); it never opens a file and never computes
anything per tile. Each tile goes through three steps before it is served:

1. checked whole (``verify``: every observation's CRC-32) in a child process at a lower CPU
   priority (``core/maps/tile_checker.py``), so the node's process shares neither its GIL nor its
   CPU priority with hundreds of MB of reads and CRCs (``checker="thread"`` checks on the
   loader thread instead, by file reads);
2. mapped by the loader thread, which checks the header and the small arrays again and that
   the file is the one the child checked (``MapFile.mark_checked``);
3. prepared by the loader thread (``prepare``: the per-tile structures retrieval needs, e.g. the
   point table with its track-length masks), then published by replacing a dict (readers see
   the old or the new one, never a half-built one).

It evicts tiles that fell behind: memory stays bounded by the tiles in view. A dropped tile is
unmapped a second later on the loader thread (``RETIRE_AFTER_S``), never on the retrieval thread.

Wanted tiles: those within ``load_radius_m`` of the latest position, then those within
``load_radius_m`` of the point ``lookahead_m`` ahead along the direction of travel (estimated
from positions at least ``min_motion_m`` apart; a jump farther than ``jump_m`` resets it), at
most ``max_loaded_tiles``. A ready tile is evicted when it is farther than ``load_radius_m +
keep_margin_m`` from both points (the margin stops a car on a boundary from reloading tiles),
or when the bound is reached and a nearer tile is wanted.

A tile that fails to open or verify is reported (``on_error``, ``health()`` at ERROR level, with
the file and the reason), skipped, and retried only after ``retry_after_s``; the rest of the map
keeps serving. If the checker process dies (killed, crashed, no answer within
``check_timeout_s``), that is logged and a new one is started for the same tile; a tile during
whose check it dies twice is reported and skipped like a damaged one. If the checker cannot be
started at all, the loader reports it and checks on its own thread.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pixloc_ros.core.maps.mapfile_format import MapCorruptedError
from pixloc_ros.core.maps.mapfile import MapFile
from pixloc_ros.core.maps.point_table import PointTable
from pixloc_ros.core.maps.tile_checker import TileChecker, TileCheckerDied
from pixloc_ros.core.maps.tiles import TiledMap, TileError, TileKey

logger = logging.getLogger(__name__)

RETIRE_AFTER_S = 1.0  # a dropped tile stays mapped this long (a retrieval may still read it), then is unmapped
CHECKERS = ("process", "thread")


@dataclass
class TileLoaderConfig:
    """Which tiles the loader keeps open."""

    load_radius_m: float = 150.0  # tiles within this distance of the vehicle are loaded (>= retrieval's max distance)
    lookahead_m: float = 200.0  # ... and those within load_radius_m of the point this far ahead along the travel
    keep_margin_m: float = 50.0  # a ready tile is evicted once farther than load_radius_m + this from both points
    max_loaded_tiles: int = 16  # hard bound on open tiles (memory); nearest wanted first
    verify: bool = True  # check every observation of a tile in the background before serving it
    min_motion_m: float = 2.0  # the direction of travel is re-estimated after this much motion
    jump_m: float = 100.0  # a position this far from the previous one is a jump (relocalization), not motion
    retry_after_s: float = 60.0  # a failed tile is tried again after this long (inf: never)
    checker: str = "process"  # where verify runs: "process" (a child at checker_niceness) or "thread" (the loader's)
    checker_niceness: int = 10  # added to the checker process's nice value (0-19; 19: lowest priority)
    checker_own_session: bool = False  # the checker in a session (scheduling group) of its own, see tile_checker.py
    check_timeout_s: float = 300.0  # a checker that takes longer for one tile is killed (and the check retried)

    def __post_init__(self):
        if self.load_radius_m <= 0 or self.lookahead_m < 0 or self.keep_margin_m < 0:
            raise ValueError("load_radius_m must be > 0, lookahead_m and keep_margin_m >= 0")
        if self.max_loaded_tiles < 1:
            raise ValueError(f"max_loaded_tiles must be >= 1, got {self.max_loaded_tiles}")
        if self.checker not in CHECKERS:
            raise ValueError(f"checker must be one of {CHECKERS}, got {self.checker!r}")
        if not 0 <= self.checker_niceness <= 19 or not self.check_timeout_s > 0:
            raise ValueError("checker_niceness must be in 0..19 and check_timeout_s > 0")


@dataclass
class TileFailure:
    """A tile that could not be used, and why."""

    key: TileKey
    message: str
    monotonic_s: float  # when (time.monotonic)


@dataclass
class TileHealth:
    """The loader's state for diagnostics."""

    level: str  # "ok", "warn" (wanted tiles still loading) or "error" (a tile failed)
    message: str
    loaded: list[TileKey]
    pending: list[TileKey]  # wanted, not loaded yet
    failed: list[TileFailure]
    loads: int  # tiles opened so far
    evictions: int
    max_load_s: float  # slowest tile open + verify so far
    values: dict[str, str] = field(default_factory=dict)  # the above as strings (diagnostic key/values)


class TileLoader:
    """Keeps the tiles of ``tiled`` that the vehicle needs open (see the module docstring).

    ``on_error(message)`` is called on the loader thread for each failed tile.
    ``prepare(tile)`` (on the loader thread, before the tile is published) returns what
    ``get`` hands out with the tile: every per-tile structure retrieval needs, so that none is
    computed on the retrieval thread (default: the tile's ``PointTable``).
    ``start=False`` leaves the thread unstarted (``step()`` then loads synchronously: tests).
    """

    def __init__(self, tiled: TiledMap, config: TileLoaderConfig | None = None,
                 on_error: Callable[[str], None] | None = None, start: bool = True,
                 prepare: Callable[[MapFile], object] | None = None):
        self.tiled = tiled
        self.config = config or TileLoaderConfig()
        self.on_error = on_error
        self._prepare = prepare
        # The child process that checks tiles (started on the first check); None: check on this thread.
        self.checker = (TileChecker(tiled, self.config.checker_niceness, self.config.check_timeout_s,
                                    own_session=self.config.checker_own_session)
                        if self.config.verify and self.config.checker == "process" else None)
        self._checker_deaths: dict[int, int] = {}  # entry number -> checker deaths while checking it
        self.check_seconds = 0.0  # summed wall time of the checks (in the child or on this thread)
        self._number = {e.key: n for n, e in enumerate(tiled.entries)}
        self.ready_mask = np.zeros(len(tiled.entries), bool)  # (T,) read by the retrieval thread
        self._ready: dict[int, object] = {}  # entry number -> (MapFile, PointTable); replaced, never mutated
        self._retired: list[tuple[float, object]] = []  # (when dropped, (MapFile, PointTable)) awaiting release
        self._cond = threading.Condition()
        self._wanted: list[int] = []  # entry numbers, in load order
        self._keep: set[int] = set()
        self._failed: dict[int, TileFailure] = {}
        self._anchor: np.ndarray | None = None  # last position the plan was requested for (x, y)
        self._target = None  # (position, direction) waiting to be planned by the loader thread
        self._direction: np.ndarray | None = None  # unit (x, y) of travel
        self._busy = False
        self._stop = False
        self.loads = 0
        self.evictions = 0
        self.max_load_s = 0.0
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._run, name="pixloc-tiles", daemon=True)
            self._thread.start()

    # ---- called from the retrieval thread ------------------------------------------------
    def get(self, number: int):
        """(MapFile, what ``prepare`` made of it) of tile entry ``number`` if it is ready, else None."""
        return self._ready.get(number)

    def observe(self, position) -> None:
        """The vehicle (or a prior) is at ``position`` (2+,) in the map frame. Cheap (no planning,
        no I/O here): when it moved ``min_motion_m`` since the last time, the loader thread
        re-plans the wanted tiles around it and ahead of it."""
        p = np.asarray(position, np.float64).reshape(-1)[:2]
        if not np.isfinite(p).all():
            return
        anchor = self._anchor
        if anchor is not None:
            moved = float(np.hypot(*(p - anchor)))
            if moved < self.config.min_motion_m:
                return
            self._direction = (p - anchor) / moved if moved < self.config.jump_m else None
        self._anchor = p
        self._request(p, self._direction)

    def prefetch(self, position) -> None:
        """A coarse prior (GNSS fix, initial pose) at ``position``: plan around it, no direction."""
        p = np.asarray(position, np.float64).reshape(-1)[:2]
        if np.isfinite(p).all():
            self._anchor, self._direction = p, None
            self._request(p, None)

    def _request(self, p: np.ndarray, direction: np.ndarray | None) -> None:
        with self._cond:
            self._target = (p, direction)
            self._cond.notify_all()

    def _ensure_plan(self) -> None:
        """Turn the latest requested position into the wanted / kept tile sets (callers hold the lock)."""
        if self._target is None:
            return
        (p, direction), self._target = self._target, None
        cfg, grid = self.config, self.tiled.grid
        centres = [p] if direction is None or cfg.lookahead_m <= 0 else [p, p + cfg.lookahead_m * direction]
        wanted: list[int] = []
        for c in centres:
            for key in grid.keys_within(c, cfg.load_radius_m):
                n = self._number.get(key)
                if n is not None and n not in wanted:
                    wanted.append(n)
        self._wanted = wanted[:cfg.max_loaded_tiles]
        self._keep = set(self._wanted)
        for c in centres:
            for key in grid.keys_within(c, cfg.load_radius_m + cfg.keep_margin_m):
                n = self._number.get(key)
                if n is not None:
                    self._keep.add(n)

    def fail(self, key: TileKey, message: str) -> None:
        """Mark a ready tile as damaged (the retrieval thread met a bad block): drop and report it."""
        n = self._number[key]
        with self._cond:
            self._drop(n)
            self._record_failure(n, message)

    # ---- state ---------------------------------------------------------------------------
    @property
    def loaded_keys(self) -> list[TileKey]:
        return [self.tiled.entries[n].key for n in sorted(self._ready)]

    @property
    def wanted_keys(self) -> list[TileKey]:
        return [self.tiled.entries[n].key for n in self._wanted]

    def pending(self) -> list[TileKey]:
        """Wanted tiles neither loaded nor failed."""
        with self._cond:
            self._ensure_plan()
            return [self.tiled.entries[n].key for n in self._next_loads()]

    def failure(self, key: TileKey) -> TileFailure | None:
        return self._failed.get(self._number.get(key, -1))

    def health(self) -> TileHealth:
        """Loaded, pending and failed tiles, with a level for diagnostics."""
        with self._cond:
            self._ensure_plan()
            failed = list(self._failed.values())
            pending = [self.tiled.entries[n].key for n in self._next_loads()]
        loaded = self.loaded_keys
        if failed:
            level = "error"
            message = f"{len(failed)} map tile(s) unusable, skipped: " + "; ".join(f.message for f in failed[:3])
        elif pending:
            level, message = "warn", f"loading {len(pending)} map tile(s) near the vehicle"
        else:
            level, message = "ok", f"{len(loaded)} map tile(s) loaded"
        values = {"tiles_loaded": str(len(loaded)), "tiles_pending": str(len(pending)),
                  "tiles_failed": ", ".join(str(f.key) for f in failed), "tile_loads": str(self.loads),
                  "tile_evictions": str(self.evictions), "tile_max_load_s": f"{self.max_load_s:.3f}",
                  "tiles_total": str(len(self.tiled.entries)),
                  "tile_checker": self._checker_description()}
        return TileHealth(level, message, loaded, pending, failed, self.loads, self.evictions, self.max_load_s, values)

    def _checker_description(self) -> str:
        checker = self.checker
        if not self.config.verify:
            return "none (tiles are checked block by block on first use)"
        if checker is None:
            return "loader thread"
        pid = checker.pid
        return f"process (nice +{checker.niceness}, " + (f"pid {pid})" if pid else "not started)")

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every wanted tile is loaded or failed (tests, benchmarks). False on timeout."""
        if self._thread is None:
            while self.step():
                pass
            return True
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._busy or self._target is not None or self._next_loads() or self._evictable():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        """Stop the thread and the checker process, and drop every tile."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        checker = self.checker  # (the loader thread may drop it meanwhile: fallback to checking itself)
        if checker is not None:
            checker.interrupt()  # a check in progress ends now (the loader thread sees it die)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if checker is not None:
            checker.close()
        with self._cond:
            for n in list(self._ready):
                self._drop(n)
        self._release_retired(everything=True)

    # ---- the loader thread ---------------------------------------------------------------
    def _next_loads(self) -> list[int]:
        now = time.monotonic()
        return [n for n in self._wanted if n not in self._ready
                and (n not in self._failed or now - self._failed[n].monotonic_s >= self.config.retry_after_s)]

    def _evictable(self) -> list[int]:
        return [n for n in self._ready if n not in self._keep]

    def _drop(self, n: int) -> None:
        """Unpublish tile ``n`` (callers hold the lock). A retrieval that holds the tile right now
        finishes with it; the tile is kept for ``RETIRE_AFTER_S`` and then released on the loader
        thread: unmapping a file of a few hundred MB takes tens of milliseconds, which must not
        fall on the retrieval thread when it drops the last view."""
        if n in self._ready:
            ready = dict(self._ready)
            self._retired.append((time.monotonic(), ready.pop(n)))
            self.ready_mask[n] = False
            self._ready = ready

    def _release_retired(self, everything: bool = False) -> None:
        """Unmap the tiles dropped more than ``RETIRE_AFTER_S`` ago, on the loader thread and
        outside the lock (the retrieval thread takes it in ``observe``)."""
        with self._cond:
            now = time.monotonic()
            due = [r for r in self._retired if everything or now - r[0] >= RETIRE_AFTER_S]
            self._retired = [r for r in self._retired if r not in due]
        for _, (tile, _table) in due:
            tile.close()  # the last references go when this returns: unmapped on this thread

    def _record_failure(self, n: int, message: str) -> None:  # callers hold the lock
        self._failed[n] = TileFailure(self.tiled.entries[n].key, message, time.monotonic())
        logger.error(message)
        if self.on_error is not None:
            try:
                self.on_error(message)
            except Exception:  # a reporting hook must not stop the loader
                logger.exception("tile error callback failed")

    def step(self) -> bool:
        """Do one unit of work (evict what fell behind, or load the next wanted tile). False when idle."""
        self._release_retired()
        with self._cond:
            if self._stop:
                return False
            self._ensure_plan()
            for n in self._evictable():
                self._drop(n)
                self.evictions += 1
            todo = self._next_loads()
            if not todo:
                return False
            n = todo[0]
            # Room for it: evict the ready tiles that are wanted least (the end of the list).
            while len(self._ready) >= self.config.max_loaded_tiles:
                victim = max(self._ready, key=lambda m: self._wanted.index(m) if m in self._wanted else math.inf)
                self._drop(victim)
                self.evictions += 1
            self._busy = True
        key = self.tiled.entries[n].key
        start = time.perf_counter()
        try:
            tile = self._open(n, key)
            if tile is None:  # the checker died: a new one checks it again next step
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                return not self._stop
            try:
                prepared = self._prepare(tile) if self._prepare is not None else PointTable.of(tile)
            except Exception:
                tile.close()
                raise
        except (TileError, OSError) as err:
            with self._cond:
                self._busy = False
                self._record_failure(n, str(err))
                self._cond.notify_all()
            return True
        seconds = time.perf_counter() - start
        with self._cond:
            self._busy = False
            self.loads += 1
            self.max_load_s = max(self.max_load_s, seconds)
            self._failed.pop(n, None)
            if n in self._keep and not self._stop:  # still wanted after the (slow) open
                ready = dict(self._ready)
                ready[n] = (tile, prepared)
                self._ready = ready
                self.ready_mask[n] = True
            else:
                self._retired.append((time.monotonic(), (tile, prepared)))
            self._cond.notify_all()
        return True

    def _open(self, n: int, key: TileKey) -> MapFile | None:
        """Tile ``key`` mapped and checked (TileError if it is unusable); None when the checker
        process died during its check (logged; checked again by a new one on the next step)."""
        if self.checker is None:
            start = time.perf_counter()
            tile = self.tiled.open_tile(key, verify=self.config.verify)
            if self.config.verify:
                self.check_seconds += time.perf_counter() - start
            return tile
        try:
            verdict = self.checker.check(key)
        except TileCheckerDied as err:
            if self._stop:
                return None
            if not err.started and self.checker.starts == 0:  # never once said it was ready
                # It never ran (no interpreter, a broken environment): check here rather than serve nothing.
                logger.error(f"{err}; map tiles are checked on the loader thread instead")
                self.checker = None
                return self._open(n, key)
            deaths = self._checker_deaths[n] = self._checker_deaths.get(n, 0) + 1
            if deaths >= 2:
                self._checker_deaths.pop(n)
                raise TileError(key, f"map tile {key} could not be checked: {err} (the second time for this "
                                     "tile); skipped") from err
            logger.error(f"{err}; starting a new one to check map tile {key} again")
            return None
        self._checker_deaths.pop(n, None)
        self.check_seconds += verdict.seconds
        if not verdict.ok:
            raise TileError(key, verdict.message)
        tile = self.tiled.open_tile(key, verify=False)  # maps it; header, small arrays, belongs to the index
        try:
            tile.mark_checked(verdict.identity)
        except MapCorruptedError as err:
            tile.close()
            raise TileError(key, f"map tile {key} is unusable: {err}") from err
        return tile

    def _run(self) -> None:
        while True:
            with self._cond:
                while (not self._stop and self._target is None and not self._next_loads()
                       and not self._evictable()):
                    if self._retired:  # due for release soon
                        self._cond.wait(timeout=RETIRE_AFTER_S)
                        break
                    # Failed tiles come due for a retry without anyone calling: wake up for that too.
                    self._cond.wait(timeout=min(self.config.retry_after_s, 5.0)
                                    if self._failed and math.isfinite(self.config.retry_after_s) else None)
                if self._stop:
                    return
            try:
                self.step()
            except Exception:  # never let the thread die silently: report and go on
                logger.exception("tile loader step failed")
                time.sleep(0.1)
