"""Polls of a finished response per second, against a bare Starlette endpoint answering the
same bytes. Both servers are pinned to one core (the load generator gets the other).

    python bench/polls.py [--seconds 10] [--connections 64[,16,128]] [--json PATH]

Needs `wrk` (Debian package). Target: bgmode >= 70% of the bare endpoint's requests/s.
Importable: `measure_bgmode(...)` returns the numbers and the polled body, which
`measure_bare(...)` then serves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from _procs import bgmode, free_port, stop, uvicorn_app, write_json
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
    if (os.cpu_count() or 1) > 1:
        subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True, capture_output=True)


def _load(port: int, rid: str, d: str, seconds: float, connections: Sequence[int]) -> dict[str, Any]:
    lua = Path(d) / "get.lua"
    lua.write_text('wrk.method = "GET"\n')
    out: dict[str, Any] = {}
    for c in connections:
        rps, bad, p99 = wrk(f"http://127.0.0.1:{port}/v1/responses/{rid}", lua, seconds, c)
        out[str(c)] = {"rps": rps, "p99_ms": p99, "non_2xx": bad}
    return out


def measure_bgmode(
    seconds: float, connections: Sequence[int], serve_args: Sequence[str] = ()
) -> tuple[dict[str, Any], str, bytes]:
    """bgmode polled at each connection count: (numbers, the response id, the polled body)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        server = bgmode(port, f"sqlite:///{d}/bench.db", "--workers", "2", *serve_args)
        try:
            pin(server.pid, "0")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", timeout=30) as http:
                body = {"model": "sim", "input": "poll me", "background": True}
                rid = http.post("/responses", json=body).json()["id"]
                with http.stream("GET", f"/responses/{rid}", params={"stream": "true"}) as s:
                    b"".join(s.iter_bytes())
                polled = http.get(f"/responses/{rid}").content
            return _load(port, rid, d, seconds, connections), rid, polled
        finally:
            stop(server)


def measure_bare(seconds: float, connections: Sequence[int], rid: str, body: bytes) -> dict[str, Any]:
    """The bare Starlette endpoint answering `body`, polled at each connection count."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "body.json").write_bytes(body)
        (Path(d) / "bare_poll.py").write_text(BARE.format(path=str(Path(d) / "body.json")))
        bare = uvicorn_app(d, "bare_poll:app", port)
        try:
            pin(bare.pid, "0")
            return _load(port, rid, d, seconds, connections)
        finally:
            stop(bare)


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
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("needs wrk: apt-get install wrk")
    conns = [int(c) for c in a.connections.split(",")]
    result: dict[str, Any] = {}
    result["bgmode"], rid, body = measure_bgmode(a.seconds, conns, a.serve_arg)
    if not a.bgmode_only:
        result["bare"] = measure_bare(a.seconds, conns, rid, body)
    result["body_bytes"] = len(body)
    for c in conns:
        k = str(c)
        b = result["bgmode"][k]
        if not a.bgmode_only:
            n = result["bare"][k]
            print(
                f"{c:4d} connections  bare endpoint, same {len(body)} bytes: {n['rps']:8.0f} req/s  p99 {n['p99_ms']:.1f} ms"
            )
        print(
            f"{c:4d} connections  bgmode polls:                  {b['rps']:8.0f} req/s  p99 {b['p99_ms']:.1f} ms"
            f"  ({b['non_2xx']} non-2xx)"
        )
        if not a.bgmode_only:
            print(f"     ratio: {b['rps'] / n['rps']:.0%} of the bare endpoint (target >= 70%)")
    write_json(a.json, result)


if __name__ == "__main__":
    main()
