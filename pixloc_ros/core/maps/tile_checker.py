"""Checking map tiles in a separate, low-priority process (the tile loader's helper).

Checking a tile (``TiledMap.open_tile(verify=True)``: every observation's CRC-32, hundreds of MB)
is I/O and CRC work that a thread of the node's process would do with the node's GIL and at
the node's CPU priority: each time it takes the GIL back between two reads, the node's worker
may wait for it, and on a busy machine the loader thread is preempted while holding it. In a
process of its own, at a lower priority (``os.nice``), the check shares neither: the node's
process only maps files that are already checked (``MapFile.mark_checked``).

Where it competes: Linux shares the CPU between sessions ("autogroups") before it shares it
between the processes of a session. By default the checker stays in the node's session, so
that it spends the node's share of the machine (at nice +10 it yields to the node's threads,
and still gets about a tenth of a CPU when they are busy), and other users' load slows it no
more than the node itself. ``own_session=True`` puts it in a session of its own at the same
lower priority: it then yields to everything on the machine, and under other users' load it
starves (measured in BENCHMARKS.md: at nice +19 in its own session with three busy processes
on the two CPUs, a tile took 44 s to check and most frames found their tile not loaded).

Protocol (one JSON object per line, nothing is ever unpickled): the child opens the tiled map
itself (the index gets every check) and says ``{"ready": true, "index": <identity>}``; then,
per request ``{"key": [i, j]}`` on its stdin, it checks that tile and answers ``{"key": [i, j],
"ok": true, "identity": [...], "seconds": s}`` or ``{"key": ..., "ok": false, "message": "..."}``
on its stdout. The identity (device, inode, size, mtime) lets the parent see that the file it
maps is the one that was checked. The child ends at the end of its stdin (the parent closed it
or died).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass

from pixloc_ros.core.maps.mapfile_format import file_identity
from pixloc_ros.core.maps.tiles import TiledMap, TileError, TileKey, open_tiled_map


class TileCheckerDied(RuntimeError):
    """The checker process ended, could not start, or did not answer in time; the message says how.
    ``started``: False when it died before saying it was ready."""

    def __init__(self, message: str, started: bool = True):
        super().__init__(message)
        self.started = started


@dataclass
class TileCheck:
    """The checker's verdict on one tile."""

    key: TileKey
    ok: bool
    message: str = ""  # why not (a TileError's message)
    identity: tuple[int, ...] | None = None  # file_identity of the checked file
    seconds: float = 0.0  # the check's wall time in the child


