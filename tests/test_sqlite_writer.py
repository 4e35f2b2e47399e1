"""The SQLite writer process (`store/sqlite_writer.py`): a real `bgmode serve`, its writer
child found through /proc, killed and orphaned on purpose; and the store's writes across the
pipe."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from bgmode.store.base import ConversationRecord
from bgmode.store.sqlite import SQLiteStore
from tests.serving import BgmodeServer

BODY = {"model": "sim", "input": "hi", "background": True, "metadata": {"sim_output_tokens": "3"}}


def writer_pid(server_pid: int) -> int:
    """The server's child running `bgmode.store.sqlite_writer` (there is exactly one)."""
    found = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"bgmode.store.sqlite_writer" in cmdline:
                found.append(int(child))
    assert len(found) == 1, found
    return found[0]


def gone(pid: int, within: float = 30) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":  # exited, not yet reaped
            return True
        time.sleep(0.05)  # polling a process table: there is nothing to wait on
    return False


def settled(c: httpx.Client, rid: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = str(c.get(f"/responses/{rid}").json()["status"])
        if status not in ("queued", "in_progress"):
            return status
        time.sleep(0.05)  # polling, as a client does
    raise AssertionError(f"{rid} did not finish")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_a_dead_writer_is_replaced_and_nothing_committed_is_lost(
    make_server: type[BgmodeServer], sig: signal.Signals
) -> None:
    # a write the dead writer committed without answering is refused when the worker retries
    # it (its positions are taken): that response is settled once its lease expires, as after
    # a worker's crash (the simulated model cannot resume: failed, "worker was lost")
    server = make_server(args=["--lease-seconds", "2"]).start()
    assert server.proc is not None
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        before = [c.post("/responses", json=BODY).json()["id"] for _ in range(5)]
        first = writer_pid(server.proc.pid)
        os.kill(first, sig)
        assert gone(first)
        # a write that found it dead fails as a store error (never a lost create), and the
        # next ones go to a new writer
        answers = [c.post("/responses", json=BODY) for _ in range(5)]
        assert all(r.status_code in (200, 503) for r in answers), [r.text for r in answers]
        assert answers[-1].status_code == 200
        assert writer_pid(server.proc.pid) != first
        after = [r.json()["id"] for r in answers if r.status_code == 200]
        for rid in before + after:
            assert settled(c, rid) in ("completed", "failed")
        assert settled(c, after[-1]) == "completed"
        assert settled(c, c.post("/responses", json=BODY).json()["id"]) == "completed"


def test_the_writer_leaves_with_a_killed_server_and_the_next_server_writes(make_server: type[BgmodeServer]) -> None:
    server = make_server().start()
    assert server.proc is not None
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        rid = c.post("/responses", json=BODY).json()["id"]
        assert settled(c, rid) == "completed"
    child = writer_pid(server.proc.pid)
    server.kill()  # SIGKILL: no shutdown at all
    assert gone(child)
    server.start()
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        assert settled(c, rid) == "completed"
        assert settled(c, c.post("/responses", json=BODY).json()["id"]) == "completed"


def test_a_terminated_server_stops_its_writer(make_server: type[BgmodeServer]) -> None:
    server = make_server().start()
    assert server.proc is not None
    child = writer_pid(server.proc.pid)
    os.kill(child, signal.SIGTERM)  # ignored: the server decides when its writer ends
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        assert c.post("/responses", json=BODY).status_code == 200
    assert writer_pid(server.proc.pid) == child
    assert server.terminate() in (0, -15)  # uvicorn re-raises SIGTERM after its graceful shutdown
    assert gone(child)


async def test_one_failing_write_in_a_round_fails_alone_across_the_pipe(tmp_path: Path) -> None:
    """Writes submitted in one turn of the event loop reach the writer process in one frame and
    one transaction; the one that fails (a duplicate id) gets its own exception back, the
    others are committed."""
    store = SQLiteStore(str(tmp_path / "w.db"))
    await store.open()
    try:
        now = time.time()
        first = ConversationRecord("conv_a", "t", now, {})
        results = await asyncio.gather(
            store.conversation_create(first, [{"id": "msg_1", "type": "message"}]),
            store.conversation_create(ConversationRecord("conv_a", "t", now, {"x": "1"}), []),
            store.conversation_create(ConversationRecord("conv_b", "t", now, {}), []),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], sqlite3.IntegrityError)
        got = await store.conversation_get("conv_a")
        assert got is not None and got.metadata == {}
        assert await store.conversation_get("conv_b") is not None
        page = await store.conversation_items("conv_a", None, 10, "asc")
        assert page is not None and [i["id"] for i in page[0]] == ["msg_1"]
    finally:
        await store.close()


async def test_a_memory_store_works_and_leaves_nothing_behind() -> None:
    """`sqlite:///:memory:`: written by the writer process, read by the readers, gone at close."""
    store = SQLiteStore(":memory:")
    await store.open()
    folder = os.path.dirname(store.path)
    try:
        await store.conversation_create(ConversationRecord("conv_m", "t", time.time(), {"k": "v"}), [])
        got = await store.conversation_get("conv_m")
        assert got is not None and got.metadata == {"k": "v"}
    finally:
        await store.close()
    assert not os.path.exists(folder)
    assert store.path == ":memory:"


async def test_closing_a_store_ends_its_writer_cleanly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`close()` lets the child exit on its own: its exit status is read once, by the event
    loop's child watcher (closing the transport early reaped it behind the watcher's back:
    "Unknown child process pid ..., will report returncode 255")."""
    caplog.set_level(logging.WARNING)
    for i in range(20):
        store = SQLiteStore(str(tmp_path / f"w{i}.db"))
        await store.open()
        assert store._writer is not None
        pipe = store._writer._pipe
        assert pipe is not None and pipe.transport is not None
        transport = pipe.transport
        await asyncio.gather(*(store.secret(f"k{j}", b"v" * 1000) for j in range(50)))
        await store.close()
        assert transport.get_returncode() == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
