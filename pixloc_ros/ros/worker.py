"""A one-slot queue and the worker thread that empties it.

Subscription callbacks must never block on the network: they ``submit`` the newest frame and
return. The worker processes one frame at a time; a frame that arrives while the slot is still
full replaces the waiting one, which is dropped and counted (the worker always takes the newest
frame, so latency stays bounded by one frame's processing time).

With ``prepare`` the work is two stages on two threads: ``prepare(item)`` (the network) of the next
item runs while ``process(item, prepared)`` (the LM and the rest) of the previous one does. The
first stage takes an item only when the second has taken the one before, so it runs at most one
item ahead; what ``prepare`` raises goes to ``process`` as its ``prepared`` value, in order.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestOnlyWorker(Generic[T]):
    """Runs ``process(item)`` on a background thread for the most recently submitted item.

    ``on_error(item, exc)`` is called (on the worker thread) when ``process`` raises; the worker
    keeps running. Without it, errors are re-raised only by ``stop``.
    """

    def __init__(self, process: Callable[..., None], name: str = "pixloc-worker",
                 on_error: Callable[[T, BaseException], None] | None = None,
                 prepare: Callable[[T], object] | None = None):
        """process(item), or process(item, prepared) with ``prepare`` (module doc)."""
        self._process = process
        self._prepare = prepare
        self._handoff: tuple | None = None  # (item, prepared) waiting for the second stage
        self._preparing = False
        self._on_error = on_error
        self._cond = threading.Condition()
        self._slot: T | None = None
        self._has_item = False
        self._busy = False
        self._stopping = False
        self._dropped = 0
        self._processed = 0
        self._failure: BaseException | None = None
        self._threads = [threading.Thread(target=self._run, name=name, daemon=True)]
        if prepare is not None:
            self._threads.append(threading.Thread(target=self._run_prepare, name=name + "-network", daemon=True))
        for thread in self._threads:
            thread.start()

    def submit(self, item: T) -> bool:
        """Put ``item`` in the slot without waiting; returns False when it replaced a waiting item."""
        with self._cond:
            if self._stopping:
                return False
            replaced = self._has_item
            if replaced:
                self._dropped += 1
            self._slot, self._has_item = item, True
            self._cond.notify_all()  # two stages wait on this condition
            return not replaced

    def clear(self) -> int:
        """Drop the waiting item, if any (e.g. after a reset); returns how many were dropped (0 or 1)."""
        with self._cond:
            dropped = int(self._has_item) + int(self._handoff is not None)
            self._dropped += dropped
            self._slot, self._has_item, self._handoff = None, False, None
            self._cond.notify_all()
            return dropped

    def take_dropped(self) -> int:
        """Number of items dropped since the last call (the status message reports it per frame)."""
        with self._cond:
            dropped, self._dropped = self._dropped, 0
            return dropped

    @property
    def processed(self) -> int:
        """Items whose processing finished (successfully or not) since start."""
        with self._cond:
            return self._processed

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the slot is empty and no item is being processed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._has_item or self._busy or self._preparing
                                                    or self._handoff is not None), timeout)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the item in progress, drop the waiting one, join the thread."""
        with self._cond:
            self._stopping = True
            self._slot, self._has_item, self._handoff = None, False, None
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"worker thread {thread.name} did not stop within {timeout} s")
        if self._failure is not None:
            raise self._failure

    def _report(self, item: T, exc: BaseException) -> None:
        try:
            if self._on_error is None:
                raise exc
            self._on_error(item, exc)
        except Exception as unhandled:  # kept for stop() to raise; the worker goes on
            if self._failure is None:
                self._failure = unhandled

    def _run_prepare(self) -> None:
        """The first stage: the newest item, once the second stage took the previous one."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: (self._has_item and self._handoff is None) or self._stopping)
                if self._stopping:
                    return
                item, self._slot, self._has_item = self._slot, None, False
                self._preparing = True
            try:
                prepared = self._prepare(item)
            except Exception as exc:  # the second stage reports it, in order
                prepared = exc
            with self._cond:
                self._preparing = False
                if not self._stopping:
                    self._handoff = (item, prepared)
                self._cond.notify_all()

    def _run(self) -> None:
        staged = self._prepare is not None
        while True:
            with self._cond:
                if staged:
                    self._cond.wait_for(lambda: self._handoff is not None or self._stopping)
                else:
                    self._cond.wait_for(lambda: self._has_item or self._stopping)
                if self._stopping:
                    return
                if staged:
                    (item, prepared), self._handoff = self._handoff, None
                    self._cond.notify_all()  # the first stage may take the next item now
                else:
                    item, self._slot, self._has_item = self._slot, None, False
                self._busy = True
            try:
                if staged:
                    self._process(item, prepared)
                else:
                    self._process(item)
            except Exception as exc:  # one bad frame must not end the worker
                self._report(item, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._processed += 1
                    self._cond.notify_all()
