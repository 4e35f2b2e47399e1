"""`bgmode batch` as a subprocess against a real `bgmode serve`: outcomes, a crash and a resume, 429s."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from openai import OpenAI

from bgmode.client.batch import batch_key, line_sha
from bgmode.client.ledger import Ledger
from tests.serving import BgmodeServer
from tests.test_client_helpers import BGMODE, LiveProcess, bgmode, on_terminal


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _prompt(text: str, tokens: int = 10, delay_ms: int = 2, **extra: Any) -> dict[str, Any]:
    meta = {"sim_output_tokens": str(tokens), "sim_token_delay_ms": str(delay_ms), **extra.pop("metadata", {})}
    return {"prompt": text, "metadata": meta, **extra}


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _server_responses(tmp_path: Path) -> int:
    """How many responses the server's store holds (the `make_server` store)."""
    with sqlite3.connect(tmp_path / "bgmode.db") as db:
        return int(db.execute("SELECT count(*) FROM responses").fetchone()[0])


def _batch(server: BgmodeServer, path: Path, *extra: str) -> list[str]:
    return ["batch", str(path), "--base-url", server.base_url, "--poll-seconds", "0.1", *extra]


def test_outcomes_output_and_exit_codes(bgmode_server: BgmodeServer, tmp_path: Path) -> None:
    good = _write(
        tmp_path / "good.jsonl",
        [
            _prompt("one"),
            "",  # blank lines are skipped (line numbers stay the file's)
            _prompt("two", model="m2", instructions="Be brief."),
            {
                "input": [{"role": "user", "content": "a full body"}],
                "model": "m3",
                "metadata": {"sim_output_tokens": "4"},
            },
        ],
    )
    out = tmp_path / "results.jsonl"
    r = bgmode(*_batch(bgmode_server, good, "--output", str(out), "--concurrency", "2"))
    assert r.code == 0, r.stderr
    records = sorted(_records(out), key=lambda x: x["line"])
    assert [x["line"] for x in records] == [1, 3, 4]
    assert all(x["status"] == "completed" and x["output_text"] and x["usage"]["output_tokens"] for x in records)
    assert len({x["response_id"] for x in records}) == 3
    assert r.one("batch_start")["to_submit"] == 3
    assert sorted(e["line"] for e in r.all("result")) == [1, 3, 4]
    assert all("output_text" not in e for e in r.all("result"))  # the text is in the output file
    summary = r.one("summary")
    assert summary["counts"] == {"completed": 3} and summary["exit_code"] == 0
    models = {j.response_id: j.model for j in Ledger().list()}
    assert [models[x["response_id"]] for x in records] == ["gpt-5.2", "m2", "m3"]

    # the worst outcome decides the exit code: failed (1), then a line that cannot be sent (7)
    mixed = _write(tmp_path / "mixed.jsonl", [_prompt("ok"), _prompt("bad", metadata={"sim_fail_after_tokens": "2"})])
    r = bgmode(*_batch(bgmode_server, mixed))
    assert r.code == 1, r.stderr
    by_line = {e["line"]: e for e in r.all("result")}
    assert by_line[1]["status"] == "completed" and by_line[1]["output_text"]  # stdout carries the text
    assert by_line[2]["status"] == "failed" and by_line[2]["error"]["code"] == "server_error"
    worse = _write(
        tmp_path / "worse.jsonl", [_prompt("ok"), "not json", {"neither": 1}, _prompt("x", max_output_tokens=1)]
    )
    r = bgmode(*_batch(bgmode_server, worse))
    assert r.code == 7, r.stderr
    by_line = {e["line"]: e for e in r.all("result")}
    assert by_line[1]["status"] == "completed"
    assert by_line[2]["status"] == "error" and "not JSON" in by_line[2]["error"]["message"]
    assert by_line[3]["status"] == "error" and '"prompt"' in by_line[3]["error"]["message"]
    assert by_line[4]["status"] == "error" and "HTTP 400" in by_line[4]["error"]["message"]
    assert r.one("summary")["counts"] == {"completed": 1, "error": 3}


