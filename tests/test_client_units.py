"""Client pieces in-process: request shape, retries, the ledger, the reporters."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from bgmode.client.api import (
    BackgroundClient,
    Backoff,
    ResponseRequest,
    _retry_after,
    _StreamState,
    summarize_input,
)
from bgmode.client.ledger import Ledger, default_ledger_path
from bgmode.client.outcome import ExitCode, exit_code_for
from bgmode.client.output import JsonLinesReporter, LiveReporter
from tests.serving import BgmodeServer
from tests.test_client_helpers import FAST, on_terminal

# --------------------------------------------------------------------------- request


def test_create_params_follow_the_skill() -> None:
    params = ResponseRequest(input="hi").create_params()
    assert params == {
        "model": "gpt-5.2",
        "input": "hi",
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "reasoning": {"effort": "medium"},
        "background": True,
    }
    full = ResponseRequest(
        input="hi", model="m", reasoning_effort="xhigh", verbosity="high", metadata={"a": "1"}, max_output_tokens=64
    ).create_params()
    assert full["metadata"] == {"a": "1"} and full["max_output_tokens"] == 64
    assert full["reasoning"] == {"effort": "xhigh"} and full["text"]["verbosity"] == "high"
    assert "store" not in full and "tools" not in full


def test_summary_is_the_last_user_message() -> None:
    messages = [
        {"role": "system", "content": [{"type": "input_text", "text": "SYS"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "answer"}]},
        {"role": "user", "content": "second   question\nhere"},
    ]
    assert summarize_input(messages) == "second question here"
    assert summarize_input("x" * 100, width=10) == "x" * 9 + "…"


# --------------------------------------------------------------------------- retries


def _status_error(headers: dict[str, str]) -> Any:
    return SimpleNamespace(response=SimpleNamespace(headers=headers))


def test_retry_after_forms() -> None:
    assert _retry_after(_status_error({"retry-after": "2"})) == 2.0
    assert _retry_after(_status_error({"retry-after-ms": "250"})) == 0.25
    assert _retry_after(_status_error({})) is None
    assert _retry_after(_status_error({"retry-after": "soon"})) is None
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    delay = _retry_after(_status_error({"retry-after": when}))
    assert delay is not None and 20 < delay <= 31


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(initial=1.0, maximum=8.0)
    assert 0.8 <= b.delay(1) <= 1.2
    assert 1.6 <= b.delay(2) <= 2.4
    assert 6.4 <= b.delay(10) <= 9.6


def test_exit_codes() -> None:
    assert [exit_code_for(s) for s in ("completed", "failed", "cancelled", "incomplete", "expired")] == [0, 1, 3, 4, 5]
    assert ExitCode.USAGE == 2 and ExitCode.TIMEOUT == 6 and ExitCode.ERROR == 7 and ExitCode.INTERRUPTED == 130


# --------------------------------------------------------------------------- stream consumption


def _event(seq: int, type_: str, **kw: Any) -> Any:
    return SimpleNamespace(sequence_number=seq, type=type_, **kw)


def test_unknown_terminal_event_with_a_terminal_status_ends_the_stream() -> None:
    client = BackgroundClient(base_url="http://127.0.0.1:9/v1")
    state = _StreamState(response_id="resp_1")
    ev = _event(5, "response.something_new")
    ev.response = {"id": "resp_1", "object": "response", "status": "cancelled", "output": []}
    final = client._consume(iter([_event(4, "keepalive"), ev]), state)
    assert final is not None and final.status == "cancelled"


# --------------------------------------------------------------------------- ledger


def test_ledger_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGMODE_LEDGER_PATH", str(tmp_path / "x" / "l.db"))
    assert default_ledger_path() == tmp_path / "x" / "l.db"
    Ledger()
    assert (tmp_path / "x" / "l.db").exists()


def test_ledger_records_and_lists(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    a = Ledger(path)
    a.record_submitting(idempotency_key="k1", model="m", prompt_summary="p", base_url="u", stream=False)
    assert a.last() is None  # no id yet
    a.record_submitted(idempotency_key="k1", response_id="resp_1", status="queued")
    b = Ledger(path)  # another process
    b.update_status("resp_1", "completed")
    b.update_status("resp_other", "in_progress", base_url="u2")  # followed, not submitted here
    b.update_status("resp_unknown", "completed")  # no base URL: not added
    a.record_submitting(idempotency_key="k2", model="m", prompt_summary="p", base_url="u", stream=True)
    a.record_submit_failed(idempotency_key="k2")
    jobs = Ledger(path).list()
    assert [(j.response_id, j.status) for j in jobs] == [
        ("resp_1", "completed"),
        ("resp_other", "in_progress"),
        (None, "submit_failed"),
    ]
    last = a.last()
    assert last is not None and last.response_id == "resp_other"
    got = a.get("resp_1")
    assert got is not None and got.model == "m" and got.base_url == "u" and not got.stream
    assert [j.response_id for j in a.list(limit=1)] == [None]


# --------------------------------------------------------------------------- reporters


def test_json_lines_reporter() -> None:
    out = io.StringIO()
    rep = JsonLinesReporter(out)
    rep("submitted", {"response_id": "r", "status": "queued"})
    rep("delta", {"response_id": "r", "text": "x"})
    rep("final", {"response_id": "r", "status": "completed", "output_text": "hello"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in lines] == ["submitted", "final"]
    assert all(e["ts"].endswith("Z") for e in lines)
    assert "output_text" not in lines[1]
    out2 = io.StringIO()
    rep2 = JsonLinesReporter(out2, show_output_text=True)
    rep2("delta", {"text": "x"})
    rep2("final", {"status": "completed", "output_text": "hello"})
    lines2 = [json.loads(line) for line in out2.getvalue().splitlines()]
    assert lines2[0]["text"] == "x" and lines2[1]["output_text"] == "hello"


def test_live_reporter_renders_progress_and_summary() -> None:
    buf = io.StringIO()
    rep = LiveReporter(Console(file=buf, force_terminal=True, width=100))
    rep("submit_start", {"model": "m", "base_url": "http://x/v1", "input_summary": "hi"})
    rep("submitted", {"response_id": "resp_9", "status": "queued"})
    rep("retry", {"operation": "retrieve", "error": "HTTP 503", "attempt": 1, "delay_seconds": 0.5})
    rep("delta", {"text": "Hello "})
    rep("delta", {"text": "world"})
    rep(
        "final",
        {
            "response_id": "resp_9",
            "status": "completed",
            "usage": {"input_tokens": 1, "output_tokens": 2},
            "error": None,
            "incomplete_details": None,
            "elapsed_seconds": 1.5,
        },
    )
    text = buf.getvalue()
    assert "resp_9" in text and "completed" in text and "Hello world" in text
    jobs_buf = io.StringIO()
    jobs = LiveReporter(Console(file=jobs_buf, width=160))
    jobs("job", {"response_id": "resp_1", "status": "completed", "model": "m", "created_at": "2026-01-01T00:00:00Z"})
    jobs.close()
    assert "resp_1" in jobs_buf.getvalue()


def test_terminal_gets_the_live_view(bgmode_server: BgmodeServer) -> None:
    """With a terminal on stdout, `bgmode run` draws the rich view instead of JSON lines."""
    out = on_terminal("run", "--base-url", bgmode_server.base_url, "--prompt", "hi", "--poll-seconds", "0.2", *FAST)
    assert "completed" in out and "resp_" in out
    assert '"event"' not in out
