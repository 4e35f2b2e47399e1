"""Durable background creates per second, against a bare Starlette no-op endpoint.

    python bench/creates.py [--seconds 10] [--connections 64[,16,128]] [--workers 0] [--json PATH]

Needs `wrk` (Debian package). Both servers run under the same uvicorn settings (uvloop,
httptools, no access log); bgmode commits every create to SQLite before replying.
Target: bgmode >= 60% of the no-op's requests/s, p99 <= 15 ms at 64 connections.
Importable: `measure("noop" | "bgmode", seconds, [connections...])` returns the numbers.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _procs import ROOT, bgmode, free_port, stop, uvicorn_app, write_json

LUA = """wrk.method = "POST"
wrk.body = '{"model":"sim","input":"Say hello","background":true}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, lua: Path, seconds: float, connections: int) -> tuple[float, int, float]:
    """requests/s, non-2xx count, p99 latency in ms."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else float("nan")
    return rps, int(bad.group(1)) if bad else 0, p99


def measure(
    side: str, seconds: float, connections: Sequence[int], workers: str = "0", serve_args: Sequence[str] = ()
) -> dict[str, Any]:
    """One server ("noop": the bare Starlette endpoint, or "bgmode"), loaded by wrk at each
    connection count in turn: {"<connections>": {"rps", "p99_ms", "non_2xx"}}."""
    if not shutil.which("wrk"):
        raise RuntimeError("needs wrk: apt-get install wrk")
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        lua = Path(d) / "create.lua"
        lua.write_text(LUA)
        if side == "noop":
            server = uvicorn_app(str(Path(ROOT) / "bench"), "noop_app:app", port)
        else:
            server = bgmode(port, f"sqlite:///{d}/bench.db", "--workers", workers, *serve_args)
        out: dict[str, Any] = {}
        try:
            for c in connections:
                rps, bad, p99 = wrk(f"http://127.0.0.1:{port}/v1/responses", lua, seconds, c)
                out[str(c)] = {"rps": rps, "p99_ms": p99, "non_2xx": bad}
        finally:
            stop(server)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="64", help="one count or several, comma-separated")
    ap.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an extra `bgmode serve` argument (repeatable), e.g. --serve-arg=--log-level=info",
    )
    ap.add_argument("--bgmode-only", action="store_true", help="skip the baseline server (A/B runs of bgmode)")
    ap.add_argument("--workers", default="0", help="bgmode --workers (0: creates only)")
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install wrk")
    conns = [int(c) for c in a.connections.split(",")]
    result: dict[str, Any] = {}
    if not a.bgmode_only:
        result["noop"] = measure("noop", a.seconds, conns)
    result["bgmode"] = measure("bgmode", a.seconds, conns, a.workers, a.serve_arg)
    for c in conns:
        k = str(c)
        b = result["bgmode"][k]
        if not a.bgmode_only:
            n = result["noop"][k]
            print(f"{c:4d} connections  no-op Starlette:        {n['rps']:8.0f} req/s  p99 {n['p99_ms']:.1f} ms")
        print(
            f"{c:4d} connections  bgmode durable creates: {b['rps']:8.0f} req/s  p99 {b['p99_ms']:.1f} ms"
            f"  ({b['non_2xx']} non-2xx)"
        )
        if not a.bgmode_only:
            print(f"     ratio: {b['rps'] / n['rps']:.0%} of the no-op (target >= 60%, p99 <= 15 ms at 64)")
    write_json(a.json, result)


if __name__ == "__main__":
    main()
