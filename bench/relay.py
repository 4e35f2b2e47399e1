"""Streams relayed through bgmode versus read from the upstream directly (and through
LiteLLM's proxy, when it is installed).

    python bench/relay.py [--streams 200] [--tokens 100] [--delay-ms 20] [--litellm PATH] [--json PATH]

The upstream is the fake Chat Completions server (tests/fake_upstream.py, in its own
process) streaming TOKENS deltas at DELAY_MS each (a model's pace). The ways:

- "direct" reads its `/v1/chat/completions` streams;
- "bgmode" creates background+stream responses on bgmode (chat backend, every event
  persisted to SQLite) and reads them to `response.completed`;
- "litellm" reads the same chat streams through a LiteLLM proxy (`litellm --config`, one
  worker, the fake upstream as its model `openai/m`);
- "litellm_responses" reads `/v1/responses` streams (not background) from the same proxy,
  which bridges them to the upstream's chat completions (`use_chat_completions_api`): the
  same conversion bgmode does, without persisting anything.

The LiteLLM ways run when its `litellm` executable is found: `--litellm PATH`, else
$BENCH_LITELLM, else `litellm` on PATH or next to this Python, else this Python if it can
`import litellm`. Install it in a venv of its own so it cannot move the project's pins:
`python3 -m venv /opt/litellm && /opt/litellm/bin/pip install 'litellm[proxy]'`, then
`--litellm /opt/litellm/bin/litellm`. The proxy is started offline (local model cost map)
and with a master key generated per run.

All streams start at once; per stream: wall time, time to the first token (" tok0"), events.
Target: bgmode's wall time within 1.10x of direct (100 tokens; 1.05x at 500), median time
to first token <= direct + 50 ms.
Importable: `upstream(...)`, then `measure(way, upstream_url, streams)` per way.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import secrets
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
LITELLM_MISSING = "LiteLLM not found (pip install 'litellm[proxy]', then --litellm PATH or BENCH_LITELLM=PATH)"
LITELLM_WAYS = ["litellm", "litellm_responses"]


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


async def run(
    url: str, body: dict[str, object], end: bytes, streams: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    # aiohttp (a C parser) keeps the measuring client's own cost low: it shares the machine
    connector = aiohttp.TCPConnector(limit=streams + 10)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
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


_litellm_path: str | None = None  # --litellm PATH


def use_litellm(path: str | None) -> None:
    """Start LiteLLM's proxy from this executable (`--litellm PATH`); None: look for it."""
    global _litellm_path
    _litellm_path = path


def executable_file(path: str | None) -> bool:
    return bool(path) and os.path.isfile(str(path)) and os.access(str(path), os.X_OK)


def litellm_command() -> list[str] | None:
    """The command that runs LiteLLM's proxy CLI, or None when there is none. The bench only
    talks HTTP to the proxy, so LiteLLM may live in a venv of its own."""
    if _litellm_path is not None:
        return [_litellm_path] if executable_file(_litellm_path) else None
    for path in (
        os.environ.get("BENCH_LITELLM"),
        shutil.which("litellm"),
        str(Path(sys.executable).with_name("litellm")),
    ):
        if executable_file(path):
            return [str(path)]
    if importlib.util.find_spec("litellm") is not None:
        return [sys.executable, "-c", "from litellm.proxy.proxy_cli import run_server; run_server()"]
    return None


def litellm_available() -> bool:
    return litellm_command() is not None


def litellm_version() -> str | None:
    """The installed LiteLLM's version, read from its package metadata by the Python its
    executable runs on (without importing LiteLLM, which takes seconds)."""
    cmd = litellm_command()
    if cmd is None:
        return None
    python = cmd[0]
    if python != sys.executable:
        try:
            with open(python, "rb") as f:
                first = f.readline()
        except OSError:
            return None
        if not first.startswith(b"#!"):
            return None
        python = first[2:].decode().strip().split()[0]
    probe = "import importlib.metadata as m; print(m.version('litellm'))"
    try:
        r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


# No network at start (the model cost map is read from the package, not fetched), errors only
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_DISABLE_BUG_REPORT_LINK": "True",
}


