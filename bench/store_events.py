"""How many events per second a store persists through `Store.write` (the worker's flusher path).

    python bench/store_events.py                        # SQLite in a temp dir
    python bench/store_events.py --local-postgres       # + a throwaway PostgreSQL cluster (tests/pg.py)
    python bench/store_events.py postgresql://user@host/db sqlite:///tmp/x.db

`--responses` responses run at once; every `write()` call carries one `Write` per response
with `--per-write` events each (what one flusher batch looks like under load), and calls
follow each other as the flusher's do (one at a time per process; `--flushers` processes'
worth in parallel). Events are ~150-byte `response.output_text.delta` JSON.
`--json PATH` also writes {store kind ("sqlite", "postgresql"): events/s}. Importable: `bench(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

import orjson

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _procs import write_json

from bgmode.records import ResponseRecord, Status, StoredEvent
from bgmode.store import Store, Write, WriteResult, open_store


def delta(rid: str, seq: int) -> StoredEvent:
    data = {
        "type": "response.output_text.delta",
        "sequence_number": seq,
        "item_id": "msg_" + rid[5:],
        "output_index": 0,
        "content_index": 0,
        "delta": " token",
        "logprobs": [],
    }
    return StoredEvent(seq, "response.output_text.delta", orjson.dumps(data))


Batch = list[tuple[str, list[StoredEvent]]]


async def prepare(store: Store, worker: str, n_resp: int, per_write: int, events: int) -> list[Batch]:
    """Claim `n_resp` responses for `worker` and build the write() calls' events (off the clock)."""
    for i in range(n_resp):
        rid = f"resp_{worker}_{i:04d}_{time.time_ns()}"
        rec = ResponseRecord(rid, "t", Status.QUEUED.value, True, {"id": rid}, [], {}, time.time())
        await store.create(rec, [StoredEvent(0, "response.created", b"{}")])
    claimed = await store.claim(worker, n_resp, 600)
    assert len(claimed) == n_resp, "another worker claimed ours"
    rounds: list[Batch] = []
    for k in range(-(-events // (n_resp * per_write))):
        first = 1 + k * per_write
        rounds.append([(r.id, [delta(r.id, q) for q in range(first, first + per_write)]) for r in claimed])
    return rounds


async def flush(store: Store, worker: str, rounds: list[Batch]) -> int:
    """Write the batches one after the other, as the worker's flusher does."""
    written = 0
    for batch in rounds:
        res = await store.write(worker, [Write(rid, evs) for rid, evs in batch])
        assert all(x is WriteResult.OK for x in res), res
        written += sum(len(evs) for _, evs in batch)
    return written


async def bench(url: str, events: int, n_resp: int, per_write: int, flushers: int) -> float:
    store = open_store(url)
    await store.open()
    try:
        warm = await prepare(store, "warm", n_resp, per_write, n_resp * per_write * 5)
        await flush(store, "warm", warm)
        work = [await prepare(store, f"w{i}", n_resp, per_write, events // flushers) for i in range(flushers)]
        t = time.perf_counter()
        counts = await asyncio.gather(*(flush(store, f"w{i}", rounds) for i, rounds in enumerate(work)))
        elapsed = time.perf_counter() - t
    finally:
        await store.close()
    total = sum(counts)
    rate = total / elapsed
    print(
        f"{url.split('?')[0]:<50} {total:>8} events in {elapsed:6.2f}s: {rate:>9,.0f} events/s "
        f"({n_resp} responses x {per_write} events per write(), {flushers} flusher(s))"
    )
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("urls", nargs="*")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--responses", type=int, default=16)
    ap.add_argument("--per-write", type=int, default=25)
    ap.add_argument("--flushers", type=int, default=1)
    ap.add_argument("--local-postgres", action="store_true", help="start a throwaway cluster (needs initdb)")
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bgmode-bench-")
    urls = list(args.urls) or [f"sqlite:///{tmp}/bench.db"]
    cluster = None
    if args.local_postgres:
        from tests.pg import admin, start_local_cluster, with_database

        cluster = start_local_cluster()
        asyncio.run(admin(cluster.url, "CREATE DATABASE bench"))
        urls.append(with_database(cluster.url, "bench"))
    rates: dict[str, float] = {}
    try:
        for url in urls:
            rate = asyncio.run(bench(url, args.events, args.responses, args.per_write, args.flushers))
            kind = url.split(":")[0]  # "sqlite" or "postgresql": no path, no credentials
            rates[kind if kind not in rates else f"{kind}#{len(rates)}"] = rate
        write_json(args.json, rates)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
