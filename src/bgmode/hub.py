"""In-process signals: live event fan-out, worker wake-ups and cancel requests.

The store is the source of truth; the hub only makes this process fast. Events are
published here after they are committed, so a reader that subscribes, then reads the
store, then takes live batches (dropping sequence numbers it already has) never misses
or repeats an event, and never sees one that a crash could take back. Other processes
learn the same things from the store (`wait_for_events`, `wait_for_work`, `heartbeat`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bgmode.records import StoredEvent


class Subscription:
    """Committed event batches of one response, for one reader.

    Not an `asyncio.Queue`: a reader takes everything delivered so far in one call, and
    waits with a plain future and timer (no task per wait, as `asyncio.wait_for` makes).
    """

    __slots__ = ("_batches", "_waiter")

    def __init__(self) -> None:
        self._batches: deque[list[StoredEvent]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, events: list[StoredEvent]) -> None:
        self._batches.append(events)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def empty(self) -> bool:
        return not self._batches

    def take(self) -> list[StoredEvent]:
        """Every event delivered so far, in order (empty if none)."""
        if len(self._batches) == 1:
            return self._batches.popleft()
        out = [e for batch in self._batches for e in batch]
        self._batches.clear()
        return out

    async def wait(self, timeout: float) -> list[StoredEvent]:
        """Events delivered so far, waiting up to `timeout` seconds for some (empty: none came)."""
        if not self._batches:
            loop = asyncio.get_running_loop()
            self._waiter = w = loop.create_future()
            timer = loop.call_later(timeout, _wake, w)
            try:
                await w
            finally:
                timer.cancel()
                self._waiter = None
        return self.take()


def _wake(w: asyncio.Future[None]) -> None:
    if not w.done():
        w.set_result(None)


class Hub:
    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}
        self._cancel: dict[str, Callable[[], None]] = {}
        self.work = asyncio.Event()

    @contextmanager
    def subscribe(self, response_id: str) -> Iterator[Subscription]:
        """The committed event batches of one response, for the `with` block."""
        q = Subscription()
        subs = self._subs.setdefault(response_id, set())
        subs.add(q)
        try:
            yield q
        finally:
            subs.discard(q)
            if not subs:
                self._subs.pop(response_id, None)

    def publish(self, response_id: str, events: list[StoredEvent]) -> None:
        subs = self._subs.get(response_id)
        if subs:
            for q in subs:
                q.put(events)

    def wake_workers(self) -> None:
        self.work.set()

    def running_here(self, response_id: str) -> bool:
        """Whether a worker of this process runs the response (its events arrive via `publish`)."""
        return response_id in self._cancel

    def register_job(self, response_id: str, cancel: Callable[[], None]) -> None:
        self._cancel[response_id] = cancel

    def unregister_job(self, response_id: str) -> None:
        self._cancel.pop(response_id, None)

    def cancel(self, response_id: str) -> bool:
        """Tell this process's worker to stop the response now; False if it does not run here."""
        fn = self._cancel.get(response_id)
        if fn is None:
            return False
        fn()
        return True
