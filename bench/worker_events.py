"""End to end: events a `bgmode serve` worker generates and persists per second.

    python bench/worker_events.py [--responses 100] [--tokens 2000]

The simulated model with no delay produces tokens as fast as the worker takes them; every
event goes through the ResponseBuilder, the flusher's group commit into SQLite and the
hub, exactly as in production. Reported: events persisted per second, counted from the
stored logs (last sequence number + 1 of every response). With `--rounds N` it runs N rounds
and prints the server's resident memory after each: it must stay flat, since nothing about
a response is kept in memory once it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

import httpx
from _procs import bgmode, stop


async def main_async(base: str, responses: int, tokens: int) -> tuple[float, int]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        body = {
            "model": "sim",
            "input": "bench",
            "background": True,
            "metadata": {"sim_output_tokens": str(tokens), "sim_token_delay_ms": "0"},
        }
        t0 = time.perf_counter()
        ids = [(await client.post("/responses", json=body)).json()["id"] for _ in range(responses)]
        pending = set(ids)
        while pending:
            await asyncio.sleep(0.1)  # a benchmark's poll, not a test's synchronisation
            for rid in list(pending):
                if (await client.get(f"/responses/{rid}")).json()["status"] not in ("queued", "in_progress"):
                    pending.discard(rid)
        wall = time.perf_counter() - t0
        events = 0
        for rid in ids:
            async with client.stream("GET", f"/responses/{rid}", params={"stream": "true"}) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data:"):
                        events += 1
    return wall, events


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--responses", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        server = bgmode(8321, f"sqlite:///{d}/w.db", "--workers", str(a.responses))
        try:
            for n in range(a.rounds):
                wall, events = asyncio.run(main_async("http://127.0.0.1:8321/v1", a.responses, a.tokens))
                print(
                    f"round {n + 1}: {a.responses} responses x {a.tokens} tokens: {events} events in {wall:.2f}s"
                    f" = {events / wall:,.0f} events/s generated and persisted; server RSS {rss_mib(server.pid):.0f} MiB"
                )
        finally:
            stop(server)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
