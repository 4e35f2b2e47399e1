"""One-call helpers for scripts: `submit`, `follow` / `wait`, `stream` (each with its own client).

They record jobs in the default ledger and report nothing unless given `on_event`. The server
is found as the CLI finds it: `base_url`, else (for an id) the URL the ledger recorded for it,
else `$OPENAI_BASE_URL`, else OpenAI's API, which needs a key (`api_key` or
`$OPENAI_API_KEY`; without one `UsageProblem` is raised before anything is sent).
"""

from __future__ import annotations

from openai.types.responses import Response

from bgmode.client.api import BackgroundClient, EventSink, ResponseRequest, resolve_base_url
from bgmode.client.defaults import DEFAULT_POLL_SECONDS
from bgmode.client.ledger import Ledger


def _client(
    base_url: str | None, api_key: str | None, on_event: EventSink | None, response_id: str | None = None
) -> BackgroundClient:
    ledger = Ledger()
    known = None
    if base_url is None and response_id is not None:
        job = ledger.get(response_id)
        known = job.base_url if job is not None else None
    return BackgroundClient(
        base_url=resolve_base_url(base_url, known), api_key=api_key, on_event=on_event, ledger=ledger
    )


def submit(
    request: ResponseRequest,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    on_event: EventSink | None = None,
) -> Response:
    """Create a background response (recorded in the ledger); returns it as queued."""
    return _client(base_url, api_key, on_event).submit(request)


def follow(
    response_id: str,
    *,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    timeout: float | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    on_event: EventSink | None = None,
) -> Response:
    """Poll `response_id` until it is terminal (network failures retried until `timeout`)."""
    client = _client(base_url, api_key, on_event, response_id)
    return client.follow(response_id, poll_seconds=poll_seconds, timeout=timeout)


wait = follow


def stream(
    response_id: str,
    *,
    starting_after: int | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    timeout: float | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    on_event: EventSink | None = None,
) -> Response:
    """Follow `response_id` by streaming with auto-resume; text arrives as `delta` events."""
    client = _client(base_url, api_key, on_event, response_id)
    return client.stream(response_id, starting_after=starting_after, poll_seconds=poll_seconds, timeout=timeout)