class TileChecker:
    """A child process that checks tiles of the tiled map ``tiled`` on request (see the module docstring).

    ``niceness``: added to the child's nice value (0-19; higher is lower priority).
    ``timeout_s``: an answer (start-up or one check) that takes longer kills the child
    (TileCheckerDied). ``command``: the program to run, before its arguments (default: this
    module with this interpreter). The child starts on the first ``check`` and ends on
    ``close`` (or when this object is collected, or the parent exits).
    """

    def __init__(self, tiled: TiledMap, niceness: int = 19, timeout_s: float = 300.0,
                 command: list[str] | None = None, own_session: bool = False):
        self.tiled = tiled
        self.own_session = own_session
        self.command = list(command) if command else [sys.executable, "-m", "pixloc_ros.core.maps.tile_checker"]
        self.niceness = int(niceness)
        self.timeout_s = float(timeout_s)
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._buffer = b""
        self._finalizer = None
        self._starting = False
        self.starts = 0  # times a child said it was ready

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        index = self.tiled.index
        cmd = [*self.command, str(self.tiled.folder),
               "--fingerprint", index.weights_fingerprint, "--profile", index.header.profile_name,
               "--nice", str(self.niceness)] + (["--own-session"] if self.own_session else [])
        self._stderr = tempfile.TemporaryFile()  # read back only to say why the child died
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                          close_fds=True, start_new_session=self.own_session)
        except OSError as err:
            self._stop_process()
            raise TileCheckerDied(f"the tile checker process could not start ({err})", started=False) from err
        self._buffer = b""
        self._finalizer = weakref.finalize(self, _end_process, self._proc)
        self._starting = True
        try:
            hello = self._read_line("starting")
            if not hello.get("ready"):
                raise self._died(f"started but said {hello!r}")
            if tuple(hello.get("index", ())) != file_identity(index.path):
                raise self._died("opened another index than this process (the map folder changed?)")
        finally:
            self._starting = False
        self.starts += 1

    def check(self, key: TileKey) -> TileCheck:
        """Check tile ``key`` in the child (blocks until it answers; the GIL is free meanwhile).
        Raises TileCheckerDied when the child is gone, fails to start, or answers too late."""
        if not self.alive():
            self._stop_process()
            self._start()
        try:
            self._proc.stdin.write(json.dumps({"key": list(key)}).encode() + b"\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as err:
            raise self._died(f"did not take the request ({err})") from err
        reply = self._read_line(f"checking map tile {key}")
        if tuple(reply.get("key", ())) != tuple(key):
            raise self._died(f"answered {reply!r} for map tile {key}")
        identity = reply.get("identity")
        return TileCheck(tuple(key), bool(reply.get("ok")), str(reply.get("message", "")),
                         tuple(int(v) for v in identity) if identity else None, float(reply.get("seconds", 0.0)))

    def _read_line(self, doing: str) -> dict:
        deadline = time.monotonic() + self.timeout_s
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._died(f"gave no answer within {self.timeout_s:g} s while {doing}", kill=True)
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise self._died(f"ended while {doing}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise self._died(f"wrote {line[:200]!r} while {doing}")
        return reply

    def _died(self, what: str, kill: bool = False) -> TileCheckerDied:
        """Stop the child and describe its end (exit status, last line of its stderr)."""
        proc = self._proc
        if kill and proc is not None and proc.poll() is None:
            proc.kill()
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            lines = [l for l in self._stderr.read().decode("utf-8", "replace").splitlines() if l.strip()]
            tail = f": {lines[-1].strip()[:300]}" if lines else ""
        self._stop_process()
        status = "" if code is None else (f", killed by signal {-code}" if code < 0 else f", exit status {code}")
        return TileCheckerDied(f"the tile checker process (pid {proc.pid if proc else '-'}) {what}{status}{tail}",
                               started=not self._starting)

    def _stop_process(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # ends the child (if still running) and reaps it
            self._finalizer = None
        self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def interrupt(self) -> None:
        """Terminate the child now, from any thread: a ``check`` waiting on it raises
        TileCheckerDied (the thread that called it cleans up; nothing is closed here)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def close(self) -> None:
        """End the child (closes its stdin; kills it if it does not end within a second)."""
        self._stop_process()


def _end_process(proc: subprocess.Popen) -> None:
    """Close the child's stdin (it ends at EOF), wait a little, then kill it; always reap it."""
    for stream in (proc.stdin, proc.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def lower_priority(niceness: int, own_session: bool = False) -> None:
    """Add ``niceness`` to this process's nice value; in a session of its own, where Linux groups
    processes by session for scheduling (autogroups, ``/proc/self/autogroup``), to its session's
    group too: the group's weight is what the scheduler weighs against other sessions."""
    if niceness <= 0:
        return
    nice = os.nice(niceness)
    if not own_session:
        return
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass  # no autogroups here (or not allowed): the process nice value still applies


def _serve(folder: str, fingerprint: str | None, profile: str | None, out) -> int:
    """The child's loop: answer each request line on stdin (see the module docstring)."""
    tiled = open_tiled_map(folder, fingerprint, profile)
    out.write(json.dumps({"ready": True, "index": list(file_identity(tiled.index.path))}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        key = (int(request["key"][0]), int(request["key"][1]))
        start = time.perf_counter()
        reply: dict = {"key": list(key)}
        try:
            tile = tiled.open_tile(key, verify=True)
        except (TileError, OSError) as err:
            reply.update(ok=False, message=str(err))
        else:
            reply.update(ok=True, identity=list(tile.identity))
            tile.close()
        reply["seconds"] = time.perf_counter() - start
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Check tiles of a tiled map on request (the tile loader's child).")
    parser.add_argument("folder")
    parser.add_argument("--fingerprint")
    parser.add_argument("--profile")
    parser.add_argument("--nice", type=int, default=19, help="added to this process's nice value")
    parser.add_argument("--own-session", action="store_true", help="also lower the priority of its session's group")
    args = parser.parse_args(argv)
    lower_priority(args.nice, args.own_session)
    return _serve(args.folder, args.fingerprint, args.profile, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
