"""`bgmode jobs --watch` as a subprocess against a real `bgmode serve`."""

from __future__ import annotations

from tests.serving import BgmodeServer
from tests.test_client_helpers import BGMODE, FAST, LiveProcess, bgmode, on_terminal

SOME = ("--metadata", "sim_output_tokens=60", "--metadata", "sim_token_delay_ms=15")
LONG = ("--metadata", "sim_output_tokens=5000", "--metadata", "sim_token_delay_ms=20")


def _detached(server: BgmodeServer, *extra: str) -> str:
    """A job submitted by `bgmode run` that stops following at once (it keeps running)."""
    r = bgmode("run", "--base-url", server.base_url, "--prompt", "Say hello.", "--poll-seconds", "0.2", *extra)
    assert r.code in (0, 6), r.stderr
    return str(r.one("submitted")["response_id"])


def test_watch_refreshes_until_every_job_has_finished(bgmode_server: BgmodeServer) -> None:
    done = _detached(bgmode_server, *FAST)
    slow = _detached(bgmode_server, *SOME, "--timeout", "0.2")
    doomed = _detached(bgmode_server, *LONG, "--timeout", "0.2")  # runs until it is cancelled
    with LiveProcess([*BGMODE, "jobs", "--watch", "--interval", "0.2"]) as watch:
        first = [watch.wait_for("job") for _ in range(3)]
        assert [e["response_id"] for e in first] == [doomed, slow, done]  # newest first
        shown = {e["response_id"]: e for e in first}
        assert shown[done]["status"] == "completed" and shown[done]["output_chars"] > 0
        assert shown[doomed]["status"] in ("queued", "in_progress")
        assert all(isinstance(e["elapsed_seconds"], float) for e in first)
        c = bgmode("cancel", doomed, "--base-url", bgmode_server.base_url)
        assert c.code == 0, c.stderr
        r = watch.finish()
    assert r.code == 0, r.stderr
    assert r.events[-1]["event"] == "watch_end"
    assert r.events[-1]["counts"] == {"completed": 2, "cancelled": 1}
    last = {e["response_id"]: e for e in r.all("job")}
    assert last[slow]["status"] == "completed" and last[slow]["output_tokens"] > 0
    assert last[doomed]["status"] == "cancelled"
    # the ledger kept what the watch saw
    listed = {j["response_id"]: j["status"] for j in bgmode("jobs").all("job")}
    assert listed == {done: "completed", slow: "completed", doomed: "cancelled"}


def test_watch_on_a_terminal_draws_a_table(bgmode_server: BgmodeServer) -> None:
    rid = _detached(bgmode_server, *FAST)
    text = on_terminal("jobs", "--watch", "--interval", "0.2")
    assert "response id" in text and rid in text and "completed" in text, text
