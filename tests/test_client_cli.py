"""The `bgmode` client commands as subprocesses against a real `bgmode serve` (simulated model)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from bgmode.client.ledger import Ledger
from tests.serving import BgmodeServer
from tests.test_client_helpers import (
    BGMODE,
    FAST,
    SLOW,
    LiveProcess,
    bgmode,
    command_argv,
)


def _run(server: BgmodeServer, *extra: str) -> list[str]:
    return ["run", "--base-url", server.base_url, "--poll-seconds", "0.2", "--prompt", "Say hello.", *extra]


# --------------------------------------------------------------------------- outcomes and exit codes


def test_completed_run_emits_the_skill_events_and_exits_0(bgmode_server: BgmodeServer, tmp_path: Path) -> None:
    out = tmp_path / "final.json"
    r = bgmode(*_run(bgmode_server, *FAST, "--show-output-text", "--output-json", str(out)))
    assert r.code == 0, r.stderr
    names = r.names()
    assert names[0] == "submit_start"
    assert names[1] == "submitted"
    assert "poll" in names
    assert names[-1] == "final"
    assert all("ts" in e for e in r.events)
    submitted = r.one("submitted")
    assert submitted["response_id"].startswith("resp_")
    final = r.one("final")
    assert final["response_id"] == submitted["response_id"]
    assert final["status"] == "completed"
    assert final["usage"]["output_tokens"] > 0
    assert final["error"] is None and final["incomplete_details"] is None
    assert final["output_text"]
    for poll in r.all("poll"):
        assert poll["response_id"] == submitted["response_id"]
        assert isinstance(poll["elapsed_seconds"], float)
    saved = json.loads(out.read_text())
    assert saved["id"] == submitted["response_id"] and saved["status"] == "completed"
    assert final["output_json"] == str(out)


def test_output_text_only_with_the_flag(bgmode_server: BgmodeServer) -> None:
    r = bgmode(*_run(bgmode_server, *FAST))
    assert r.code == 0
    assert "output_text" not in r.one("final")


def test_failed_job_exits_1(bgmode_server: BgmodeServer) -> None:
    r = bgmode(*_run(bgmode_server, "--metadata", "sim_fail_after_tokens=3", *FAST))
    assert r.code == 1, r.stderr
    final = r.one("final")
    assert final["status"] == "failed"
    assert final["error"]["code"] == "server_error"
    assert "sim_fail_after_tokens" in final["error"]["message"]


def test_incomplete_job_exits_4(bgmode_server: BgmodeServer) -> None:
    r = bgmode(
        *_run(bgmode_server, "--max-output-tokens", "20", "--metadata", "sim_output_tokens=100"),
        "--metadata",
        "sim_token_delay_ms=1",
    )
    assert r.code == 4, r.stderr
    final = r.one("final")
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}


def test_cancelled_from_another_process_exits_3(bgmode_server: BgmodeServer) -> None:
    with LiveProcess([*BGMODE, *_run(bgmode_server, *SLOW)]) as follower:
        rid = follower.wait_for("submitted")["response_id"]
        c = bgmode("cancel", rid, "--base-url", bgmode_server.base_url)
        assert c.code == 0, c.stderr
        assert c.one("cancel")["status"] == "cancelled"
        r = follower.finish()
        assert r.code == 3, r.stderr
        assert r.events[-1]["event"] == "final"
        assert r.events[-1]["status"] == "cancelled"
        # cancelling again is idempotent
        again = bgmode("cancel", rid, "--base-url", bgmode_server.base_url)
        assert again.code == 0 and again.one("cancel")["status"] == "cancelled"


def test_unknown_id_is_expired_exit_5(bgmode_server: BgmodeServer) -> None:
    rid = "resp_" + "0" * 50
    r = bgmode("monitor", rid, "--base-url", bgmode_server.base_url, "--poll-seconds", "0.2")
    assert r.code == 5, r.stderr
    final = r.one("final")
    assert final["status"] == "expired" and final["response_id"] == rid
    g = bgmode("get", rid, "--base-url", bgmode_server.base_url)
    assert g.code == 5
    assert bgmode("cancel", rid, "--base-url", bgmode_server.base_url).code == 5


def test_usage_errors_exit_2(bgmode_server: BgmodeServer, tmp_path: Path) -> None:
    base = ["--base-url", bgmode_server.base_url]
    assert bgmode("run", *base).code == 2  # neither --prompt nor --messages-json-file
    msgs = tmp_path / "m.json"
    msgs.write_text("[]")
    assert bgmode("run", *base, "--prompt", "x", "--messages-json-file", str(msgs)).code == 2
    assert bgmode("run", *base, "--messages-json-file", str(msgs)).code == 2  # empty array
    assert bgmode("run", *base, "--prompt", "x", "--reasoning-effort", "huge").code == 2
    assert bgmode("run", *base, "--prompt", "x", "--metadata", "novalue").code == 2
    assert bgmode("run", *base, "--prompt", "x", "--poll-seconds", "0").code == 2
    assert bgmode("monitor", *base).code == 2  # no id


def test_rejected_create_exits_7(bgmode_server: BgmodeServer) -> None:
    r = bgmode(*_run(bgmode_server, "--max-output-tokens", "1"))  # below the API minimum of 16
    assert r.code == 7, r.stderr
    err = r.one("error")
    assert err["stage"] == "create" and err["status_code"] == 400


def test_timeout_exits_6_and_prints_the_resume_command(bgmode_server: BgmodeServer) -> None:
    r = bgmode(*_run(bgmode_server, *SLOW, "--timeout", "0.5"))
    assert r.code == 6, r.stderr
    timeout = r.one("timeout")
    rid = r.one("submitted")["response_id"]
    assert timeout["response_id"] == rid
    assert timeout["status"] in ("queued", "in_progress")
    resumed = bgmode(*command_argv(timeout["resume_command"])[3:])
    assert resumed.code == 0, resumed.stderr
    assert resumed.one("final")["status"] == "completed"


# --------------------------------------------------------------------------- interruption and the ledger


def test_interrupted_run_is_resumed_by_monitor(bgmode_server: BgmodeServer) -> None:
    with LiveProcess([*BGMODE, *_run(bgmode_server, *SLOW, "--show-output-text")]) as follower:
        rid = follower.wait_for("submitted")["response_id"]
        job = Ledger().get(rid)  # recorded before `submitted` was printed
        assert job is not None and job.base_url == bgmode_server.base_url
        follower.interrupt()
        r = follower.finish()
        assert r.code == 130, r.stderr
        interrupted = r.events[-1]
        assert interrupted["event"] == "interrupted"
        assert interrupted["response_id"] == rid
        assert interrupted["action"] == "detached"
        command = interrupted["resume_command"]
        assert rid in command and bgmode_server.base_url in command
        argv = command_argv(command)
        resumed = bgmode(*argv[3:])
        assert resumed.code == 0, resumed.stderr
        final = resumed.one("final")
        assert final["response_id"] == rid and final["status"] == "completed" and final["output_text"]
        # the ledger saw it all
        jobs = bgmode("jobs").all("job")
        assert [j["status"] for j in jobs if j["response_id"] == rid] == ["completed"]


def test_cancel_on_interrupt(bgmode_server: BgmodeServer) -> None:
    with LiveProcess([*BGMODE, *_run(bgmode_server, *SLOW, "--cancel-on-interrupt")]) as follower:
        rid = follower.wait_for("submitted")["response_id"]
        follower.interrupt()
        r = follower.finish()
        assert r.code == 130, r.stderr
        interrupted = r.one("interrupted")
        assert interrupted["action"] == "cancelled" and interrupted["response_id"] == rid
        assert r.one("final")["status"] == "cancelled"
        g = bgmode("get", rid, "--base-url", bgmode_server.base_url)
        assert g.code == 0 and g.one("response")["status"] == "cancelled"


def test_ledger_survives_across_invocations(bgmode_server: BgmodeServer) -> None:
    first = bgmode(*_run(bgmode_server, *FAST))
    second = bgmode(*_run(bgmode_server, *FAST, "--model", "other-model"))
    assert first.code == second.code == 0
    ids = [first.one("submitted")["response_id"], second.one("submitted")["response_id"]]
    jobs = bgmode("jobs", "--json")
    assert jobs.code == 0
    listed = jobs.all("job")
    assert [j["response_id"] for j in listed] == ids
    assert [j["status"] for j in listed] == ["completed", "completed"]
    assert [j["model"] for j in listed] == ["gpt-5.2", "other-model"]
    assert all(j["base_url"] == bgmode_server.base_url for j in listed)
    assert all(j["prompt_summary"] == "Say hello." for j in listed)
    assert [j["response_id"] for j in bgmode("jobs", "--limit", "1").all("job")] == ids[1:]
    # --last follows the newest, and the ledger supplies its base URL
    last = bgmode("monitor", "--last", "--poll-seconds", "0.2")
    assert last.code == 0, last.stderr
    assert last.one("final")["response_id"] == ids[1]


def test_monitor_records_an_id_it_did_not_submit(bgmode_server: BgmodeServer) -> None:
    from openai import OpenAI

    sdk = OpenAI(base_url=bgmode_server.base_url, api_key="k", max_retries=0)
    rid = sdk.responses.create(model="m", input="hi", background=True, metadata={"sim_output_tokens": "5"}).id
    r = bgmode("monitor", rid, "--base-url", bgmode_server.base_url, "--poll-seconds", "0.2")
    assert r.code == 0
    jobs = bgmode("jobs").all("job")
    assert [(j["response_id"], j["status"]) for j in jobs] == [(rid, "completed")]


# --------------------------------------------------------------------------- get, stream


def test_get_shows_a_response(bgmode_server: BgmodeServer) -> None:
    run = bgmode(*_run(bgmode_server, *FAST, "--show-output-text"))
    rid = run.one("submitted")["response_id"]
    g = bgmode("get", rid, "--base-url", bgmode_server.base_url, "--show-output-text")
    assert g.code == 0
    resp = g.one("response")
    assert resp["status"] == "completed"
    assert resp["output_text"] == run.one("final")["output_text"]


def test_stream_run_and_replay(bgmode_server: BgmodeServer) -> None:
    r = bgmode(*_run(bgmode_server, *FAST, "--stream", "--show-output-text"))
    assert r.code == 0, r.stderr
    rid = r.one("submitted")["response_id"]
    final = r.one("final")
    deltas = r.all("delta")
    assert deltas and "".join(d["text"] for d in deltas) == final["output_text"]
    assert "poll" not in r.names()
    polled = bgmode("get", rid, "--base-url", bgmode_server.base_url, "--show-output-text")
    assert polled.one("response")["output_text"] == final["output_text"]
    # `bgmode stream ID --starting-after N` replays what follows N
    first_seq = deltas[0]["sequence_number"]
    s = bgmode("stream", rid, "--starting-after", str(first_seq), "--show-output-text")
    assert s.code == 0, s.stderr
    replayed = s.all("delta")
    assert [d["sequence_number"] for d in replayed] == [d["sequence_number"] for d in deltas[1:]]
    assert s.one("final")["output_text"] == final["output_text"]


def test_streaming_a_foreground_response_falls_back_to_polling(bgmode_server: BgmodeServer) -> None:
    """A non-background response has no event log: the server refuses the stream (400), the
    client says so (`stream_fallback`) and polls instead."""
    from openai import OpenAI

    sdk = OpenAI(base_url=bgmode_server.base_url, api_key="k", max_retries=0)
    done = sdk.responses.create(model="m", input="hi", metadata={"sim_output_tokens": "5"})
    assert done.background is False and done.status == "completed"
    s = bgmode("monitor", done.id, "--stream", "--poll-seconds", "0.2", "--base-url", bgmode_server.base_url)
    assert s.code == 0, s.stderr
    assert s.names() == ["stream_fallback", "poll", "final"]
    fallback = s.one("stream_fallback")
    assert fallback["response_id"] == done.id
    assert fallback["reason"].startswith("HTTP 400: ") and "background=true" in fallback["reason"]
    assert s.one("poll")["status"] == "completed"
    assert s.one("final")["status"] == "completed"


def test_streaming_a_purged_event_log_falls_back_to_polling(make_server: type[BgmodeServer]) -> None:
    """Retention removed the log (400 `stream_expired`): `bgmode stream` polls the response instead."""
    server = make_server(args=["--events-ttl", "0.3", "--sweep-seconds", "0.1"]).start()
    run = bgmode(*_run(server, *FAST, "--show-output-text"))
    assert run.code == 0, run.stderr
    rid = run.one("submitted")["response_id"]
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.base_url}/responses/{rid}", params={"stream": "true"}).status_code != 400:
        assert time.monotonic() < deadline, "the sweeper never removed the event log"
        time.sleep(0.1)  # polling for the sweeper, with a deadline
    s = bgmode("stream", rid, "--show-output-text", "--poll-seconds", "0.2")  # base URL from the ledger
    assert s.code == 0, s.stderr
    assert s.names() == ["stream_fallback", "poll", "final"]
    assert "expired" in s.one("stream_fallback")["reason"]
    assert "delta" not in s.names()
    assert s.one("final")["output_text"] == run.one("final")["output_text"]


def test_messages_json_file(bgmode_server: BgmodeServer, tmp_path: Path) -> None:
    msgs = tmp_path / "messages.json"
    msgs.write_text(
        json.dumps(
            [
                {"role": "system", "content": [{"type": "input_text", "text": "SYSTEM_PROMPT"}]},
                {"role": "developer", "content": [{"type": "input_text", "text": "DEVELOPER_PROMPT"}]},
                {"role": "user", "content": [{"type": "input_text", "text": "Give me a short critique."}]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Overall ..."}]},
                {"role": "user", "content": [{"type": "input_text", "text": "Write a short offshoot."}]},
            ]
        )
    )
    r = bgmode(
        "run", "--base-url", bgmode_server.base_url, "--poll-seconds", "0.2", "--messages-json-file", str(msgs), *FAST
    )
    assert r.code == 0, r.stderr
    assert r.one("submit_start")["input_summary"] == "Write a short offshoot."


def test_base_url_and_key_from_the_environment(bgmode_server: BgmodeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", bgmode_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    r = bgmode("run", "--prompt", "hi", "--poll-seconds", "0.2", *FAST)
    assert r.code == 0, r.stderr
    assert r.one("submit_start")["base_url"] == bgmode_server.base_url


def test_openai_without_a_key_is_a_usage_error() -> None:
    r = bgmode("run", "--prompt", "hi")  # default base URL: api.openai.com, and no OPENAI_API_KEY
    assert r.code == 2
    assert "OPENAI_API_KEY" in r.stderr


def test_sigterm_detaches_exit_130_and_keeps_the_id(bgmode_server: BgmodeServer) -> None:
    with LiveProcess([*BGMODE, *_run(bgmode_server, *SLOW)]) as follower:
        rid = follower.wait_for("submitted")["response_id"]
        follower.proc.send_signal(signal.SIGTERM)
        r = follower.finish()
    assert r.code == 130, r.stderr
    interrupted = r.events[-1]
    assert interrupted["event"] == "interrupted"
    assert interrupted["response_id"] == rid and interrupted["action"] == "detached"
    assert rid in interrupted["resume_command"]
    job = Ledger().get(rid)
    assert job is not None and job.base_url == bgmode_server.base_url
    assert job.status in ("queued", "in_progress")
    # the job was not cancelled: it finishes on the server, and monitor follows it there
    resumed = bgmode(*command_argv(interrupted["resume_command"])[3:])
    assert resumed.code == 0, resumed.stderr
    assert resumed.one("final")["status"] == "completed"


@pytest.mark.parametrize("where", ["under_a_file", "a_directory"])
def test_a_ledger_that_cannot_be_opened_exits_7_before_anything_is_sent(
    bgmode_server: BgmodeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from tests.faulty_proxy import FaultyProxy

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    path = blocker / "ledger.db" if where == "under_a_file" else tmp_path
    monkeypatch.setenv("BGMODE_LEDGER_PATH", str(path))
    with FaultyProxy(bgmode_server.url) as proxy:
        r = bgmode("run", "--base-url", proxy.base_url, "--prompt", "hi", *FAST)
        assert r.code == 7, r.stderr
        assert r.one("error")["message"].startswith("cannot open the ledger")
        assert proxy.requests == []  # no job was started that nothing would remember
        m = bgmode("monitor", "resp_" + "0" * 50, "--base-url", proxy.base_url)
        assert m.code == 7, m.stderr
        assert proxy.requests == []


def test_the_api_key_comes_from_openai_api_key(
    make_server: type[BgmodeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server(args=["--api-keys", "sk-right:team"]).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-right")
    ok = bgmode(*_run(server, *FAST))
    assert ok.code == 0, ok.stderr
    assert ok.one("final")["status"] == "completed"
    rid = ok.one("submitted")["response_id"]
    assert bgmode("get", rid, "--base-url", server.base_url).code == 0
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    wrong = bgmode(*_run(server, *FAST))
    assert wrong.code == 7, wrong.stderr
    err = wrong.one("error")
    assert err["stage"] == "create" and err["status_code"] == 401
    g = bgmode("get", rid, "--base-url", server.base_url)
    assert g.code == 7 and g.one("response")["status_code"] == 401
    # --api-key wins over the variable
    flag = bgmode(*_run(server, *FAST, "--api-key", "sk-right"))
    assert flag.code == 0, flag.stderr
    monkeypatch.delenv("OPENAI_API_KEY")
    none = bgmode(*_run(server, *FAST))
    assert none.code == 7 and none.one("error")["status_code"] == 401
    assert os.environ.get("OPENAI_API_KEY") is None
