"""Shared plumbing for HTTP upstreams (`chat` and `responses` backends).

`HTTPBackend.stream` owns everything the two kinds have in common:

- one pooled `aiohttp.ClientSession` per backend (its C HTTP parser reads a token-by-token
  stream several times cheaper than a pure-Python client: this is bgmode's hottest loop when
  it relays hundreds of streams), and a semaphore that caps how many responses
  the backend runs at once (taken before connecting, so queued work never opens sockets);
- retries with exponential backoff (honouring `Retry-After`) for an unreachable upstream, a
  429/408/409/5xx status, or a stream that ends before its first output. Once anything has
  been yielded (text, reasoning, a refusal, a tool call, a relayed event) nothing is retried:
  the response must not repeat output, so a break is a failure that keeps the partial output;
- the idle timeout: aiohttp's `sock_read` timeout applies to every socket read, so an upstream
  that stalls mid-stream raises instead of hanging;
- redaction: the API key (and any credentials in the URL) never reaches an error message or a
  log line, even when the upstream echoes it back.

Subclasses say only how to build the upstream request body and how to turn its server-sent
events into deltas (`build_body`, `parse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import urllib.request
from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson

from bgmode import metrics
from bgmode.backends.base import (
    Backend,
    BackendError,
    BackendEvent,
    Finish,
    ModelRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolArguments,
    ToolCall,
    Usage,
    estimate_input_tokens,
)
from bgmode.retry_after import retry_after

log = logging.getLogger("bgmode.upstream")

#: statuses worth another attempt (the same set the official SDKs retry)
RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: statuses that mean the client's request was bad, not the upstream (`invalid_prompt`)
CLIENT_FAULT_STATUSES = frozenset({400, 413, 422})
#: never wait longer than this between attempts, whatever `Retry-After` asks for
MAX_RETRY_WAIT = 60.0
#: how much of an upstream error body is read and quoted
MAX_ERROR_BODY = 64 * 1024
MAX_ERROR_MESSAGE = 500
REDACTED = "[redacted]"


@dataclass(frozen=True)
class UpstreamSettings:
    """Where an HTTP upstream is and how to treat it (one `[[route]]` of the config)."""

    #: e.g. "http://127.0.0.1:11434/v1"; the backend appends "/chat/completions" or "/responses"
    base_url: str
    #: sent as `Authorization: Bearer …`; never shown (repr=False) nor stored
    api_key: str | None = field(default=None, repr=False)
    #: the model name sent upstream; None sends the name the client asked for
    upstream_model: str | None = None
    connect_timeout: float = 10.0
    #: seconds without a byte from the upstream (before the first token, or mid-stream)
    idle_timeout: float = 120.0
    max_retries: int = 3
    #: first backoff in seconds, doubling on each attempt
    retry_backoff: float = 0.5
    max_concurrency: int | None = None


def public_url(url: str) -> str:
    """`url` without user info, query or fragment: safe for errors and logs."""
    try:
        return str(httpx.URL(url).copy_with(username=None, password=None, query=None, fragment=None))
    except httpx.InvalidURL:
        return "<invalid url>"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: its `event:` name (or "message") and its joined `data:` lines."""

    event: str
    data: str


async def iter_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[SSEEvent]:
    """Decode server-sent events from the body's byte chunks (comments, `id:` and `retry:`
    are ignored; an event cut off by the end of the body is dropped, per the SSE spec).

    This is the relay's hottest loop, so it works on whole chunks: split at blank lines,
    then a one-line `data:` event (what every model server sends per token) is taken apart
    with two slices rather than line by line.
    """
    rest = b""
    async for chunk in chunks:
        buf = rest + chunk if rest else chunk
        if b"\r" in buf:
            # CRLF and lone CR end lines too; a CR at the very end may be half of a CRLF
            tail = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if tail:
                buf = buf[:-1] + b"\r"
        if b"\n\n" not in buf:
            rest = buf
            continue
        *blocks, rest = buf.split(b"\n\n")
        for block in blocks:
            if block.startswith(b"data:") and b"\n" not in block:
                value = block[6:] if block[5:6] == b" " else block[5:]
                yield SSEEvent("message", value.decode("utf-8", "replace"))
                continue
            event = _block(block)
            if event is not None:
                yield event


