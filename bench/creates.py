"""Durable background creates per second, against a bare Starlette no-op endpoint.

    python bench/creates.py [--seconds 10] [--connections 64] [--workers 0]

Needs `wrk` (Debian package). Both servers run under the same uvicorn settings (uvloop,
httptools, no access log); bgmode commits every create to SQLite before replying.
Target: bgmode >= 40% of the no-op's requests/s.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _procs import bgmode, start, stop

LUA = """wrk.method = "POST"
wrk.body = '{"model":"sim","input":"Say hello","background":true}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, lua: Path, seconds: int, connections: int) -> tuple[float, int, float]:
    """requests/s, non-2xx count, p99 latency in ms."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)] if m else float("nan")
    return rps, int(bad.group(1)) if bad else 0, p99


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="an extra `bgmode serve` argument (repeatable), e.g. --serve-arg=--log-level=info",
    )
    ap.add_argument("--bgmode-only", action="store_true", help="skip the baseline server (A/B runs of bgmode)")
    ap.add_argument("--workers", default="0", help="bgmode --workers (0: creates only)")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as d:
        lua = Path(d) / "create.lua"
        lua.write_text(LUA)
        base = base_p99 = float("nan")
        if not a.bgmode_only:
            noop = start(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    "bench",
                    "noop_app:app",
                    "--port",
                    "8301",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                ],
                "http://127.0.0.1:8301/",
            )
            try:
                base, _, base_p99 = wrk("http://127.0.0.1:8301/v1/responses", lua, a.seconds, a.connections)
            finally:
                stop(noop)
        server = bgmode(8302, f"sqlite:///{d}/bench.db", "--workers", a.workers, *a.serve_arg)
        try:
            rps, bad, p99 = wrk("http://127.0.0.1:8302/v1/responses", lua, a.seconds, a.connections)
        finally:
            stop(server)
    if not a.bgmode_only:
        print(f"no-op Starlette:           {base:8.0f} req/s  p99 {base_p99:.1f} ms")
    print(f"bgmode durable creates:    {rps:8.0f} req/s  p99 {p99:.1f} ms  ({bad} non-2xx)")
    if not a.bgmode_only:
        print(f"ratio: {rps / base:.0%} of the no-op (target >= 60%, p99 <= 15 ms)")


if __name__ == "__main__":
    main()
