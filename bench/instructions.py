"""Instructions per create, per poll and per streamed response for a whole `bgmode serve` process (uvicorn, httptools,
bgmode, its SQLite reader threads; not its SQLite writer, a process of its own), counted by
valgrind's callgrind: repeatable whatever else the machine is doing, so a change's cost on the hot paths can be measured on a busy box.

    python bench/instructions.py                      # this checkout
    python bench/instructions.py --src /tmp/base/src  # another one (git worktree add /tmp/base REV)
    python bench/instructions.py --log-level info     # with the access and state-change lines

The server runs under callgrind (SQLite store, `--workers 0`, `--log-level warning` like
`creates.py` and `polls.py`); this process sends it N requests one at a time (one at a time:
with concurrent requests, how many creates share a group commit depends on thread timing,
which moves the count by a few percent from run to run). It runs once with N=500 and once
with N=2500; the difference over 2000 is the cost of one request (`stream`: N=100 and 500,
with `--workers 4`: a background+stream create of 5 simulated tokens read to its end). Needs
valgrind (Debian package); each kind takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time

import httpx
from _procs import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = {"model": "sim", "input": "hi", "background": True}
#: `stream`: a background response streamed from its create to its end (the simulated model,
#: 5 tokens at once): the create, the worker, the event log's writes and the SSE way out
STREAM = {**BODY, "stream": True, "metadata": {"sim_output_tokens": "5", "sim_token_delay_ms": "0"}}


async def _load(base: str, kind: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=300) as c:
        rid = (await c.post("/v1/responses", json=BODY)).json()["id"]
        for _ in range(n):
            if kind == "stream":
                async with c.stream("POST", "/v1/responses", json=STREAM) as r:
                    r.raise_for_status()
                    async for _ in r.aiter_bytes():
                        pass
                continue
            r = await (c.post("/v1/responses", json=BODY) if kind == "create" else c.get(f"/v1/responses/{rid}"))
            r.raise_for_status()


def count(src: str, kind: str, n: int, log_level: str = "warning") -> int:
    """Instructions executed by a `bgmode serve` process from its start to its exit, having
    answered `n` requests of `kind` (plus one create)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out", sys.executable, "-m", "bgmode"]
        workers = "4" if kind == "stream" else "0"
        cmd += ["serve", "--port", str(port), "--store", f"sqlite:///{d}/x.db", "--workers", workers]
        cmd += ["--log-level", log_level]
        # json lines (by environment: a bgmode from before structured logs has no such flag)
        env = {**os.environ, "PYTHONPATH": src, "BGMODE_LOG_FORMAT": "json"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("bgmode did not start under valgrind") from None
                    time.sleep(0.2)  # waiting for the server to listen
            asyncio.run(_load(f"http://127.0.0.1:{port}", kind, n))
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=600)
    found = re.search(rb"Collected : ([\d,]+)", err)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {err[-500:]!r}")
    return int(found.group(1).replace(b",", b""))


def per_request(src: str, kind: str, log_level: str = "warning") -> int:
    few, many = (100, 500) if kind == "stream" else (500, 2500)  # a stream costs ~10 creates
    return (count(src, kind, many, log_level) - count(src, kind, few, log_level)) // (many - few)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=os.path.join(ROOT, "src"), help="the src/ folder to measure")
    ap.add_argument("--log-level", default="warning", help="the server's --log-level (info: with the access log)")
    ap.add_argument("--only", choices=["create", "poll", "stream"], help="one kind")
    a = ap.parse_args()
    for kind in [a.only] if a.only else ["create", "poll"]:
        per = per_request(a.src, kind, a.log_level)
        print(f"{kind}: {per:,} instructions per request ({a.src}, --log-level {a.log_level})")


if __name__ == "__main__":
    main()
