"""Instructions per create and per poll, counted by valgrind's callgrind: repeatable whatever
else the machine is doing, so a change's cost on the hot paths can be measured on a busy box.

    python bench/instructions.py                    # this checkout
    python bench/instructions.py --src /tmp/base/src  # another one (git worktree add /tmp/base REV)

Each kind runs N requests through the ASGI app in one process (`App.__call__`, SQLite store, no
uvicorn: HTTP parsing is the same on both sides of a comparison), once with N=500 and once with
N=2500; the difference over 2000 is the cost of one request. Needs valgrind (Debian package).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def _drive(kind: str, n: int) -> None:
    import orjson

    from bgmode.app import create_app
    from bgmode.config import Settings

    d = tempfile.mkdtemp()
    app = create_app(Settings(store_url=f"sqlite:///{d}/x.db", workers=0))
    body = orjson.dumps({"model": "m", "input": "hi", "background": True})
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    def receiver() -> object:
        done = False

        async def receive() -> dict[str, object]:
            nonlocal done
            if done:
                await asyncio.sleep(3600)
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    def scope(method: str, path: str) -> dict[str, object]:
        headers = [(b"content-type", b"application/json"), (b"host", b"x"), (b"user-agent", b"wrk")]
        return {
            "type": "http",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
            "root_path": "",
            "scheme": "http",
            "server": ("127.0.0.1", 1),
            "client": ("127.0.0.1", 2),
            "http_version": "1.1",
        }

    async with app.state.server.lifespan(None):
        await app(scope("POST", "/v1/responses"), receiver(), send)  # type: ignore[arg-type]
        rid = orjson.loads(sent[-1]["body"])["id"]  # type: ignore[arg-type]
        if kind == "poll":
            for _ in range(n):
                sent.clear()
                await app(scope("GET", f"/v1/responses/{rid}"), receiver(), send)  # type: ignore[arg-type]
        else:
            for _ in range(n // 50):  # 50 at a time, as concurrent clients would
                sent.clear()
                await asyncio.gather(
                    *(app(scope("POST", "/v1/responses"), receiver(), send) for _ in range(50))  # type: ignore[arg-type]
                )


def _count(src: str, kind: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/cg.out", sys.executable, __file__]
            + ["--drive", kind, str(n)],
            env={**os.environ, "PYTHONPATH": src},
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : ([\d,]+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no callgrind total in: {out.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default=os.path.join(ROOT, "src"), help="the src/ folder to measure")
    ap.add_argument("--drive", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.drive:
        devnull = open(os.devnull, "w")
        try:
            from bgmode import logs  # as `bgmode serve` logs at info

            logs.configure("json", "info", devnull)
        except ImportError:  # a bgmode from before structured logs
            logging.basicConfig(level="INFO", stream=devnull)
        asyncio.run(_drive(a.drive[0], int(a.drive[1])))
        return
    for kind in ("create", "poll"):
        per = (_count(a.src, kind, 2500) - _count(a.src, kind, 500)) // 2000
        print(f"{kind}: {per:,} instructions per request ({a.src})")


if __name__ == "__main__":
    main()
