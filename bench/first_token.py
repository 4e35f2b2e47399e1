"""Time to first token of one response at a time: bgmode (background + stream, through its chat
backend) against reading the same upstream directly.

    python bench/first_token.py [--n 300] [--store URL] [--src PATH] [--json PATH]

The upstream is the fake Chat Completions server (tests/fake_upstream.py, its own process,
3 tokens, no delay); one client sends N requests one after the other and times each from
its send to the line carrying the first token (" tok0"); the first 20 of each way are warm-up
and not counted. `--store` runs bgmode on another store (a PostgreSQL URL: the database must
exist and be empty; default a fresh SQLite file). `--src` runs another checkout's bgmode
(`git worktree add /tmp/base REV`, then `--src /tmp/base/src`) for before/after runs.

What it shows: bgmode's own latency on a response's way to its first token (the create, its
commit, the worker's start, the relay), with no other load on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from typing import Any

import aiohttp
from _procs import bgmode, free_port, stop, write_json
from relay import CHAT, FIRST_TOKEN, upstream

WARMUP = 20


async def _times(url: str, body: dict[str, object], end: bytes, n: int) -> list[float]:
    out: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n + WARMUP):
            t0 = time.perf_counter()
            first = 0.0
            async with session.post(url, json=body) as resp:
                resp.raise_for_status()
                async for line in resp.content:
                    if not first and FIRST_TOKEN in line:
                        first = time.perf_counter() - t0
                    if end in line:
                        break
            out.append(first * 1000)
    return out[WARMUP:]


def _stats(ms: list[float]) -> dict[str, Any]:
    q = statistics.quantiles(ms, n=100)
    return {"n": len(ms), "median_ms": statistics.median(ms), "p10_ms": q[9], "p90_ms": q[89], "p99_ms": q[98]}


def measure(n: int = 300, store: str | None = None, src: str | None = None) -> dict[str, Any]:
    """{"direct": stats, "bgmode": stats} in one run against one upstream."""
    out: dict[str, Any] = {}
    with upstream(3, 0) as up, tempfile.TemporaryDirectory() as d:
        out["direct"] = _stats(asyncio.run(_times(f"{up}/chat/completions", CHAT, b"[DONE]", n)))
        port = free_port()
        args = ["--workers", "4", "--upstream-url", up, "--upstream-api", "chat"]
        saved = os.environ.get("PYTHONPATH")
        if src:  # the server's bgmode (`_procs.start` passes PYTHONPATH on); this process only talks HTTP
            os.environ["PYTHONPATH"] = src
        try:
            server = bgmode(port, store or f"sqlite:///{d}/first_token.db", *args)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        try:
            body: dict[str, object] = {"model": "m", "input": "hi", "background": True, "stream": True}
            url = f"http://127.0.0.1:{port}/v1/responses"
            out["bgmode"] = _stats(asyncio.run(_times(url, body, b'"response.completed"', n)))
        finally:
            stop(server)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--store", help="bgmode's store URL (default: a fresh SQLite file)")
    ap.add_argument("--src", help="another checkout's src/ to run bgmode from")
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    res = measure(a.n, a.store, a.src)
    for way, s in res.items():
        print(
            f"{way:8} first token median {s['median_ms']:.2f} ms  p10 {s['p10_ms']:.2f}  p90 {s['p90_ms']:.2f}"
            f"  p99 {s['p99_ms']:.2f}  (n={s['n']})"
        )
    print(f"bgmode - direct (medians): {res['bgmode']['median_ms'] - res['direct']['median_ms']:+.2f} ms")
    if a.json:
        write_json(a.json, res)


if __name__ == "__main__":
    main()
