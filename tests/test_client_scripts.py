"""The skill's two scripts, run with `python -u` against a real `bgmode serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.serving import BgmodeServer
from tests.test_client_helpers import FAST, SCRIPTS, SLOW, LiveProcess, command_argv, script

RUN = "run_background_response.py"
MONITOR = "monitor_background_response.py"


def _help(name: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-u", str(SCRIPTS / name), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return " ".join(proc.stdout.split())


def test_scripts_accept_the_skills_flags_and_defaults() -> None:
    text = _help(RUN)
    for flag in (
        "--model TEXT",
        "--reasoning-effort [none|low|medium|high|xhigh|omit]",  # omit: a bgmode extension
        "--verbosity [low|medium|high]",
        "--prompt",
        "--messages-json-file",
        "--poll-seconds",
        "--show-output-text",
        "--output-json",
        "--base-url",
        "--timeout",
    ):
        assert flag in text, flag
    assert "[default: gpt-5.2]" in text
    assert text.count("[default: medium]") == 2
    assert "[default: 10.0]" in text
    mon = _help(MONITOR)
    for flag in ("--response-id", "--poll-seconds", "--show-output-text", "--output-json", "--base-url", "--timeout"):
        assert flag in mon, flag


def test_run_script_completes(bgmode_server: BgmodeServer, tmp_path: Path) -> None:
    out = tmp_path / "out" / "final.json"
    r = script(
        RUN,
        "--base-url",
        bgmode_server.base_url,
        "--model",
        "gpt-5.2",
        "--reasoning-effort",
        "high",
        "--verbosity",
        "high",
        "--prompt",
        "Analyze this dataset and produce an executive summary.",
        "--poll-seconds",
        "0.2",
        "--show-output-text",
        "--output-json",
        str(out),
        *FAST,
    )
    assert r.code == 0, r.stderr
    assert r.names()[:2] == ["submit_start", "submitted"]
    assert r.names()[-1] == "final"
    final = r.one("final")
    assert final["status"] == "completed" and final["output_text"]
    assert json.loads(out.read_text())["status"] == "completed"


def test_run_script_failed_exit_code(bgmode_server: BgmodeServer) -> None:
    r = script(
        RUN,
        "--base-url",
        bgmode_server.base_url,
        "--prompt",
        "x",
        "--poll-seconds",
        "0.2",
        "--metadata",
        "sim_fail_after_tokens=2",
    )
    assert r.code == 1
    assert r.one("final")["status"] == "failed"


def test_monitor_script_follows_an_existing_id(bgmode_server: BgmodeServer) -> None:
    from openai import OpenAI

    sdk = OpenAI(base_url=bgmode_server.base_url, api_key="k", max_retries=0)
    rid = sdk.responses.create(model="m", input="hi", background=True, metadata={"sim_output_tokens": "8"}).id
    r = script(
        MONITOR,
        "--response-id",
        rid,
        "--base-url",
        bgmode_server.base_url,
        "--poll-seconds",
        "0.2",
        "--show-output-text",
    )
    assert r.code == 0, r.stderr
    assert r.names()[-1] == "final"
    assert r.one("final")["response_id"] == rid
    assert r.all("poll")


def test_interrupted_run_script_prints_the_monitor_script_command(bgmode_server: BgmodeServer) -> None:
    argv = [sys.executable, "-u", str(SCRIPTS / RUN), "--base-url", bgmode_server.base_url]
    argv += ["--prompt", "x", "--poll-seconds", "0.2", *SLOW]
    with LiveProcess(argv) as follower:
        rid = follower.wait_for("submitted")["response_id"]
        follower.interrupt()
        r = follower.finish()
    assert r.code == 130
    command = r.one("interrupted")["resume_command"]
    assert MONITOR in command and f"--response-id {rid}" in command
    resumed = subprocess.run(command_argv(command), capture_output=True, text=True, timeout=90)
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert events[-1]["event"] == "final" and events[-1]["response_id"] == rid


def test_script_usage_errors_exit_2() -> None:
    assert script(RUN, "--base-url", "http://127.0.0.1:9/v1").code == 2  # no prompt
    assert script(RUN, "--prompt", "x", "--verbosity", "loud").code == 2
    assert script(MONITOR, "--base-url", "http://127.0.0.1:9/v1").code == 2  # no id