def _block(block: bytes) -> SSEEvent | None:
    """One event's lines (the general case: `event:`, several `data:` lines, comments)."""
    name = ""
    data: list[str] = []
    for raw in block.split(b"\n"):
        line = raw.decode("utf-8", "replace")
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return SSEEvent(name or "message", "\n".join(data)) if data else None


def event_json(event: SSEEvent) -> Any:
    """The event's data parsed as JSON (an `UpstreamFailure` if it is not JSON)."""
    try:
        return orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(f"upstream sent an event that is not JSON: {event.data[:200]!r}") from None


class UpstreamFailure(Exception):
    """Raised by `parse`: the upstream stream went wrong (the base turns it into `BackendError`).

    `retryable` failures are retried while no token has been yielded; `broke` marks the stream
    ending early, which reads "upstream stream broke after N tokens" once output was streamed.
    """

    def __init__(
        self, message: str, code: str = "server_error", *, retryable: bool = False, broke: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.broke = broke
        self.retry_after: float | None = None
        #: what went wrong, for the `bgmode_upstream_errors` metric (set where it is known)
        self.kind = "broken_stream" if broke else "stream_error"


@dataclass
class Progress:
    """What one attempt has streamed so far (to estimate usage and to word failures).

    `deltas` counts every piece of output yielded (text, reasoning, refusals, tool calls and
    their arguments, relayed upstream events): once it is not 0 nothing is retried."""

    deltas: int = 0
    #: characters of output text (message text, refusals, tool names and arguments)
    chars: int = 0
    #: characters of reasoning text
    reasoning_chars: int = 0

    def count(self, event: BackendEvent) -> None:
        """Count one yielded event (the common case, a text delta, first)."""
        if type(event) is TextDelta:
            self.chars += len(event.text)
        elif type(event) is ReasoningDelta:
            self.reasoning_chars += len(event.text)
        elif type(event) is ToolArguments:
            self.chars += len(event.delta)
        elif type(event) is RefusalDelta:
            self.chars += len(event.text)
        elif type(event) is ToolCall:
            self.chars += len(event.name)
        elif type(event) is Usage or type(event) is Finish:
            return
        self.deltas += 1

    def estimated_usage(self, request: ModelRequest) -> Usage:
        """A usage estimate, for upstreams that report none."""
        prompt = estimate_input_tokens(request)
        reasoning = _tokens(self.reasoning_chars)
        return Usage(input_tokens=prompt, output_tokens=_tokens(self.chars) + reasoning, reasoning_tokens=reasoning)


def _tokens(chars: int) -> int:
    """`estimate_tokens` for a text of `chars` characters."""
    return max(1, (chars + 3) // 4) if chars else 0


class HTTPBackend(Backend):
    """An upstream model server spoken to over HTTP with server-sent events."""

    #: the API kind named in the config ("chat", "responses")
    kind: ClassVar[str]
    #: appended to `base_url`
    path: ClassVar[str]

    def __init__(self, settings: UpstreamSettings) -> None:
        self.settings = settings
        self.max_concurrency = settings.max_concurrency
        self._slots = asyncio.Semaphore(settings.max_concurrency) if settings.max_concurrency else None
        self._client: aiohttp.ClientSession | None = None
        #: responses queued for a concurrency slot / talking to the upstream now
        self.waiting = 0
        self.running = 0
        self.url = settings.base_url.rstrip("/") + self.path
        #: the endpoint as errors and logs may show it
        self.where = public_url(self.url)
        #: from HTTP(S)_PROXY / NO_PROXY, read once: aiohttp's `trust_env` reads the
        #: environment (and ~/.netrc) again for every request, ~0.5 ms each
        self._proxy = _proxy_for(self.url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    @abstractmethod
    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The upstream request body for `request` (streaming)."""

    @abstractmethod
    def parse(
        self, events: AsyncIterator[SSEEvent], request: ModelRequest, progress: Progress
    ) -> AsyncIterator[BackendEvent]:
        """Turn the upstream's events into deltas, ending with `Usage` then `Finish`.

        Raises `UpstreamFailure` when the upstream reports an error or the stream ends early.
        """

    def model_for(self, request: ModelRequest) -> str:
        """The model name to send upstream."""
        return self.settings.upstream_model or request.model

    async def stream(self, request: ModelRequest) -> AsyncIterator[BackendEvent]:
        body = orjson.dumps(self.build_body(request))
        async with self.slot():
            attempt = 0
            while True:
                progress = Progress()
                try:
                    async with self._http().post(
                        self.url, data=body, headers=self._headers(), proxy=self._proxy
                    ) as response:
                        if not 200 <= response.status < 300:
                            raise await self._status_failure(response)
                        if response.headers.get("content-type", "").startswith("application/json"):
                            # A server that ignores `stream: true` (or reports an error with a 200).
                            detail = error_message(await _read_capped(response))
                            raise UpstreamFailure(
                                f"upstream {self.where} answered with JSON, not an event stream: {detail}"
                            )
                        count = progress.count
                        async for event in self.parse(iter_sse(response.content.iter_any()), request, progress):
                            count(event)
                            yield event
                    return
                except UpstreamFailure as exc:
                    failure = exc
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failure = self._transport_failure(exc, progress)
                metrics.upstream_error(self.where, failure.kind)
                message = failure.message
                if failure.broke:
                    message = f"upstream stream broke after {progress.deltas} tokens: {message}"
                if progress.deltas:
                    # Never retry after output was streamed: the text would be repeated.
                    raise BackendError(self._redact(message), failure.code)
                attempt = await self._wait_to_retry(failure, message, attempt, "retry")

    async def _wait_to_retry(self, failure: UpstreamFailure, message: str, attempt: int, what: str) -> int:
        """Raise the failure as a `BackendError` if it is not worth another attempt (or the
        attempts are used up); else log it, wait the backoff, and return the next attempt's number."""
        if not failure.retryable or attempt >= self.settings.max_retries:
            if attempt:
                message += f" (gave up after {attempt + 1} attempts)"
            raise BackendError(self._redact(message), failure.code)
        delay = self._backoff(attempt, failure.retry_after)
        attempt += 1
        log.warning(
            "%s: %s; %s %d/%d in %.2fs",
            self.where,
            self._redact(message),
            what,
            attempt,
            self.settings.max_retries,
            delay,
        )
        await asyncio.sleep(delay)
        return attempt

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the backend's concurrency slots (taken before connecting), counted in
        `waiting` while it is awaited and in `running` while it is held."""
        slots = self._slots
        if slots is not None:
            self.waiting += 1
            try:
                await slots.acquire()
            finally:
                self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if slots is not None:
                slots.release()

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _http(self) -> aiohttp.ClientSession:
        # Created on first use so the pool belongs to the server's event loop.
        if self._client is None or self._client.closed:
            s = self.settings
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout, sock_read=s.idle_timeout),
                connector=aiohttp.TCPConnector(limit=s.max_concurrency or 0, keepalive_timeout=30),
            )
        return self._client

    def _headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream",
            "user-agent": "bgmode",
        }
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def _redact(self, text: str) -> str:
        key = self.settings.api_key
        if key:
            text = text.replace(key, REDACTED)
        return text

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_WAIT)
        # Jitter so that many responses failing together do not retry in lockstep.
        delay = self.settings.retry_backoff * (2.0**attempt) * (0.5 + random.random() / 2)
        return min(delay, MAX_RETRY_WAIT)

    async def _status_failure(self, response: aiohttp.ClientResponse) -> UpstreamFailure:
        status = response.status
        detail = error_message(await _read_capped(response))
        message = f"upstream {self.where} returned HTTP {status} {response.reason or ''}".rstrip()
        if detail:
            message += f": {detail}"
        if status in CLIENT_FAULT_STATUSES:
            message += option_hint(detail)
        failure = UpstreamFailure(
            message,
            "invalid_prompt" if status in CLIENT_FAULT_STATUSES else "server_error",
            retryable=status in RETRYABLE_STATUSES or status >= 500,
        )
        failure.retry_after = retry_after(response.headers)
        failure.kind = f"http_{status}" if status in RETRYABLE_STATUSES or status < 500 else "http_5xx"
        return failure

    def _transport_failure(self, exc: BaseException, progress: Progress) -> UpstreamFailure:
        failure = self._transport_failure_of(exc, progress)
        if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
            failure.kind = "unreachable"
        elif isinstance(exc, TimeoutError):
            failure.kind = "idle_timeout"
        elif not failure.broke:
            failure.kind = "transport"
        return failure

    def _transport_failure_of(self, exc: BaseException, progress: Progress) -> UpstreamFailure:
        s = self.settings
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return UpstreamFailure(
                f"upstream {self.where} unreachable: no connection within {s.connect_timeout:g}s",
                retryable=True,
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamFailure(f"upstream {self.where} unreachable: {_describe(exc)}", retryable=True)
        if isinstance(exc, TimeoutError):  # sock_read: nothing for idle_timeout seconds
            if progress.deltas:
                return UpstreamFailure(
                    f"upstream stream stalled: no data for {s.idle_timeout:g}s "
                    f"after {progress.deltas} tokens (idle timeout)"
                )
            return UpstreamFailure(
                f"upstream {self.where} sent no data for {s.idle_timeout:g}s (idle timeout)", retryable=True
            )
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
            return UpstreamFailure(
                f"upstream {self.where} closed the connection: {_describe(exc)}", retryable=True, broke=True
            )
        return UpstreamFailure(f"upstream {self.where} failed: {_describe(exc)}")


def _proxy_for(url: str) -> str | None:
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _describe(exc: BaseException) -> str:
    # aiohttp messages name the problem (and the host), never the request headers.
    return str(exc) or type(exc).__name__


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        while size < MAX_ERROR_BODY:
            chunk = await response.content.read(MAX_ERROR_BODY - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (aiohttp.ClientError, TimeoutError):
        pass  # the status alone is enough to report
    return b"".join(chunks)


#: parameters bgmode sends that some upstreams refuse, and the route option that stops it
_OPTION_HINTS = (
    ("reasoning_effort", "send_reasoning_effort=false"),
    ("reasoning", "send_reasoning_effort=false"),
    ("verbosity", "send_verbosity=false"),
    ("max_completion_tokens", "max_tokens_param=max_tokens"),
    ("max_tokens", "max_tokens_param=max_completion_tokens"),
    ("stream_options", "stream_usage=false"),
)


def option_hint(detail: str) -> str:
    """For an upstream 400 that names a parameter bgmode sends: which route option turns it off."""
    for param, option in _OPTION_HINTS:
        if param in detail:
            return (
                f" (bgmode sent '{param}': if this upstream does not support it, set `{option}` on its route,"
                f" or --upstream-option {option})"
            )
    return ""


def error_message(body: bytes) -> str:
    """The human message in an upstream error body (OpenAI, Ollama, FastAPI shapes, JSON or a
    server-sent event stream carrying one of those, or text)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
        for line in text.splitlines():  # an error sent as SSE: the first `data:` that is JSON
            if line.startswith("data:"):
                try:
                    data = orjson.loads(line[5:].strip())
                except orjson.JSONDecodeError:
                    continue
                break
    found: Any = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            found = err.get("message")
        elif isinstance(err, str):
            found = err  # Ollama: {"error": "model 'x' not found"}
        if found is None:
            found = data.get("message") or data.get("detail")
    message = found if isinstance(found, str) else text
    message = " ".join(message.split())
    if len(message) > MAX_ERROR_MESSAGE:
        message = message[:MAX_ERROR_MESSAGE] + "…"
    return message
