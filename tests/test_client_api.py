"""The Python API (`bgmode.client`) in-process against a real `bgmode serve`."""

from __future__ import annotations

from typing import Any

import pytest

from bgmode.client import (
    BackgroundClient,
    FollowTimeout,
    Ledger,
    ResponseExpired,
    ResponseRequest,
    UsageProblem,
    stream,
    submit,
    wait,
)
from tests.serving import BgmodeServer

FAST = {"sim_output_tokens": "12", "sim_token_delay_ms": "1"}
SLOW = {"sim_output_tokens": "400", "sim_token_delay_ms": "25"}


def test_submit_then_wait(bgmode_server: BgmodeServer) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    queued = submit(
        ResponseRequest(input="hi", metadata=FAST),
        base_url=bgmode_server.base_url,
        on_event=lambda n, f: events.append((n, f)),
    )
    assert queued.status in ("queued", "in_progress")
    final = wait(queued.id, base_url=bgmode_server.base_url, poll_seconds=0.1)
    assert final.status == "completed" and final.output_text
    assert [n for n, _ in events] == ["submit_start", "submitted"]
    job = Ledger().get(queued.id)
    assert job is not None and job.status == "completed"


def test_run_with_stream_reports_deltas(bgmode_server: BgmodeServer) -> None:
    deltas: list[str] = []

    def on_event(name: str, fields: dict[str, Any]) -> None:
        if name == "delta":
            deltas.append(fields["text"])

    client = BackgroundClient(base_url=bgmode_server.base_url, on_event=on_event, ledger=Ledger())
    final = client.run(ResponseRequest(input="hi", metadata=FAST), stream=True, poll_seconds=0.1)
    assert final.status == "completed"
    assert "".join(deltas) == final.output_text
    assert client.last_sequence_number is not None
    # the module-level `stream` replays it from the start
    replayed: list[str] = []
    again = stream(
        final.id,
        base_url=bgmode_server.base_url,
        on_event=lambda n, f: replayed.append(f["text"]) if n == "delta" else None,
    )
    assert again.output_text == final.output_text and "".join(replayed) == final.output_text


def test_unknown_id_raises_expired(bgmode_server: BgmodeServer) -> None:
    client = BackgroundClient(base_url=bgmode_server.base_url)
    with pytest.raises(ResponseExpired):
        client.follow("resp_" + "1" * 50, poll_seconds=0.1)


def test_follow_timeout_then_cancel(bgmode_server: BgmodeServer) -> None:
    client = BackgroundClient(base_url=bgmode_server.base_url, ledger=Ledger())
    queued = client.submit(ResponseRequest(input="hi", metadata=SLOW))
    with pytest.raises(FollowTimeout) as info:
        client.follow(queued.id, poll_seconds=0.1, timeout=0.3)
    assert info.value.response_id == queued.id
    assert client.cancel(queued.id).status == "cancelled"
    assert client.follow(queued.id, poll_seconds=0.1).status == "cancelled"


def test_without_base_url_the_server_is_found_as_the_cli_finds_it(
    bgmode_server: BgmodeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", bgmode_server.base_url)
    queued = submit(ResponseRequest(input="hi", metadata=FAST))  # $OPENAI_BASE_URL, no key needed
    job = Ledger().get(queued.id)
    assert job is not None and job.base_url == bgmode_server.base_url
    monkeypatch.delenv("OPENAI_BASE_URL")
    final = wait(queued.id, poll_seconds=0.1, timeout=30)  # the ledger knows where it lives
    assert final.status == "completed" and final.output_text
    replayed = stream(queued.id, timeout=30)
    assert replayed.output_text == final.output_text


def test_nothing_saying_where_to_go_is_the_cli_usage_error(bgmode_server: BgmodeServer) -> None:
    """No base URL and no key: OpenAI's API would be asked with no key; raise before sending."""
    with pytest.raises(UsageProblem, match="no API key: set OPENAI_API_KEY"):
        submit(ResponseRequest(input="hi"))
    assert Ledger().list() == []  # nothing was submitted
    with pytest.raises(UsageProblem, match="OPENAI_API_KEY"):
        wait("resp_" + "2" * 50, poll_seconds=0.1, timeout=5)  # an id the ledger does not know
    with pytest.raises(UsageProblem):
        BackgroundClient()
    # the same situation on the command line: usage error, exit 2
    from tests.test_client_helpers import bgmode

    assert bgmode("monitor", "resp_" + "2" * 50).code == 2
