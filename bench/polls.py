"""Polls of a finished response per second, against a bare Starlette endpoint answering the
same bytes. Both servers are pinned to one core (the load generator gets the other).

    python bench/polls.py [--seconds 10] [--connections 64]

Needs `wrk` (Debian package). Target: bgmode >= 70% of the bare endpoint's requests/s.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from _procs import bgmode, start, stop
from creates import wrk

BARE = """
from pathlib import Path
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = Path({path!r}).read_bytes()


async def poll(request):
    return Response(BODY, media_type="application/json")


app = Starlette(routes=[Route("/v1/responses/{{response_id}}", poll, methods=["GET"])])
"""


def pin(pid: int, core: str) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True, capture_output=True)


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
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install wrk")
    with tempfile.TemporaryDirectory() as d:
        lua = Path(d) / "get.lua"
        lua.write_text('wrk.method = "GET"\n')
        server = bgmode(8304, f"sqlite:///{d}/bench.db", "--workers", "2", *a.serve_arg)
        try:
            pin(server.pid, "0")
            http = httpx.Client(base_url="http://127.0.0.1:8304/v1", timeout=30)
            rid = http.post("/responses", json={"model": "sim", "input": "poll me", "background": True}).json()["id"]
            with http.stream("GET", f"/responses/{rid}", params={"stream": "true"}) as s:
                b"".join(s.iter_bytes())
            body = http.get(f"/responses/{rid}").content
            (Path(d) / "body.json").write_bytes(body)
            rps, bad, p99 = wrk(f"http://127.0.0.1:8304/v1/responses/{rid}", lua, a.seconds, a.connections)
        finally:
            stop(server)
        if a.bgmode_only:
            print(f"bgmode polls:                  {rps:8.0f} req/s  p99 {p99:.1f} ms  ({bad} non-2xx)")
            return
        (Path(d) / "bare_poll.py").write_text(BARE.format(path=str(Path(d) / "body.json")))
        env_dir = ["--app-dir", d]
        bare = start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                *env_dir,
                "bare_poll:app",
                "--port",
                "8305",
                "--log-level",
                "warning",
                "--no-access-log",
                "--loop",
                "uvloop",
                "--http",
                "httptools",
            ],
            "http://127.0.0.1:8305/v1/responses/x",
        )
        try:
            pin(bare.pid, "0")
            base, _, base_p99 = wrk(f"http://127.0.0.1:8305/v1/responses/{rid}", lua, a.seconds, a.connections)
        finally:
            stop(bare)
    print(f"bare endpoint, same {len(body)} bytes: {base:8.0f} req/s  p99 {base_p99:.1f} ms")
    print(f"bgmode polls:                  {rps:8.0f} req/s  p99 {p99:.1f} ms  ({bad} non-2xx)")
    print(f"ratio: {rps / base:.0%} of the bare endpoint (target >= 70%)")


if __name__ == "__main__":
    main()
