"""One client command invocation: a reporter, a `BackgroundClient`, and the outcome.

`Session.finish` turns what the API returned or raised into the last event (`final`,
`timeout`, `interrupted` or `error`) and the process exit code, so every command and both
skill scripts end the same way.
"""

from __future__ import annotations

import shlex
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import openai
import orjson
from openai.types.responses import Response

from bgmode.client.api import (
    BackgroundClient,
    Backoff,
    ClientError,
    FollowTimeout,
    RequestRejected,
    ResponseExpired,
    SubmitError,
    describe_error,
)
from bgmode.client.api import UsageProblem as UsageProblem  # re-exported: the CLI's usage error
from bgmode.client.api import resolve_api_key as resolve_api_key
from bgmode.client.api import resolve_base_url as resolve_base_url
from bgmode.client.defaults import DEFAULT_POLL_SECONDS
from bgmode.client.ledger import Ledger
from bgmode.client.outcome import EXPIRED, ExitCode, exit_code_for
from bgmode.client.output import Reporter, make_reporter


@dataclass
class SessionOptions:
    base_url: str | None = None
    api_key: str | None = None
    json_lines: bool = False
    show_output_text: bool = False
    output_json: Path | None = None
    poll_seconds: float = DEFAULT_POLL_SECONDS
    timeout: float | None = None
    stream: bool = False
    cancel_on_interrupt: bool = False
    #: the argv that resumes following; "{id}" stands for the response id
    resume_argv: Sequence[str] = ("bgmode", "monitor", "{id}")
    #: flags to repeat in the resume hint (e.g. --base-url given on the command line)
    resume_flags: list[str] = field(default_factory=list)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while following, so the resume hint is still printed."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _dump(value: Any) -> Any:
    if value is None:
        return None
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def response_fields(response: Response) -> dict[str, Any]:
    """The fields `final` and `response` events carry for a Response."""
    return {
        "response_id": response.id,
        "status": response.status,
        "usage": _dump(response.usage),
        "error": _dump(response.error),
        "incomplete_details": _dump(response.incomplete_details),
        "output_text": response.output_text,
    }


class Session:
    """Runs one client operation and reports its outcome."""

    def __init__(self, options: SessionOptions, *, reporter: Reporter | None = None) -> None:
        self.options = options
        self.reporter = reporter or make_reporter(
            json_lines=options.json_lines, show_output_text=options.show_output_text
        )
        self.started = time.monotonic()
        self.ledger: Ledger | None = None
        self.client: BackgroundClient | None = None

    # ---------------------------------------------------------------- set-up

    def open(self, base_url: str) -> BackgroundClient:
        """The ledger (it must work before anything is submitted) and the client."""
        self.ledger = Ledger()
        api_key = resolve_api_key(self.options.api_key, base_url)
        poll = self.options.poll_seconds
        self.client = BackgroundClient(
            base_url=base_url,
            api_key=api_key,
            on_event=self.reporter,
            ledger=self.ledger,
            backoff=Backoff(initial=min(1.0, max(0.1, poll))),
        )
        return self.client

    def resume_command(self, response_id: str | None) -> str | None:
        if response_id is None:
            return None
        argv = [a.replace("{id}", response_id) for a in self.options.resume_argv]
        argv += self.options.resume_flags
        return shlex.join(argv)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 3)

    # ---------------------------------------------------------------- outcome

    def error(self, message: str, code: ExitCode = ExitCode.ERROR, **fields: Any) -> ExitCode:
        self.reporter("error", {"message": message, **fields})
        return code

    def finish(self, action: Callable[[BackgroundClient], Response]) -> ExitCode:
        """Run `action` (which follows a response to its end) and report the outcome."""
        client = self.client
        assert client is not None
        try:
            try:
                with sigterm_as_interrupt():
                    response = action(client)
            except KeyboardInterrupt:
                return self._interrupted(client)
            except ResponseExpired as err:
                self.reporter(
                    "final",
                    {
                        "response_id": err.response_id,
                        "status": EXPIRED,
                        "usage": None,
                        "error": {"code": "not_found", "message": str(err)},
                        "incomplete_details": None,
                        "elapsed_seconds": self.elapsed(),
                    },
                )
                return ExitCode.EXPIRED
            except FollowTimeout as err:
                self.reporter(
                    "timeout",
                    {
                        "response_id": err.response_id,
                        "status": err.status,
                        "elapsed_seconds": self.elapsed(),
                        "resume_command": self.resume_command(err.response_id),
                    },
                )
                return ExitCode.TIMEOUT
            except SubmitError as err:
                return self.error(str(err), status_code=err.status_code, stage="create")
            except RequestRejected as err:
                return self.error(
                    str(err),
                    status_code=err.status_code,
                    response_id=err.response_id,
                    resume_command=self.resume_command(err.response_id),
                )
            except (ClientError, openai.OpenAIError, sqlite3.Error) as err:
                return self.error(
                    describe_error(err),
                    response_id=client.response_id,
                    resume_command=self.resume_command(client.response_id),
                )
            return self.final(response)
        finally:
            self.reporter.close()

    def final(self, response: Response, *, event: str = "final") -> ExitCode:
        fields = response_fields(response)
        if self.options.output_json is not None:
            path = self.options.output_json
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(orjson.dumps(response.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n")
            fields["output_json"] = str(path)
        fields["elapsed_seconds"] = self.elapsed()
        self.reporter(event, fields)
        return exit_code_for(response.status)

    def _interrupted(self, client: BackgroundClient) -> ExitCode:
        response_id = client.response_id
        if response_id is not None and self.options.cancel_on_interrupt:
            response: Response | None = None
            problem: str | None = None
            try:
                response = client.cancel(response_id, timeout=15)
            except (ClientError, openai.OpenAIError, KeyboardInterrupt) as err:
                problem = describe_error(err) if not isinstance(err, KeyboardInterrupt) else "interrupted"
            self.reporter(
                "interrupted",
                {
                    "response_id": response_id,
                    "status": response.status if response is not None else client.status,
                    "action": "cancelled" if response is not None else "cancel_failed",
                    "error": problem,
                    "elapsed_seconds": self.elapsed(),
                    "resume_command": None if response is not None else self.resume_command(response_id),
                },
            )
            if response is not None:
                self.final(response)
            return ExitCode.INTERRUPTED
        fields: dict[str, Any] = {
            "response_id": response_id,
            "status": client.status,
            "action": "detached",
            "elapsed_seconds": self.elapsed(),
            "resume_command": self.resume_command(response_id),
        }
        if response_id is None and client.idempotency_key is not None:
            # interrupted while creating: the job may exist, but its id never arrived
            fields["idempotency_key"] = client.idempotency_key
        self.reporter("interrupted", fields)
        return ExitCode.INTERRUPTED