def _litellm(up: str, d: str) -> tuple[subprocess.Popen[bytes], int, dict[str, str]]:
    """A LiteLLM proxy in front of the upstream: the process, its port, the headers to send.
    Model "m" for chat completions; "m-bridge" for /v1/responses, which LiteLLM turns into
    chat completions upstream. It refuses to start without a master key: one per run."""
    cmd = litellm_command()
    if cmd is None:
        raise RuntimeError(LITELLM_MISSING)
    key = "sk-bench-" + secrets.token_hex(32)
    params = {"model": "openai/m", "api_base": up, "api_key": "none"}
    config = {
        "model_list": [
            {"model_name": "m", "litellm_params": params},
            {"model_name": "m-bridge", "litellm_params": {**params, "use_chat_completions_api": True}},
        ],
        "litellm_settings": {"telemetry": False, "callbacks": [], "success_callback": [], "failure_callback": []},
        "general_settings": {"master_key": key},
    }
    cfg = Path(d) / "litellm.yaml"
    cfg.write_text(json.dumps(config, indent=1))  # JSON is YAML
    port = free_port()
    args = ["--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    proc = start([*cmd, *args], f"http://127.0.0.1:{port}/health/liveliness", timeout=120, env=LITELLM_ENV)
    return proc, port, {"Authorization": f"Bearer {key}"}


CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def measure(way: str, up: str, streams: int, workers: int | None = None) -> dict[str, Any]:
    """`streams` concurrent streams one way ("direct", "bgmode", "litellm",
    "litellm_responses"); the relaying server's RSS is sampled throughout ("rss": [(s, KiB)])."""
    headers: dict[str, str] | None = None

    def go(url: str, body: dict[str, object], end: bytes) -> dict[str, Any]:
        return asyncio.run(run(url, body, end, streams, headers))

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
        elif way in LITELLM_WAYS:
            server, port, headers = _litellm(up, d)
            if way == "litellm":
                url, body, end = f"http://127.0.0.1:{port}/v1/chat/completions", CHAT, b"[DONE]"
            else:
                url = f"http://127.0.0.1:{port}/v1/responses"
                body, end = {"model": "m-bridge", "input": "hi", "stream": True}, b'"response.completed"'
            # its first request pays a one-time lazy initialisation (~0.8 s here): not relaying
            asyncio.run(run(url, body, end, 1, headers))
        else:
            raise ValueError(f"unknown way {way!r}")
        try:
            with RssSampler(server.pid) as rss:
                out = go(url, body, end)
            out["rss"] = rss.samples
            if way == "bgmode":
                out["stages_ms"] = server_stages(f"http://127.0.0.1:{port}/metrics")
            if way in LITELLM_WAYS:
                out["version"] = litellm_version()
            return out
        finally:
            stop(server)


def server_stages(metrics_url: str) -> dict[str, float]:
    """bgmode's own view of the streams just relayed, from its /metrics histograms (exact
    means: sum / count): create -> a worker starts it ("queued"), create -> first output
    ("first_token"). The client's time to first token minus "first_token" is the HTTP way in
    and the event's way out."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as r:
        text = r.read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    out = {}
    for stage, name in (
        ("queued", "bgmode_response_queue_seconds"),
        ("first_token", "bgmode_response_first_token_seconds"),
    ):
        n = sums.get(f"{name}_count", 0.0)
        if n:
            out[stage] = 1000 * sums[f"{name}_sum"] / n
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--delay-ms", type=float, default=20)
    ways_all = ["direct", "bgmode", "relayed", *LITELLM_WAYS]
    ap.add_argument("--only", choices=ways_all, help="run one way (for profiling)")
    ap.add_argument("--litellm", metavar="PATH", help="LiteLLM's `litellm` executable (default: found, see above)")
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    if a.litellm is not None:
        if not executable_file(a.litellm):
            ap.error(f"--litellm: {a.litellm} is not an executable file")
        use_litellm(a.litellm)
    ways = ["direct", "bgmode"] + (LITELLM_WAYS if litellm_available() else [])
    if a.only:
        ways = ["bgmode" if a.only == "relayed" else a.only]
    result: dict[str, Any] = {}
    with upstream(a.tokens, a.delay_ms) as up:
        for way in ways:
            result[way] = measure(way, up, a.streams)
    for way, r in result.items():
        print(
            f"{way:17s} wall {r['wall_s']:6.2f}s  per stream median {statistics.median(r['per_stream_s']):5.2f}s "
            f"max {max(r['per_stream_s']):5.2f}s  first token median {statistics.median(r['ttft_s']) * 1000:4.0f}ms "
            f"max {max(r['ttft_s']) * 1000:4.0f}ms  events {r['events']}"
        )
    stages = result.get("bgmode", {}).get("stages_ms")
    if stages:
        ttft = statistics.fmean(result["bgmode"]["ttft_s"]) * 1000
        print(
            f"bgmode stages (means, ms): create -> started {stages.get('queued', float('nan')):.0f}, "
            f"create -> first token {stages.get('first_token', float('nan')):.0f} (server side); "
            f"client's first token {ttft:.0f}"
        )
    if "direct" in result and "bgmode" in result:
        print(f"ratio (wall): {result['bgmode']['wall_s'] / result['direct']['wall_s']:.2f}x (target <= 1.10x)")
    for way in LITELLM_WAYS:
        if "direct" in result and way in result:
            print(f"{way} / direct (wall): {result[way]['wall_s'] / result['direct']['wall_s']:.2f}x")
    if not litellm_available():
        print(LITELLM_MISSING)
    write_json(a.json, result)


if __name__ == "__main__":
    main()
