"""The SQLite writer process: both ends of the pipe between a server and its writer.

Why a process: a writer *thread* and the event loop share one GIL. The writer needs it back
after every SQLite statement and the loop holds it while it answers requests, so the two ran
in turn and a busy server did its creates at the pace of one core (ARCHITECTURE, "The writer
and the GIL"). The child here has no event loop and no threads: it reads a frame of writes,
runs them in one transaction (`sqlite.run_round`), commits, answers the frame, reads the next.

A frame is a pickled list of `(op, args)`: `op` a module-level `_w_*` function of
`bgmode.store.sqlite` (pickled by name), `args` plain data. The answer is a pickled list of
`(ok, result or exception)`, one per write, in order. One frame is in flight at a time: what
the server submits meanwhile waits and leaves in the next one (group commit across the pipe).

Lifecycle: `SQLiteStore.open` starts the child (it says "ready" once its connection is open)
and `close` closes its stdin: it answers what it has and exits. If the server dies, the
child's stdin closes the same way: what it took is committed or not, as with a crash. It
ignores SIGINT and SIGTERM, which the server handles (a terminal's Ctrl-C reaches the whole
process group). If the child dies, the writes waiting for it fail with
`sqlite3.OperationalError` (a 503 to a client, a retry to a worker) and the next write starts
a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, cast

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: how long `close()` waits for the child to answer what it has and exit before killing it
_EXIT_SECONDS = 60
_SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

Job = tuple[Callable[..., Any], tuple[Any, ...]]


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=_PROTOCOL)
    return len(data).to_bytes(4, "big") + data


def settle(futs: list[asyncio.Future[Any]], results: list[tuple[bool, Any]]) -> None:
    """Resolve each future with its `(ok, result or exception)` (one already done, e.g. its
    caller gave up, is left as it is)."""
    for fut, (ok, value) in zip(futs, results, strict=True):
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class _Pipe(asyncio.SubprocessProtocol):
    """The server's view of one child: frames in, its end."""

    def __init__(self, owner: WriterProcess, ready: asyncio.Future[None]) -> None:
        self.owner = owner
        self.ready = ready
        self.exited: asyncio.Future[None] = ready.get_loop().create_future()
        self.buf = bytearray()
        self.gone = False
        self.transport: asyncio.SubprocessTransport | None = None
        #: the child's stdin, where frames go (set once it is ready)
        self.stdin: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        buf = self.buf
        buf += data  # type: ignore[arg-type]
        at = 0
        while len(buf) - at >= 4:
            n = int.from_bytes(buf[at : at + 4], "big")
            if len(buf) - at - 4 < n:
                break
            message = pickle.loads(buf[at + 4 : at + 4 + n])
            at += 4 + n
            if not self.ready.done():
                self.ready.set_result(None)  # the child's first frame: "ready"
            else:
                self.owner._answered(self, message)
        if at:
            del buf[:at]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._end()

    def process_exited(self) -> None:
        self._end()
        if self.transport is not None:
            self.transport.close()  # only now: closing a live child's transport reaps or kills it
        if not self.exited.done():
            self.exited.set_result(None)

    def _end(self) -> None:
        if self.gone:
            return
        self.gone = True
        if not self.ready.done():
            self.ready.set_exception(sqlite3.OperationalError("the SQLite writer process did not start"))
        self.owner._lost(self)


