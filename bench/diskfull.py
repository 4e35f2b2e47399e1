"""Disk full: SQLite on a small tmpfs that fills up while responses run; writes must fail
clearly (503 `store_unavailable` for creates; running responses wait and retry), reads must
keep working, and everything must recover when space returns, with no corrupt database.

    sudo python bench/diskfull.py [--size-mb 24]

Needs root (it mounts a tmpfs). Prints a report and exits non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

import httpx
from _procs import bgmode, stop


def fill(path: str) -> int:
    """Write a filler file until the filesystem is full; returns its size."""
    size = 0
    chunk = b"\0" * (1 << 16)
    with open(path, "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
                f.flush()
                size += len(chunk)
    return size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=24)
    ap.add_argument("--port", type=int, default=8791)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("diskfull.py mounts a tmpfs: run it as root")
    mnt = tempfile.mkdtemp(prefix="bgmode-diskfull-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.size_mb}m", "tmpfs", mnt], check=True)
    db = os.path.join(mnt, "bgmode.db")
    proc = bgmode(args.port, f"sqlite:///{db}", "--workers", "4")
    base = f"http://127.0.0.1:{args.port}/v1"
    checks: dict[str, bool] = {}
    try:
        http = httpx.Client(base_url=base, timeout=60)
        done = http.post("/responses", json={"model": "sim", "input": "before", "background": True}).json()["id"]
        with http.stream("GET", f"/responses/{done}", params={"stream": "true"}) as s:
            b"".join(s.iter_bytes())
        long = http.post(
            "/responses",
            json={
                "model": "sim",
                "input": "long",
                "background": True,
                "metadata": {"sim_output_tokens": "3000", "sim_token_delay_ms": "2"},
            },
        ).json()["id"]
        filler = os.path.join(mnt, "filler")
        filled = fill(filler)
        print(f"filled the disk with {filled / 2**20:.1f} MiB")
        statuses = []
        for i in range(20):
            r = http.post("/responses", json={"model": "sim", "input": f"while full {i}" * 200, "background": True})
            statuses.append(r.status_code)
        refused = [s for s in statuses if s != 200]
        print(f"creates while full: {statuses.count(200)} accepted, {len(refused)} refused {sorted(set(refused))}")
        checks["creates refused with 503 (none with 500)"] = bool(refused) and set(refused) == {503}
        r = http.get(f"/responses/{done}")
        checks["reads keep working"] = r.status_code == 200 and r.json()["status"] == "completed"
        checks["health keeps working"] = httpx.get(f"http://127.0.0.1:{args.port}/healthz").status_code == 200
        time.sleep(3)  # the full disk stays full for a while: running responses must wait, not fail
        os.remove(filler)
        print("space is back")
        r = http.post("/responses", json={"model": "sim", "input": "after", "background": True})
        checks["creates work again"] = r.status_code == 200
        with http.stream("GET", f"/responses/{long}", params={"stream": "true"}) as s:
            raw = b"".join(s.iter_bytes())
        seqs = [
            int(line.split(b'"sequence_number":')[1].split(b"}")[0].split(b",")[0])
            for line in raw.split(b"\n")
            if line.startswith(b"data:")
        ]
        final = http.get(f"/responses/{long}").json()
        print(f"the long response: {final['status']}, {len(seqs)} events")
        checks["the running response finished, log gap-free"] = seqs == list(range(len(seqs))) and final["status"] in (
            "completed",
            "failed",
        )
        checks["the running response completed"] = final["status"] == "completed"
    finally:
        stop(proc)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    checks["database integrity_check ok"] = integrity == "ok"
    subprocess.run(["umount", mnt], check=False)
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
