"""Readers: replaying a long event log to one client, and many clients tailing one response live.

    python bench/readers.py [--events 10000] [--tailers 100]

1. Replay: one finished response with `--events` events (simulated model, no delay); time to
   read its whole log with `GET ?stream=true` (target < 0.2 s for 10,000 events).
2. Live tail: `--tailers` SSE clients follow one running response (a token every 10 ms); for
   each delta, the lag between the first client seeing it and each client seeing it, p50/p99
   (target p99 < 50 ms).
3. Memory: RSS of the server before and after 1,000 queued responses (workers 0), per response
   (target < 50 KB).

    python bench/readers.py --json PATH     # also write the numbers as JSON

Importable: `replay`, `tail`, `memory` (given a running server), or `measure()` for all three.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import aiohttp
import httpx
from _procs import bgmode, free_port, quantile, rss_kib, stop, write_json


async def replay(base: str, events: int) -> float:
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        body = {
            "model": "sim",
            "input": "replay",
            "background": True,
            "metadata": {"sim_output_tokens": str(events - 10), "sim_token_delay_ms": "0"},
        }
        rid = (await http.post("/responses", json=body)).json()["id"]
        async with http.stream("GET", f"/responses/{rid}", params={"stream": "true"}) as s:
            async for _ in s.aiter_bytes():
                pass
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            n = 0
            async with http.stream("GET", f"/responses/{rid}", params={"stream": "true"}) as s:
                async for chunk in s.aiter_bytes():
                    n += chunk.count(b"\ndata: ")
            best = min(best, time.perf_counter() - t0)
        print(f"replay: {n} events in {best * 1000:.0f} ms (best of 3)")
        return best


async def tail(base: str, tailers: int) -> list[float]:
    """aiohttp for the clients: its C parser keeps the measuring side from being the bottleneck."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as http:
        body = {
            "model": "sim",
            "input": "tail",
            "background": True,
            "metadata": {"sim_output_tokens": "300", "sim_token_delay_ms": "10"},
        }
        rid = (await http.post("/responses", json=body)).json()["id"]
    seen: dict[int, list[float]] = {}
    connector = aiohttp.TCPConnector(limit=tailers + 10)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def follow() -> None:
            async with session.get(f"{base}/responses/{rid}", params={"stream": "true"}) as r:
                async for chunk in r.content.iter_any():
                    now = time.perf_counter()
                    for part in chunk.split(b'"sequence_number":')[1:]:
                        seq = int(part.split(b"}")[0].split(b",")[0])
                        seen.setdefault(seq, []).append(now)

        await asyncio.gather(*(follow() for _ in range(tailers)))
    lags = [(t - min(ts)) * 1000 for ts in seen.values() for t in ts]
    q = statistics.quantiles(lags, n=100)
    print(f"live tail: {tailers} clients, {len(seen)} events each; lag p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms")
    return lags


async def memory(base: str, pid: int, n: int = 1000) -> float:
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        before = rss_kib(pid)
        for i in range(n):
            await http.post("/responses", json={"model": "sim", "input": f"queued {i}", "background": True})
        after = rss_kib(pid)
    per = (after - before) * 1024 / n
    print(f"memory: {n} queued responses: RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, {per / 1024:.1f} KB each")
    return per


async def measure(events: int = 10_000, tailers: int = 100, queued: int = 1000) -> dict[str, Any]:
    """All three: {"replay_s", "replay_events", "lag_ms": {"p50", "p99"}, "rss_per_queued_bytes"}."""
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        server = bgmode(port, f"sqlite:///{d}/r.db")
        try:
            best = await replay(f"http://127.0.0.1:{port}/v1", events)
            lags = await tail(f"http://127.0.0.1:{port}/v1", tailers)
        finally:
            stop(server)
        port = free_port()
        api = bgmode(port, f"sqlite:///{d}/m.db", "--workers", "0")
        try:
            per = await memory(f"http://127.0.0.1:{port}/v1", api.pid, queued)
        finally:
            stop(api)
    return {
        "replay_s": best,
        "replay_events": events,
        "tailers": tailers,
        "lag_ms": {"p50": quantile(lags, 0.5), "p99": quantile(lags, 0.99)},
        "rss_per_queued_bytes": per,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--tailers", type=int, default=100)
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    write_json(a.json, await measure(a.events, a.tailers))


if __name__ == "__main__":
    asyncio.run(main())
