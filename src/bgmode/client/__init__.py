"""The bgmode client: submit background responses, follow them, never lose an id.

A small Python API for scripts (the CLI uses it too):

    from bgmode.client import BackgroundClient, ResponseRequest, submit, wait, stream

    response = submit(ResponseRequest(input="Summarize ..."), base_url="http://127.0.0.1:8080/v1")
    final = wait(response.id, base_url="http://127.0.0.1:8080/v1", poll_seconds=2)
    print(final.status, final.output_text)

`submit`, `follow`/`wait` and `stream` record jobs in the default ledger and report nothing;
build a `BackgroundClient` with `on_event=` to receive progress events. Names are loaded on
first use, so `import bgmode.client` stays cheap (the SDK takes a second to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bgmode.client.api import (
        BackgroundClient,
        Backoff,
        ClientError,
        EventSink,
        FollowTimeout,
        ListingUnsupported,
        RequestRejected,
        ResponseExpired,
        ResponseRequest,
        SubmitError,
        UsageProblem,
    )
    from bgmode.client.functions import follow, stream, submit, wait
    from bgmode.client.ledger import Job, Ledger
    from bgmode.client.outcome import ExitCode, exit_code_for

_WHERE = {
    "Backoff": "api",
    "BackgroundClient": "api",
    "ClientError": "api",
    "EventSink": "api",
    "FollowTimeout": "api",
    "ListingUnsupported": "api",
    "RequestRejected": "api",
    "ResponseExpired": "api",
    "ResponseRequest": "api",
    "SubmitError": "api",
    "UsageProblem": "api",
    "follow": "functions",
    "stream": "functions",
    "submit": "functions",
    "wait": "functions",
    "Job": "ledger",
    "Ledger": "ledger",
    "ExitCode": "outcome",
    "exit_code_for": "outcome",
}

__all__ = [
    "BackgroundClient",
    "Backoff",
    "ClientError",
    "EventSink",
    "exit_code_for",
    "ExitCode",
    "follow",
    "FollowTimeout",
    "Job",
    "Ledger",
    "ListingUnsupported",
    "RequestRejected",
    "ResponseExpired",
    "ResponseRequest",
    "stream",
    "submit",
    "SubmitError",
    "UsageProblem",
    "wait",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bgmode.client' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bgmode.client.{module}"), name)
