"""bgmode under load: create latency while relayed jobs run, and memory per response.

    python bench/loaded.py [--jobs 200] [--seconds 8] [--queued 1000] [--json PATH]

1. Sequential creates while relayed jobs run: `--jobs` background responses relayed from
   the fake Chat Completions upstream (tests/fake_upstream.py, a token every 20 ms, long
   enough to outlast the measurement; every event persisted to SQLite) run while one client
   sends background creates one after the other for `--seconds` (the simulated model, one
   token each). The same creates on the same server before the jobs start are the baseline.
   Target: p99 <= 20 ms while the jobs run.
2. Memory: the server's RSS with `--jobs` responses running (simulated model, a token every
   100 ms) and `--queued` more queued behind them (every worker slot busy), over the RSS
   before; per response. Sampled every 0.2 s throughout (`rss`). Target: < 50 KB each.

Importable: `seq_creates(...)`, `rss_mixed(...)`.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from _procs import RssSampler, bgmode, free_port, quantile, rss_kib, stop, write_json
from relay import upstream

QUICK = {"model": "sim", "input": "Say hello", "background": True, "metadata": {"sim_output_tokens": "1"}}
LONG = {"model": "sim", "input": "Run", "background": True}


def _latencies(http: httpx.Client, seconds: float) -> list[float]:
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        r = http.post("/responses", json=QUICK)
        out.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
    return out


def _stats(lat: list[float]) -> dict[str, Any]:
    return {"n": len(lat), "p50_ms": quantile(lat, 0.5), "p99_ms": quantile(lat, 0.99), "max_ms": max(lat)}


def _wait_status(http: httpx.Client, rid: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while http.get(f"/responses/{rid}").json()["status"] != status:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{rid} never reached {status}")
        time.sleep(0.05)  # a benchmark's poll for a state, not a measurement


def seq_creates(jobs: int = 200, seconds: float = 8, delay_ms: float = 20) -> dict[str, Any]:
    """{"idle": stats, "loaded": stats, "running_at_end": jobs still in progress at the end}."""
    tokens = math.ceil((seconds + 10) * 1000 / delay_ms)
    with upstream(tokens, delay_ms) as up, tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "routes.toml"
        cfg.write_text(
            f'[[route]]\nmodel = "sim"\napi = "sim"\n\n[[route]]\nmodel = "m"\napi = "chat"\nbase_url = "{up}"\n'
        )
        port = free_port()
        args = ["--workers", str(jobs + 20), "--config", str(cfg), "--grace-seconds", "1"]
        server = bgmode(port, f"sqlite:///{d}/seq.db", *args)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
                _latencies(http, 1)  # warm-up: connection, code paths, the database file
                idle = _latencies(http, seconds)
                ids = [
                    http.post("/responses", json={"model": "m", "input": "hi", "background": True}).json()["id"]
                    for _ in range(jobs)
                ]
                _wait_status(http, ids[-1], "in_progress")
                loaded = _latencies(http, seconds)
                running = sum(http.get(f"/responses/{rid}").json()["status"] == "in_progress" for rid in ids)
        finally:
            stop(server)
    return {"jobs": jobs, "idle": _stats(idle), "loaded": _stats(loaded), "running_at_end": running}


def rss_mixed(running: int = 200, queued: int = 1000) -> dict[str, Any]:
    """{"rss_before_kib", "rss_running_kib", "rss_after_kib", "per_response_bytes", "rss": [(s, KiB)]}."""
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        server = bgmode(port, f"sqlite:///{d}/m.db", "--workers", str(running), "--grace-seconds", "1")
        try:
            with (
                RssSampler(server.pid) as rss,
                httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http,
            ):
                for _ in range(20):  # warm-up: every code path a response takes, once finished
                    rid = http.post("/responses", json=QUICK).json()["id"]
                _wait_status(http, rid, "completed")
                before = rss_kib(server.pid)
                body = {**LONG, "metadata": {"sim_output_tokens": "1000000", "sim_token_delay_ms": "100"}}
                ids = [http.post("/responses", json=body).json()["id"] for _ in range(running)]
                _wait_status(http, ids[-1], "in_progress")
                mid = rss_kib(server.pid)
                ids += [http.post("/responses", json=body).json()["id"] for _ in range(queued)]
                if http.get(f"/responses/{ids[-1]}").json()["status"] != "queued":
                    raise RuntimeError("the last response is not queued: workers were free")
                after = rss_kib(server.pid)
        finally:
            stop(server)
    return {
        "running": running,
        "queued": queued,
        "rss_before_kib": before,
        "rss_running_kib": mid,
        "rss_after_kib": after,
        "per_response_bytes": (after - before) * 1024 / (running + queued),
        "rss": rss.samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--queued", type=int, default=1000)
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    seq = seq_creates(a.jobs, a.seconds)
    for k in ("idle", "loaded"):
        s = seq[k]
        print(f"sequential creates, {k:6s}: {s['n']:5d} creates  p50 {s['p50_ms']:.1f} ms  p99 {s['p99_ms']:.1f} ms")
    print(f"  ({seq['running_at_end']} of {a.jobs} relayed jobs still running at the end; target p99 <= 20 ms)")
    mem = rss_mixed(a.jobs, a.queued)
    print(
        f"memory: RSS {mem['rss_before_kib'] / 1024:.1f} -> {mem['rss_running_kib'] / 1024:.1f} MiB ({a.jobs} running)"
        f" -> {mem['rss_after_kib'] / 1024:.1f} MiB (+{a.queued} queued): {mem['per_response_bytes'] / 1024:.1f} KB"
        " per response (target < 50 KB)"
    )
    write_json(a.json, {"seq_creates": seq, "rss_mixed": mem})


if __name__ == "__main__":
    main()
