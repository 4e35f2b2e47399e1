"""Start and stop the processes a benchmark compares (all on 127.0.0.1), sample their memory,
and write a benchmark's numbers as JSON (`--json PATH`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick), so benches never collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    cmd: Sequence[str], ready_url: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode} before it was ready")
        try:
            httpx.get(ready_url, timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)  # waiting for a server process to listen
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def bgmode(port: int, store_url: str, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bgmode", "serve", "--port", str(port), "--store", store_url, "--log-level", "warning"]
    return start([*cmd, *args], f"http://127.0.0.1:{port}/readyz")


def uvicorn_app(app_dir: str, app: str, port: int) -> subprocess.Popen[bytes]:
    """A baseline ASGI app under the same uvicorn settings bgmode uses (uvloop, httptools)."""
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", app_dir, app, "--port", str(port), "--log-level", "warning"]
    cmd += ["--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    return start(cmd, f"http://127.0.0.1:{port}/")


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread: `samples` is
    [(seconds since start, RSS in KiB)]. Use as a context manager."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while True:
            try:
                self.samples.append((round(time.monotonic() - self._t0, 3), rss_kib(self.pid)))
            except (OSError, StopIteration):
                return  # the process is gone
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


def write_json(path: str | None, data: Any) -> None:
    """`--json PATH`: the benchmark's numbers, for bench/run.py or anyone else."""
    if path:
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
