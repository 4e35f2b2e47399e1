"""Streams relayed through bgmode versus read from the upstream directly (and through
LiteLLM's proxy, when it is installed).

    python bench/relay.py [--streams 200] [--tokens 100] [--delay-ms 20] [--json PATH]

The upstream is the fake Chat Completions server (tests/fake_upstream.py, in its own
process) streaming TOKENS deltas at DELAY_MS each (a model's pace). The ways:

- "direct" reads its `/v1/chat/completions` streams;
- "bgmode" creates background+stream responses on bgmode (chat backend, every event
  persisted to SQLite) and reads them to `response.completed`;
- "litellm" (only if `import litellm` works: `pip install 'litellm[proxy]'`) reads the same
  chat streams through a LiteLLM proxy configured with the fake upstream as its one model.

All streams start at once; per stream: wall time, time to the first token (" tok0"), events.
Target: bgmode's wall time within 1.10x of direct (100 tokens; 1.05x at 500), median time
to first token <= direct + 50 ms.
Importable: `upstream(...)`, then `measure(way, upstream_url, streams)` per way.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from _procs import RssSampler, bgmode, free_port, start, stop, write_json

FIRST_TOKEN = b"tok0"  # the fake's first delta is " tok0", whichever way it is framed
LITELLM_MISSING = "LiteLLM not installed (pip install 'litellm[proxy]')"


async def one(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], end: bytes
) -> tuple[float, int, float]:
    t0 = time.perf_counter()
    n = 0
    first = 0.0
    async with session.post(url, json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if line.startswith(b"data:"):
                n += 1
                if not first and FIRST_TOKEN in line:
                    first = time.perf_counter() - t0
                if end in line:
                    break
    return time.perf_counter() - t0, n, first


async def run(url: str, body: dict[str, object], end: bytes, streams: int) -> dict[str, Any]:
    # aiohttp (a C parser) keeps the measuring client's own cost low: it shares the machine
    connector = aiohttp.TCPConnector(limit=streams + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one(session, url, body, end) for _ in range(streams)))
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "per_stream_s": [r[0] for r in results],
        "ttft_s": [r[2] for r in results],
        "events": sum(r[1] for r in results),
    }


@contextmanager
def upstream(tokens: int, delay_ms: float) -> Iterator[str]:
    """The fake Chat Completions upstream in its own process: yields its base URL."""
    port = free_port()
    proc = start(
        [sys.executable, "tests/fake_upstream.py", str(port), str(tokens), str(delay_ms)],
        f"http://127.0.0.1:{port}/v1/models",
    )
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


def litellm_available() -> bool:
    return importlib.util.find_spec("litellm") is not None


def _litellm(up: str, d: str) -> tuple[subprocess.Popen[bytes], int]:
    cfg = Path(d) / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: m\n"
        "    litellm_params:\n"
        "      model: openai/m\n"
        f"      api_base: {up}\n"
        "      api_key: none\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = free_port()
    exe = shutil.which("litellm") or str(Path(sys.executable).with_name("litellm"))
    proc = start(
        [exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        f"http://127.0.0.1:{port}/health/liveliness",
        timeout=120,
        env={"LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )
    return proc, port


CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def measure(way: str, up: str, streams: int, workers: int | None = None) -> dict[str, Any]:
    """`streams` concurrent streams one way ("direct", "bgmode", "litellm"); the relaying
    server's RSS is sampled throughout ("rss": [(s, KiB)])."""

    def go(url: str, body: dict[str, object], end: bytes) -> dict[str, Any]:
        return asyncio.run(run(url, body, end, streams))

    if way == "direct":
        return go(f"{up}/chat/completions", CHAT, b"[DONE]")
    with tempfile.TemporaryDirectory() as d:
        if way == "bgmode":
            port = free_port()
            args = ["--workers", str(workers or streams + 10), "--upstream-url", up, "--upstream-api", "chat"]
            server = bgmode(port, f"sqlite:///{d}/relay.db", *args)
            url = f"http://127.0.0.1:{port}/v1/responses"
            body: dict[str, object] = {"model": "m", "input": "hi", "background": True, "stream": True}
            end = b'"response.completed"'
        elif way == "litellm":
            server, port = _litellm(up, d)
            url, body, end = f"http://127.0.0.1:{port}/v1/chat/completions", CHAT, b"[DONE]"
        else:
            raise ValueError(f"unknown way {way!r}")
        try:
            with RssSampler(server.pid) as rss:
                out = go(url, body, end)
            out["rss"] = rss.samples
            return out
        finally:
            stop(server)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--delay-ms", type=float, default=20)
    ap.add_argument("--only", choices=["direct", "bgmode", "relayed", "litellm"], help="run one way (for profiling)")
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    ways = ["direct", "bgmode"] + (["litellm"] if litellm_available() else [])
    if a.only:
        ways = ["bgmode" if a.only == "relayed" else a.only]
    result: dict[str, Any] = {}
    with upstream(a.tokens, a.delay_ms) as up:
        for way in ways:
            result[way] = measure(way, up, a.streams)
    for way, r in result.items():
        print(
            f"{way:8s} wall {r['wall_s']:6.2f}s  per stream median {statistics.median(r['per_stream_s']):5.2f}s "
            f"max {max(r['per_stream_s']):5.2f}s  first token median {statistics.median(r['ttft_s']) * 1000:4.0f}ms "
            f"max {max(r['ttft_s']) * 1000:4.0f}ms  events {r['events']}"
        )
    if "direct" in result and "bgmode" in result:
        print(f"ratio (wall): {result['bgmode']['wall_s'] / result['direct']['wall_s']:.2f}x (target <= 1.10x)")
    if not litellm_available():
        print(LITELLM_MISSING)
    write_json(a.json, result)


if __name__ == "__main__":
    main()