class WriterProcess:
    """The server's end: `submit()` a write, get a future of its result."""

    def __init__(self, path: str) -> None:
        self.path = path
        #: the running child (None: not started yet, or it died and no write has come since)
        self._pipe: _Pipe | None = None
        self._jobs: list[Job] = []
        self._futs: list[asyncio.Future[Any]] = []
        #: the futures of the frame the child is working on (one at a time)
        self._inflight: list[asyncio.Future[Any]] | None = None
        self._scheduled = False
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self._drained: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        pipe = _Pipe(self, ready)
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": _SRC + (os.pathsep + path if path else "")}
        transport, _ = await loop.subprocess_exec(
            lambda: pipe,
            sys.executable,
            "-m",
            "bgmode.store.sqlite_writer",
            self.path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=env,
        )
        try:
            await ready
        except BaseException:
            transport.close()
            raise
        pipe.stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))  # uvloop's is no subclass
        self._pipe = pipe
        self._loop = loop

    def submit(self, op: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        loop = self._loop or asyncio.get_running_loop()  # the store is used from the loop that opened it
        fut: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            fut.set_exception(sqlite3.ProgrammingError("the store is closed"))
            return fut
        self._jobs.append((op, args))
        self._futs.append(fut)
        if not self._scheduled and self._inflight is None:
            self._scheduled = True
            loop.call_soon(self._send)  # the rest of this loop turn's writes go with it
        return fut

    def _send(self) -> None:
        self._scheduled = False
        if self._inflight is not None or not self._jobs:
            return
        pipe = self._pipe
        if pipe is None or pipe.stdin is None:  # not started, or the last one died: start another, then send
            if self._starting is None and not self._closed:
                self._starting = asyncio.get_running_loop().create_task(self._restart())
            return
        jobs, futs = self._jobs, self._futs
        self._jobs, self._futs = [], []
        try:
            frame = _frame(jobs)
        except Exception:  # a write that cannot be pickled fails alone
            keep = []
            for job, fut in zip(jobs, futs, strict=True):
                try:
                    pickle.dumps(job, protocol=_PROTOCOL)
                    keep.append((job, fut))
                except Exception as exc:
                    fut.set_exception(exc)
            if not keep:
                return
            frame = _frame([job for job, _ in keep])
            futs = [fut for _, fut in keep]
        self._inflight = futs
        pipe.stdin.write(frame)

    def _answered(self, pipe: _Pipe, results: list[tuple[bool, Any]]) -> None:
        if pipe is not self._pipe or self._inflight is None:
            return
        futs, self._inflight = self._inflight, None
        settle(futs, results)
        self._send()
        self._wake_drained()

    def _lost(self, pipe: _Pipe) -> None:
        if pipe is not self._pipe:
            return
        self._pipe = None
        futs, self._inflight = self._inflight, None
        code = pipe.transport.get_returncode() if pipe.transport is not None else None
        lost = sqlite3.OperationalError(
            "the SQLite writer process exited" + ("" if code is None else f" (code {code})")
        )
        for fut in futs or []:
            if not fut.done():
                fut.set_exception(lost)
        if self._jobs and not self._closed and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._send)
        self._wake_drained()

    async def _restart(self) -> None:
        try:
            await self.start()
        except Exception as exc:  # what waited for it fails (a 503, a worker's retry)
            futs, self._futs, self._jobs = self._futs, [], []
            for fut in futs:
                if not fut.done():
                    fut.set_exception(sqlite3.OperationalError(f"the SQLite writer process did not start: {exc}"))
        finally:
            self._starting = None
        self._send()

    def _wake_drained(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def close(self) -> None:
        """Answer what was submitted, then stop the child."""
        loop = asyncio.get_running_loop()
        while (self._jobs or self._inflight is not None) and (self._pipe is not None or self._starting is not None):
            self._drained = loop.create_future()
            if self._starting is not None:
                await self._starting
                continue
            await self._drained
        self._closed = True
        for fut in self._futs:
            if not fut.done():
                fut.set_exception(sqlite3.ProgrammingError("the store is closed"))
        self._jobs, self._futs = [], []
        pipe = self._pipe
        if pipe is not None and pipe.stdin is not None and pipe.transport is not None:
            pipe.stdin.close()  # the child finishes and exits
            try:
                await asyncio.wait_for(asyncio.shield(pipe.exited), _EXIT_SECONDS)
            except TimeoutError:
                pipe.transport.kill()
                await pipe.exited


# -- the child's end --------------------------------------------------------------------------


def _outcome(ok: bool, value: Any) -> tuple[bool, Any]:
    if ok:
        return True, value
    try:
        pickle.dumps(value, protocol=_PROTOCOL)
    except Exception:
        return False, sqlite3.OperationalError(f"{type(value).__name__}: {value}")
    return False, value


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(path: str) -> None:
    """Run the writes the server sends until it closes our stdin."""
    from bgmode.store.sqlite import _connect, run_round

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, not into the frames
    inp = sys.stdin.buffer
    conn = _connect(path)
    try:
        _write_all(out, _frame("ready"))
        while True:
            head = inp.read(4)
            if len(head) < 4:
                return
            n = int.from_bytes(head, "big")
            data = inp.read(n)
            if len(data) < n:
                return
            results = run_round(conn, pickle.loads(data))
            _write_all(out, _frame([_outcome(ok, value) for ok, value in results]))
    finally:
        with contextlib.suppress(sqlite3.Error):
            conn.close()


if __name__ == "__main__":
    main(sys.argv[1])
