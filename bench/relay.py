"""200 streams relayed through bgmode versus read from the upstream directly.

    python bench/relay.py [--streams 200] [--tokens 100] [--delay-ms 20]

The upstream is the fake Chat Completions server (tests/fake_upstream.py, in its own
process) streaming TOKENS deltas at DELAY_MS each (a model's pace). "direct" reads its
`/v1/chat/completions` streams; "relayed" creates background+stream responses on bgmode
(chat backend, every event persisted to SQLite) and reads them to `response.completed`.
Target: relayed wall time within 1.10x of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time

import aiohttp
from _procs import bgmode, start, stop


async def one(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], end: bytes, token: bytes
) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    n = 0
    first = 0.0
    async with session.post(url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if line.startswith(b"data:"):
                n += 1
                if not first and token in line:
                    first = time.perf_counter() - t0
                if end in line:
                    break
    return time.perf_counter() - t0, n, first


async def run(
    url: str, body: dict[str, object], end: bytes, token: bytes, streams: int
) -> tuple[float, list[float], int, list[float]]:
    # aiohttp (a C parser) keeps the measuring client's own cost low: it shares the machine
    connector = aiohttp.TCPConnector(limit=streams + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(session, url, body, end, token) for _ in range(streams)))
        wall = time.perf_counter() - t0
    return wall, [r[0] for r in results], sum(r[1] for r in results), [r[2] for r in results]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--delay-ms", type=float, default=20)
    ap.add_argument("--only", choices=["direct", "relayed"], help="run one side (for profiling)")
    a = ap.parse_args()
    up = start(
        [sys.executable, "tests/fake_upstream.py", "8311", str(a.tokens), str(a.delay_ms)],
        "http://127.0.0.1:8311/v1/models",
    )
    with tempfile.TemporaryDirectory() as d:
        try:
            server = bgmode(
                8312,
                f"sqlite:///{d}/relay.db",
                "--workers",
                str(a.streams + 10),
                "--upstream-url",
                "http://127.0.0.1:8311/v1",
                "--upstream-api",
                "chat",
            )
        except Exception:
            stop(up)
            raise
        try:
            skip = (0.0, [0.0], 0, [0.0])
            direct = (
                skip
                if a.only == "relayed"
                else asyncio.run(
                    run(
                        "http://127.0.0.1:8311/v1/chat/completions",
                        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
                        b"[DONE]",
                        b'"content"',
                        a.streams,
                    )
                )
            )
            relayed = (
                skip
                if a.only == "direct"
                else asyncio.run(
                    run(
                        "http://127.0.0.1:8312/v1/responses",
                        {"model": "m", "input": "hi", "background": True, "stream": True},
                        b'"response.completed"',
                        b'"response.output_text.delta"',
                        a.streams,
                    )
                )
            )
        finally:
            stop(server, up)
    for name, (wall, each, events, ttft) in (("direct", direct), ("relayed", relayed)):
        print(
            f"{name:8s} wall {wall:6.2f}s  per stream median {statistics.median(each):5.2f}s "
            f"max {max(each):5.2f}s  first token median {statistics.median(ttft) * 1000:4.0f}ms "
            f"max {max(ttft) * 1000:4.0f}ms  events {events}"
        )
    if not a.only:
        print(f"ratio (wall): {relayed[0] / direct[0]:.2f}x (target <= 1.10x)")


if __name__ == "__main__":
    main()
