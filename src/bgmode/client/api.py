"""The Python API: submit background responses and follow them without ever losing one.

Built on the official `openai` SDK (with its own retries turned off), it adds what a
long-running job needs:

- `submit` sends the create with an `Idempotency-Key` made once per submission and reused on
  every retry, so a retried POST cannot start a second job (on servers that honour the key);
- `follow` / `wait` poll until a terminal status, retrying connection errors, timeouts, 408,
  409, 429 and 5xx with exponential backoff (honouring `Retry-After`) until the caller's
  timeout;
- `stream` follows a background+stream response, remembers the last `sequence_number` and
  resumes with `starting_after` when the connection drops, falling back to polling when
  resuming fails;
- every submitted id goes into the `Ledger` before anything else happens.

Progress is reported as `(name, fields)` events to an optional callback; the CLI turns them
into JSON lines or a live view.

    from bgmode.client import BackgroundClient, ResponseRequest
    client = BackgroundClient(base_url="http://127.0.0.1:8080/v1")
    response = client.run(ResponseRequest(model="gpt-5.2", input="Hello"), poll_seconds=2)
    print(response.status, response.output_text)
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

import openai
from openai import OpenAI
from openai.types.responses import Response

from bgmode.client.defaults import (
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    DEFAULT_POLL_SECONDS,
    DEFAULT_REASONING_EFFORT,
    DEFAULT_VERBOSITY,
)
from bgmode.client.ledger import Ledger
from bgmode.client.outcome import TERMINAL_STATUSES
from bgmode.retry_after import retry_after

#: receives every progress event: (event name, fields)
EventSink = Callable[[str, dict[str, Any]], None]

T = TypeVar("T")

_TERMINAL_EVENT_TYPES = frozenset(
    {"response.completed", "response.failed", "response.incomplete", "response.cancelled"}
)
#: attempts for a create before giving up (a create is only retried with its Idempotency-Key)
CREATE_ATTEMPTS = 6
#: resumes in a row that bring no new event before the stream is given up for polling
MAX_IDLE_RESUMES = 3
#: the most responses one listing page may hold (bgmode's and OpenAI's list limit)
LIST_PAGE_MAX = 100
#: response statuses a listing can filter on
LIST_STATUSES = ("queued", "in_progress", "completed", "failed", "cancelled", "incomplete")


# --------------------------------------------------------------------------- errors


class ClientError(Exception):
    """Base class of the errors this API raises."""


class UsageProblem(ClientError):
    """Nothing says where to send requests, or with which key (the CLI's usage error, exit 2)."""


class SubmitError(ClientError):
    """The create was rejected or could not be sent; no job id is known."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        #: the server's Retry-After (seconds) when it refused for now (429, 503)
        self.retry_after = retry_after


class RequestRejected(ClientError):
    """The server refused a follow-up request with a non-retryable status (e.g. 400)."""

    def __init__(self, message: str, *, status_code: int | None, response_id: str | None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response_id = response_id


class ResponseExpired(ClientError):
    """The server does not know the response (404): it vanished or its data expired."""

    def __init__(self, response_id: str, message: str) -> None:
        super().__init__(message)
        self.response_id = response_id


class ListingUnsupported(ClientError):
    """The server has no `GET /responses` listing (OpenAI's own API, or an older bgmode)."""

    def __init__(self, base_url: str, status_code: int) -> None:
        super().__init__(
            f"the server at {base_url} does not support listing responses "
            f"(GET {base_url}/responses answered HTTP {status_code}); `bgmode jobs` without --server "
            "lists the jobs this machine submitted"
        )
        self.status_code = status_code


class FollowTimeout(ClientError):
    """The caller's timeout was reached while following; the job may still be running."""

    def __init__(self, response_id: str | None, status: str | None) -> None:
        super().__init__(f"gave up following {response_id} (last status {status}): timeout reached")
        self.response_id = response_id
        self.status = status


# --------------------------------------------------------------------------- where to go


def resolve_base_url(given: str | None, ledger_base_url: str | None = None) -> str:
    """The URL given, else where the ledger says the job lives, else $OPENAI_BASE_URL, else OpenAI."""
    return (given or ledger_base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def resolve_api_key(given: str | None, base_url: str, *, hint: str = "pass --api-key") -> str | None:
    """The key given, else $OPENAI_API_KEY; OpenAI's own API without one is a `UsageProblem`."""
    key = given or os.environ.get("OPENAI_API_KEY")
    if not key and urlparse(base_url).hostname == "api.openai.com":
        raise UsageProblem(f"no API key: set OPENAI_API_KEY or {hint}")
    return key


# --------------------------------------------------------------------------- request


@dataclass
class ResponseRequest:
    """A background create request, in the skill's shape.

    `text: {format: {type: "text"}, verbosity}`, `reasoning: {effort}`, `background: true`;
    no `store`, and no `tools` unless given.
    """

    input: str | list[dict[str, Any]]
    model: str = DEFAULT_MODEL
    reasoning_effort: str | None = DEFAULT_REASONING_EFFORT
    verbosity: str | None = DEFAULT_VERBOSITY
    metadata: dict[str, str] = field(default_factory=dict)
    max_output_tokens: int | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None

    def create_params(self) -> dict[str, Any]:
        """The keyword arguments for `client.responses.create` (without `stream`)."""
        text: dict[str, Any] = {"format": {"type": "text"}}
        if self.verbosity:
            text["verbosity"] = self.verbosity
        params: dict[str, Any] = {"model": self.model, "input": self.input, "text": text, "background": True}
        if self.reasoning_effort:
            params["reasoning"] = {"effort": self.reasoning_effort}
        if self.metadata:
            params["metadata"] = dict(self.metadata)
        if self.max_output_tokens is not None:
            params["max_output_tokens"] = self.max_output_tokens
        if self.instructions is not None:
            params["instructions"] = self.instructions
        if self.tools is not None:
            params["tools"] = self.tools
        return params

    def summary(self, width: int = 80) -> str:
        """The last user message (or the prompt), on one line, shortened to `width`."""
        return summarize_input(self.input, width)


def summarize_input(value: str | Iterable[Mapping[str, Any]], width: int = 80) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = ""
        for message in value:
            if message.get("role", "user") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                text = content
            elif isinstance(content, list):
                text = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: initial, initial*2, ... capped at `maximum` seconds."""

    initial: float = 0.5
    maximum: float = 30.0
    #: the longest Retry-After honoured as given
    max_retry_after: float = 300.0

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * 2.0 ** max(0, attempt - 1))
        return base * random.uniform(0.8, 1.2)


def _retry_after(err: openai.APIStatusError) -> float | None:
    return retry_after(err.response.headers)


def _retryable(err: BaseException) -> tuple[bool, float | None, int | None]:
    """(should retry, Retry-After seconds, HTTP status) for an error from the SDK."""
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        if err.response.headers.get("x-should-retry", "").lower() == "false":
            return False, None, code
        if code in (408, 409, 429) or code >= 500:
            return True, _retry_after(err), code
        return False, None, code
    if isinstance(err, openai.APIConnectionError):
        return True, None, None
    return False, None, None


def describe_error(err: BaseException) -> str:
    if isinstance(err, openai.APIStatusError):
        body = err.body
        message = None
        if isinstance(body, Mapping):
            inner = body.get("error", body)
            if isinstance(inner, Mapping):
                message = inner.get("message")
        return f"HTTP {err.status_code}: {message or err.message}"
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return f"{err.message}{detail}"
    return f"{type(err).__name__}: {err}"


# --------------------------------------------------------------------------- the client


def new_idempotency_key() -> str:
    return f"bgmode-{uuid.uuid4().hex}"


def response_from(value: object) -> Response | None:
    """A `Response` from an SDK model or a plain dict (unknown stream events carry dicts)."""
    if isinstance(value, Response):
        return value
    if isinstance(value, Mapping) and value.get("id"):
        return Response.construct(**{str(k): v for k, v in value.items()})
    return None


def _listed_response(item: object) -> Response | None:
    """A listed Response, validated as the SDK would (a shape it does not know: kept as given)."""
    if not isinstance(item, Mapping) or not item.get("id"):
        return None
    try:
        return Response.model_validate(item)
    except ValueError:
        return response_from(item)


@dataclass
class _StreamState:
    response_id: str | None = None
    last_sequence_number: int | None = None
    status: str | None = None
    idempotency_key: str | None = None


class BackgroundClient:
    """Submit and follow background responses (see the module docstring).

    `base_url` and `api_key` default to `OPENAI_BASE_URL` / `OPENAI_API_KEY`, as the CLI's
    `--base-url` / `--api-key` do; with neither URL it is OpenAI's API, which needs a key
    (`UsageProblem` otherwise). A server other than OpenAI's may need no key: a placeholder is
    sent then, since the SDK needs one. `on_event` receives every progress event; `ledger`
    records every submitted id.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        on_event: EventSink | None = None,
        ledger: Ledger | None = None,
        backoff: Backoff | None = None,
        request_timeout: float = 60.0,
        stream_read_timeout: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = resolve_base_url(base_url)
        key = resolve_api_key(api_key, self.base_url, hint="pass api_key=") or "bgmode-no-key"
        self.openai = OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=request_timeout)
        self.ledger = ledger
        self.backoff = backoff or Backoff()
        self.request_timeout = request_timeout
        self.stream_read_timeout = stream_read_timeout
        self._on_event = on_event
        self._sleep = sleep
        self._started = time.monotonic()
        #: the response being followed, and its last known status (read them after Ctrl-C)
        self.response_id: str | None = None
        self.status: str | None = None
        #: the last `sequence_number` seen while streaming
        self.last_sequence_number: int | None = None
        #: the Idempotency-Key of the last create
        self.idempotency_key: str | None = None

    # ----------------------------------------------------------------- plumbing

    def emit(self, name: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(name, fields)

    def elapsed(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    def _remaining(self, deadline: float | None, cap: float) -> float:
        if deadline is None:
            return cap
        return max(1.0, min(cap, deadline - time.monotonic()))

    def _set_status(self, status: str | None) -> None:
        if status is None or status == self.status:
            return
        self.status = status
        if self.ledger is not None and self.response_id is not None:
            try:
                self.ledger.update_status(self.response_id, status, base_url=self.base_url)
            except Exception as err:  # the ledger must never stop a follow
                self.emit("warning", response_id=self.response_id, message=f"ledger update failed: {err}")

    def _call(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        deadline: float | None,
        max_attempts: int | None = None,
    ) -> T:
        """Run `fn`, retrying transient failures with backoff until `deadline`."""
        attempt = 0
        while True:
            try:
                return fn()
            except openai.APIError as err:
                retry, retry_after, code = _retryable(err)
                if not retry:
                    raise
                attempt += 1
                if max_attempts is not None and attempt >= max_attempts:
                    raise
                if retry_after is not None:
                    delay = min(retry_after, self.backoff.max_retry_after)
                else:
                    delay = self.backoff.delay(attempt)
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise FollowTimeout(self.response_id, self.status) from err
                    delay = min(delay, remaining)
                self.emit(
                    "retry",
                    response_id=self.response_id,
                    operation=operation,
                    attempt=attempt,
                    delay_seconds=round(delay, 3),
                    status_code=code,
                    error=describe_error(err),
                )
                self._sleep(delay)

    def _not_found(self, response_id: str, err: openai.NotFoundError) -> ResponseExpired:
        self.response_id = response_id
        self._set_status("expired")
        return ResponseExpired(response_id, describe_error(err))

    # ----------------------------------------------------------------- submit

    def _begin_submit(self, request: ResponseRequest, *, stream: bool, key: str | None = None) -> str:
        key = key or new_idempotency_key()
        self.idempotency_key = key
        self.emit(
            "submit_start",
            model=request.model,
            reasoning_effort=request.reasoning_effort,
            verbosity=request.verbosity,
            stream=stream,
            base_url=self.base_url,
            input_summary=request.summary(),
            max_output_tokens=request.max_output_tokens,
            metadata=request.metadata or None,
        )
        if self.ledger is not None:
            self.ledger.record_submitting(
                idempotency_key=key,
                model=request.model,
                prompt_summary=request.summary(),
                base_url=self.base_url,
                stream=stream,
            )
        return key

    def _submitted(self, key: str, response_id: str, status: str | None, model: str | None) -> None:
        """The id is known: into the ledger first, then tell the caller."""
        self.response_id = response_id
        self.status = status
        if self.ledger is not None:
            self.ledger.record_submitted(idempotency_key=key, response_id=response_id, status=status or "queued")
        self.emit("submitted", response_id=response_id, status=status, model=model)

    def _submit_failed(self, key: str, err: openai.APIError) -> SubmitError:
        if self.ledger is not None:
            try:
                self.ledger.record_submit_failed(idempotency_key=key)
            except Exception:
                pass
        code = err.status_code if isinstance(err, openai.APIStatusError) else None
        after = _retry_after(err) if isinstance(err, openai.APIStatusError) else None
        return SubmitError(f"create failed: {describe_error(err)}", status_code=code, retry_after=after)

    def submit(
        self, request: ResponseRequest, *, timeout: float | None = None, idempotency_key: str | None = None
    ) -> Response:
        """Create a background response and return it as created (usually `queued`).

        `idempotency_key`: reuse a key recorded before an earlier attempt (e.g. by a batch that
        crashed before the answer arrived): the server returns that attempt's response.
        """
        self._started = time.monotonic()
        return self._submit(request, deadline=self._deadline(timeout), key=idempotency_key)

    def _submit(self, request: ResponseRequest, *, deadline: float | None, key: str | None = None) -> Response:
        key = self._begin_submit(request, stream=False, key=key)
        params = request.create_params()
        try:
            response: Response = self._call(
                "create",
                lambda: self.openai.responses.create(**params, extra_headers={"Idempotency-Key": key}),
                deadline=deadline,
                max_attempts=CREATE_ATTEMPTS,
            )
        except openai.APIError as err:
            raise self._submit_failed(key, err) from err
        self._submitted(key, response.id, response.status, response.model)
        return response

    # ----------------------------------------------------------------- follow by polling

    def follow(
        self, response_id: str, *, poll_seconds: float = DEFAULT_POLL_SECONDS, timeout: float | None = None
    ) -> Response:
        """Poll `response_id` until it reaches a terminal status; return the final Response.

        Raises `ResponseExpired` on 404, `FollowTimeout` after `timeout` seconds.
        """
        self._started = time.monotonic()
        self.response_id = response_id
        self.status = None
        return self._poll(response_id, poll_seconds=poll_seconds, deadline=self._deadline(timeout))

    wait = follow

    def _poll(self, response_id: str, *, poll_seconds: float, deadline: float | None) -> Response:
        polls = 0
        while True:
            try:
                response = self._call(
                    "retrieve",
                    lambda: self.openai.responses.retrieve(
                        response_id, timeout=self._remaining(deadline, self.request_timeout)
                    ),
                    deadline=deadline,
                )
            except openai.NotFoundError as err:
                raise self._not_found(response_id, err) from err
            except openai.APIStatusError as err:
                raise RequestRejected(
                    describe_error(err), status_code=err.status_code, response_id=response_id
                ) from err
            polls += 1
            self._set_status(response.status)
            self.emit(
                "poll",
                response_id=response_id,
                status=response.status,
                elapsed_seconds=self.elapsed(),
                poll=polls,
            )
            if response.status in TERMINAL_STATUSES:
                return response
            delay = poll_seconds
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FollowTimeout(response_id, response.status)
                delay = min(delay, remaining)
            self._sleep(delay)

    # ----------------------------------------------------------------- follow by streaming

    def stream(
        self,
        response_id: str,
        *,
        starting_after: int | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        timeout: float | None = None,
    ) -> Response:
        """Follow a background+stream response by streaming, resuming after drops.

        Text deltas arrive as `delta` events. When resuming fails (or the response was not
        created with `stream=true`) it falls back to polling. Returns the final Response.
        """
        self._started = time.monotonic()
        self.response_id = response_id
        self.status = None
        self.last_sequence_number = starting_after
        state = _StreamState(response_id=response_id, last_sequence_number=starting_after)
        return self._follow_stream(state, poll_seconds=poll_seconds, deadline=self._deadline(timeout))

    def run(
        self,
        request: ResponseRequest,
        *,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        timeout: float | None = None,
        stream: bool = False,
    ) -> Response:
        """Submit `request` and follow it to the end (by polling, or by streaming)."""
        self._started = time.monotonic()
        self.response_id = None
        self.status = None
        deadline = self._deadline(timeout)
        if not stream:
            response = self._submit(request, deadline=deadline)
            if response.status in TERMINAL_STATUSES:
                return response
            return self._poll(response.id, poll_seconds=poll_seconds, deadline=deadline)
        key = self._begin_submit(request, stream=True)
        state = _StreamState(idempotency_key=key)
        params = request.create_params()
        reason = "stream ended before a terminal event"
        attempt = 0
        while state.response_id is None:
            attempt += 1
            try:
                opened: Any = self._call(
                    "create",
                    lambda: self.openai.responses.create(
                        **params,
                        stream=True,
                        extra_headers={"Idempotency-Key": key},
                        timeout=self._remaining(deadline, self.stream_read_timeout),
                    ),
                    deadline=deadline,
                    max_attempts=CREATE_ATTEMPTS,
                )
            except openai.APIError as err:
                raise self._submit_failed(key, err) from err
            try:
                final = self._consume(opened, state)
                if final is not None:
                    return final
                reason = "stream ended before a terminal event"
            except openai.APIError as err:
                reason = describe_error(err)
            if state.response_id is None:
                # the id never arrived; the same Idempotency-Key makes another create safe
                if attempt >= CREATE_ATTEMPTS:
                    if self.ledger is not None:
                        self.ledger.record_submit_failed(idempotency_key=key)
                    raise SubmitError(f"create stream broke before the response id arrived: {reason}")
                delay = self.backoff.delay(attempt)
                self.emit(
                    "retry",
                    response_id=None,
                    operation="create",
                    attempt=attempt,
                    delay_seconds=round(delay, 3),
                    status_code=None,
                    error=reason,
                )
                self._sleep(delay)
        return self._follow_stream(state, poll_seconds=poll_seconds, deadline=deadline, reason=reason)

    def _consume(self, events: Any, state: _StreamState) -> Response | None:
        """Read a stream to its terminal event (returned) or its end (None)."""
        try:
            for event in events:
                seq = getattr(event, "sequence_number", None)
                if isinstance(seq, int):
                    if state.last_sequence_number is not None and seq <= state.last_sequence_number:
                        continue  # a replayed event we already saw
                    state.last_sequence_number = seq
                    self.last_sequence_number = seq
                etype = str(getattr(event, "type", ""))
                response = response_from(getattr(event, "response", None))
                if response is not None and state.response_id is None:
                    state.response_id = response.id
                    if state.idempotency_key is not None:
                        self._submitted(state.idempotency_key, response.id, response.status, response.model)
                        state.status = response.status
                    else:
                        self.response_id = response.id
                if etype == "response.output_text.delta":
                    self.emit(
                        "delta",
                        response_id=state.response_id,
                        sequence_number=seq,
                        text=str(getattr(event, "delta", "")),
                    )
                status = response.status if response is not None else None
                if status is not None and status != state.status:
                    state.status = status
                    self._set_status(status)
                    self.emit(
                        "status",
                        response_id=state.response_id,
                        status=status,
                        elapsed_seconds=self.elapsed(),
                        sequence_number=seq,
                    )
                if response is not None and (etype in _TERMINAL_EVENT_TYPES or status in TERMINAL_STATUSES):
                    return response
        finally:
            close = getattr(events, "close", None)
            if callable(close):
                close()
        return None

    def _follow_stream(
        self,
        state: _StreamState,
        *,
        poll_seconds: float,
        deadline: float | None,
        reason: str = "start",
    ) -> Response:
        assert state.response_id is not None
        response_id = state.response_id
        idle = 0
        resumes = 0
        opened: Any = None
        while True:
            before = state.last_sequence_number
            try:
                if opened is None:
                    if reason != "start":
                        resumes += 1
                        self.emit(
                            "stream_resume",
                            response_id=response_id,
                            starting_after=state.last_sequence_number,
                            attempt=resumes,
                            reason=reason,
                        )
                    opened = self._call(
                        "stream",
                        self._resume_call(response_id, state.last_sequence_number, deadline),
                        deadline=deadline,
                    )
                final = self._consume(opened, state)
                if final is not None:
                    return final
                reason = "stream ended before a terminal event"
            except openai.NotFoundError as err:
                raise self._not_found(response_id, err) from err
            except openai.APIStatusError as err:
                # the stream cannot be (re)opened (e.g. not created with stream=true): poll
                self.emit("stream_fallback", response_id=response_id, reason=describe_error(err))
                return self._poll(response_id, poll_seconds=poll_seconds, deadline=deadline)
            except openai.APIError as err:
                reason = describe_error(err)
            opened = None
            idle = idle + 1 if state.last_sequence_number == before else 0
            if idle >= MAX_IDLE_RESUMES:
                self.emit("stream_fallback", response_id=response_id, reason=f"no progress after resuming: {reason}")
                return self._poll(response_id, poll_seconds=poll_seconds, deadline=deadline)
            if deadline is not None and time.monotonic() >= deadline:
                raise FollowTimeout(response_id, self.status)
            if idle:
                self._sleep(self.backoff.delay(idle))

    def _resume_call(self, response_id: str, after: int | None, deadline: float | None) -> Callable[[], Any]:
        def call() -> Any:
            return self.openai.responses.retrieve(
                response_id,
                stream=True,
                starting_after=after if after is not None else openai.omit,
                timeout=self._remaining(deadline, self.stream_read_timeout),
            )

        return call

    # ----------------------------------------------------------------- the server's listing

    def list_responses(
        self,
        *,
        status: str | None = None,
        model: str | None = None,
        limit: int | None = 20,
        timeout: float | None = None,
    ) -> list[Response]:
        """The server's responses, newest first, through bgmode's `GET /responses` listing.

        Pages through `has_more` (`after` = the last id seen) until `limit` responses (None:
        all of them). Transient failures are retried until `timeout`. Raises
        `ListingUnsupported` when the server has no such route (404/405: OpenAI's API),
        `RequestRejected` when it refuses the query (e.g. a bad key).
        """
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 (or None for every response)")
        deadline = self._deadline(timeout)
        found: list[Response] = []
        after: str | None = None
        while limit is None or len(found) < limit:
            params: dict[str, Any] = {
                "order": "desc",
                "limit": LIST_PAGE_MAX if limit is None else min(LIST_PAGE_MAX, limit - len(found)),
            }
            if status is not None:
                params["status"] = status
            if model is not None:
                params["model"] = model
            if after is not None:
                params["after"] = after
            try:
                page: Any = self._call("list", self._list_call(params, deadline), deadline=deadline)
            except openai.APIStatusError as err:
                if err.status_code in (404, 405):
                    raise ListingUnsupported(self.base_url, err.status_code) from err
                raise RequestRejected(describe_error(err), status_code=err.status_code, response_id=None) from err
            data = page.get("data") if isinstance(page, Mapping) else None
            if not isinstance(data, list):
                raise RequestRejected(
                    f"GET {self.base_url}/responses did not answer with a list", status_code=None, response_id=None
                )
            items = [r for r in (_listed_response(item) for item in data) if r is not None]
            found.extend(items)
            if not page.get("has_more") or not items:
                break
            last_id = page.get("last_id")
            after = last_id if isinstance(last_id, str) and last_id else items[-1].id
        return found if limit is None else found[:limit]

    def _list_call(self, params: dict[str, Any], deadline: float | None) -> Callable[[], object]:
        def call() -> object:
            return self.openai.get(
                "/responses",
                cast_to=object,
                options={"params": params, "timeout": self._remaining(deadline, self.request_timeout)},
            )

        return call

    # ----------------------------------------------------------------- one-shot calls

    def get(self, response_id: str, *, timeout: float | None = None) -> Response:
        """Retrieve `response_id` once (transient failures retried until `timeout`)."""
        return self._one_shot("retrieve", response_id, lambda: self.openai.responses.retrieve(response_id), timeout)

    def cancel(self, response_id: str, *, timeout: float | None = None) -> Response:
        """Cancel `response_id` (idempotent on the server); return the Response."""
        return self._one_shot("cancel", response_id, lambda: self.openai.responses.cancel(response_id), timeout)

    def _one_shot(
        self, operation: str, response_id: str, call: Callable[[], Response], timeout: float | None
    ) -> Response:
        self.response_id = response_id
        try:
            response = self._call(operation, call, deadline=self._deadline(timeout))
        except openai.NotFoundError as err:
            raise self._not_found(response_id, err) from err
        except openai.APIStatusError as err:
            raise RequestRejected(describe_error(err), status_code=err.status_code, response_id=response_id) from err
        self._set_status(response.status)
        return response
