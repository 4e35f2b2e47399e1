"""End to end: events a `bgmode serve` worker generates and persists per second.

    python bench/worker_events.py [--responses 100] [--tokens 2000]

The simulated model with no delay produces tokens as fast as the worker takes them; every
event goes through the ResponseBuilder, the flusher's group commit into SQLite and the
hub, exactly as in production. Reported: events persisted per second, counted from the
stored logs (last sequence number + 1 of every response). With `--rounds N` it runs N rounds
and prints the server's resident memory after each: it must stay flat, since nothing about
a response is kept in memory once it ends. `--json PATH` also writes the numbers;
importable: `measure(responses, tokens)`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

import httpx
from _procs import bgmode, free_port, stop, write_json


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


def measure(responses: int = 100, tokens: int = 2000) -> dict[str, Any]:
    """One round on a fresh server: {"events", "wall_s", "events_per_s", "rss_mib"}."""
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        server = bgmode(port, f"sqlite:///{d}/w.db", "--workers", str(responses))
        try:
            wall, events = asyncio.run(main_async(f"http://127.0.0.1:{port}/v1", responses, tokens))
            return {"events": events, "wall_s": wall, "events_per_s": events / wall, "rss_mib": rss_mib(server.pid)}
        finally:
            stop(server)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--responses", type=int, default=100)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", help="also write the numbers (one entry per round) to this file")
    a = ap.parse_args()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        server = bgmode(port, f"sqlite:///{d}/w.db", "--workers", str(a.responses))
        try:
            for n in range(a.rounds):
                wall, events = asyncio.run(main_async(f"http://127.0.0.1:{port}/v1", a.responses, a.tokens))
                rounds.append(
                    {"events": events, "wall_s": wall, "events_per_s": events / wall, "rss_mib": rss_mib(server.pid)}
                )
                print(
                    f"round {n + 1}: {a.responses} responses x {a.tokens} tokens: {events} events in {wall:.2f}s"
                    f" = {events / wall:,.0f} events/s generated and persisted; server RSS {rss_mib(server.pid):.0f} MiB"
                )
        finally:
            stop(server)
    write_json(a.json, rounds)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
