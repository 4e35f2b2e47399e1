"""Helpers for the client tests: run the CLI and the skill scripts as subprocesses.

(No tests here; the `test_client_*` modules import these.)
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
BGMODE = (sys.executable, "-m", "bgmode")
#: a job that runs a few seconds: long enough to interrupt or cancel it after `submitted`
SLOW = ("--metadata", "sim_output_tokens=150", "--metadata", "sim_token_delay_ms=25")
FAST = ("--metadata", "sim_output_tokens=12", "--metadata", "sim_token_delay_ms=1")


def parse_events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def one(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == name]
        assert len(found) == 1, f"expected one {name!r} event, got {self.names()}\nstderr: {self.stderr}"
        return found[0]

    def all(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


def _run(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None) -> CliResult:
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    try:
        events = parse_events(proc.stdout)
    except json.JSONDecodeError as err:
        raise AssertionError(f"stdout is not JSON lines: {proc.stdout!r}\nstderr: {proc.stderr}") from err
    return CliResult(proc.returncode, proc.stdout, proc.stderr, events)


def bgmode(*args: str, timeout: float = 90, env: dict[str, str] | None = None) -> CliResult:
    """`bgmode ARGS` (stdout is a pipe, so JSON lines); `env` is added to this process's environment."""
    return _run([*BGMODE, *args], timeout, env)


def on_terminal(*args: str, timeout: float = 60) -> str:
    """Run `bgmode ARGS` on a pseudo-terminal (200 columns) until it exits 0; the screen it
    drew, without escape sequences."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*BGMODE, *args], stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "COLUMNS": "200"}
    )
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.wait(timeout) == 0
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))


def script(name: str, *args: str, timeout: float = 90) -> CliResult:
    """`python -u scripts/NAME ARGS`."""
    return _run([sys.executable, "-u", str(SCRIPTS / name), *args], timeout)


def command_argv(command: str) -> list[str]:
    """A printed resume command as argv (`bgmode ...` runs as `python -m bgmode ...`)."""
    import shlex

    argv = shlex.split(command)
    return [*BGMODE, *argv[1:]] if argv[0] == "bgmode" else argv


class LiveProcess:
    """A CLI process whose JSON lines are read while it runs."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """Read events until one called `name` arrives."""
        while True:
            line = self._lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"process ended before {name!r}: {[e['event'] for e in self.events]}")
            if not line.strip():
                continue
            event = json.loads(line)
            self.events.append(event)
            if event["event"] == name:
                return event

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float = 60) -> CliResult:
        code = self.proc.wait(timeout)
        while True:
            line = self._lines.get(timeout=timeout)
            if line is None:
                break
            if line.strip():
                self.events.append(json.loads(line))
        assert self.proc.stderr is not None
        stderr = self.proc.stderr.read()
        return CliResult(code, "", stderr, list(self.events))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> LiveProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
