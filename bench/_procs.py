"""Start and stop the processes a benchmark compares (all on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(cmd: Sequence[str], ready_url: str, timeout: float = 30) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(ready_url, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def bgmode(port: int, store_url: str, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bgmode", "serve", "--port", str(port), "--store", store_url, "--log-level", "warning"]
    return start([*cmd, *args], f"http://127.0.0.1:{port}/readyz")


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
