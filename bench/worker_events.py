"""End to end: events a `bgmode serve` worker generates and persists per second.

    python bench/worker_events.py [--responses 100] [--tokens 2000]

The simulated model with no delay produces tokens as fast as the worker takes them; every
event goes through the ResponseBuilder, the flusher's group commit into SQLite and the
hub, exactly as in production. Reported: events persisted per second, counted from the
stored logs (last sequence number + 1 of every response).
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
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        server = bgmode(8321, f"sqlite:///{d}/w.db", "--workers", str(a.responses))
        try:
            wall, events = asyncio.run(main_async("http://127.0.0.1:8321/v1", a.responses, a.tokens))
        finally:
            stop(server)
    print(f"{a.responses} responses x {a.tokens} tokens: {events} events in {wall:.2f}s")
    print(f"events generated and persisted: {events / wall:,.0f}/s")


if __name__ == "__main__":
    main()