def test_killed_mid_run_and_resumed_submits_nothing_twice(make_server: type[BgmodeServer], tmp_path: Path) -> None:
    server = make_server().start()
    lines = [_prompt(f"job {i}", tokens=30, delay_ms=20) for i in range(6)]
    path = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    argv = [*BGMODE, *_batch(server, path, "--output", str(out), "--concurrency", "2")]
    with LiveProcess(argv) as first:
        submitted = [first.wait_for("submitted") for _ in range(3)]
        first.proc.kill()  # SIGKILL: no cleanup runs
        first.proc.wait(10)
    first_ids = {e["line"]: e["response_id"] for e in submitted}
    written_before = {x["line"] for x in _records(out)} if out.exists() else set()
    assert len(written_before) < 6

    r = bgmode(*argv[len(BGMODE) :])
    assert r.code == 0, r.stderr
    start = r.one("batch_start")
    assert start["already_written"] == len(written_before)
    assert start["to_follow"] >= len(set(first_ids) - written_before)
    records = _records(out)
    assert sorted(x["line"] for x in records) == [1, 2, 3, 4, 5, 6]  # each line exactly once
    assert all(x["status"] == "completed" for x in records)
    for x in records:
        if x["line"] in first_ids:
            assert x["response_id"] == first_ids[x["line"]]  # followed, not resubmitted
    resumed = [e for e in r.all("submitted") if e["resumed"]]
    # (a line submitted just before the kill, its event unread, is followed too)
    assert set(first_ids) - written_before <= {e["line"] for e in resumed}
    # checked on the server: one response per line, no duplicates
    assert _server_responses(tmp_path) == 6
    assert len({x["response_id"] for x in records}) == 6

    again = bgmode(*argv[len(BGMODE) :])  # everything is in the output: nothing to do
    assert again.code == 0 and again.one("batch_start")["already_written"] == 6 and not again.all("submitted")
    assert _server_responses(tmp_path) == 6


def test_a_create_whose_answer_was_lost_is_resent_with_its_key(make_server: type[BgmodeServer], tmp_path: Path) -> None:
    server = make_server().start()
    path = _write(tmp_path / "in.jsonl", [_prompt("first"), _prompt("second")])
    raw = path.read_text().splitlines()[0]
    # a crash after the create of line 1 was sent, before its answer was recorded
    key = "bgmode-test-lost-answer"
    Ledger().batch_line_submitting(batch_key(path, server.base_url), 1, line_sha(raw), key)
    sdk = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    body = json.loads(raw)
    made = sdk.responses.create(
        model="gpt-5.2",
        input=body["prompt"],
        background=True,
        metadata=body["metadata"],
        text={"format": {"type": "text"}, "verbosity": "medium"},
        reasoning={"effort": "medium"},
        extra_headers={"Idempotency-Key": key},
    )
    r = bgmode(*_batch(server, path))
    assert r.code == 0, r.stderr
    by_line = {e["line"]: e for e in r.all("result")}
    assert by_line[1]["response_id"] == made.id
    assert _server_responses(tmp_path) == 2


def test_429_is_retried_without_losing_lines(make_server: type[BgmodeServer], tmp_path: Path) -> None:
    # one worker, at most one queued response: a long job runs, another waits, so creates get 429
    server = make_server(args=["--workers", "1", "--max-queued", "1"]).start()
    sdk = OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    blocker = sdk.responses.create(
        model="m", input="x", background=True, metadata={"sim_output_tokens": "5000", "sim_token_delay_ms": "20"}
    )
    sdk.responses.create(model="m", input="y", background=True, metadata={"sim_output_tokens": "3"})
    path = _write(tmp_path / "in.jsonl", [_prompt(f"job {i}", tokens=20, delay_ms=5) for i in range(4)])
    with LiveProcess([*BGMODE, *_batch(server, path, "--concurrency", "4")]) as proc:
        retry = proc.wait_for("retry")
        assert retry["status_code"] == 429 and retry["operation"] == "create"
        assert retry["delay_seconds"] == 1  # the server's Retry-After
        sdk.responses.cancel(blocker.id)  # the queue drains from here
        r = proc.finish()
    assert r.code == 0, r.stderr
    assert all(e["status_code"] == 429 for e in r.all("retry"))
    results = r.all("result")
    assert sorted(e["line"] for e in results) == [1, 2, 3, 4]
    assert all(e["status"] == "completed" for e in results)
    assert _server_responses(tmp_path) == 2 + 4  # nothing lost, nothing twice


def test_terminal_shows_a_live_view_and_writes_the_default_output(bgmode_server: BgmodeServer, tmp_path: Path) -> None:
    path = _write(tmp_path / "in.jsonl", [_prompt("one"), _prompt("two")])
    text = on_terminal(*_batch(bgmode_server, path))
    assert "batch: 2 finished (2 completed)" in text, text
    assert "line 1 completed" in text and "line 2 completed" in text
    results = tmp_path / "in.results.jsonl"
    assert sorted(x["line"] for x in _records(results)) == [1, 2]
