"""Structured logs: one JSON object per line (or readable text), through the stdlib `logging`.

`configure` installs one handler on the root logger (uvicorn's loggers propagate to it), so
every line a server writes has the same shape. JSON lines carry `ts` (UTC, ISO 8601 with
milliseconds), `level`, `logger`, `msg`, then the record's structured `fields` (passed as
`extra={"fields": {...}}`), and `exc` for a traceback.

Two loggers carry bgmode's structured lines:

- `bgmode.access`: one line per HTTP request (method, route template, status, duration_ms,
  tenant, request_id); `--no-access-log` turns it off;
- `bgmode.response`: one line per response state change (queued at create, in_progress at
  a worker's claim, then its terminal status), with response_id, model, status, attempt and
  worker. Failed and incomplete ones are warnings.

The two structured lines are the hot ones (a create writes an access and a `queued` line),
so they skip `logging`'s record machinery: built straight to bytes and written together
every 50 ms (`_Lines`), about 2.5 µs a line instead of 7-10. A process killed outright can
lose the last 50 ms of those lines; every other record (warnings, errors) is written at once,
and a graceful stop writes everything.

Nothing secret is logged: API keys are turned into tenant names before anything is logged,
no header is logged but `X-Request-Id`, and upstream keys are redacted by the backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import threading
import time
from typing import IO, Any

import orjson

ACCESS = logging.getLogger("bgmode.access")
RESPONSE = logging.getLogger("bgmode.response")

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "fields"}


class _Clock:
    """ISO 8601 UTC timestamps, the seconds part formatted once per second."""

    __slots__ = ("_ms", "_ms_text", "sec", "text")

    def __init__(self) -> None:
        self.sec = -1
        self.text = ""
        self._ms = -1
        self._ms_text = b""

    def iso(self, t: float) -> str:
        sec = int(t)
        if sec != self.sec:
            self.sec = sec
            self.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self.text}.{int((t - sec) * 1000):03d}Z"

    def iso_bytes(self, t: float) -> bytes:
        """`iso(t)` as bytes, made once per millisecond (lines under load share it)."""
        ms = int(t * 1000)
        if ms != self._ms:
            self._ms = ms
            self._ms_text = self.iso(t).encode()
        return self._ms_text


def _fields(record: logging.LogRecord) -> dict[str, Any] | None:
    """The structured fields: `extra={"fields": {...}}`, plus any other `extra=` keys."""
    d = record.__dict__
    fields: dict[str, Any] | None = d.get("fields")
    if len(d) > len(_STANDARD) - 2:  # other extra= keys (rare): include them too
        more = {k: v for k, v in d.items() if k not in _STANDARD}
        if more:
            fields = {**(fields or {}), **more}
    return fields


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, the structured fields, exc."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        return self.encode(record).decode()

    def encode(self, record: logging.LogRecord) -> bytes:
        out: dict[str, Any] = {
            "ts": self._clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = _fields(record)
        if fields:
            for k, v in fields.items():
                if k not in out:
                    out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return orjson.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        head, nl, tail = line.partition("\n")  # a traceback stays below the first line
        return f"{head}  {extra}{nl}{tail}"


class LineHandler(logging.Handler):
    """Writes each formatted record as one line straight to a file descriptor (one `write`,
    no text-layer buffering, so lines from a crashing process are not lost)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None  # e.g. a captured stream in tests: write through it

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fmt = self.formatter
            if isinstance(fmt, JSONFormatter):
                data = fmt.encode(record) + b"\n"
            else:
                data = self.format(record).encode("utf-8", "replace") + b"\n"
            if _lines is not None and _lines.pending:
                _lines.flush()  # the fast lines written before this one come first
            self.write(data)
        except Exception:
            self.handleError(record)

    def write(self, data: bytes) -> None:
        if self.fd is None:
            self.stream.write(data.decode("utf-8", "replace"))
            self.stream.flush()
            return
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]


class _Lines:
    """The structured lines' fast path (`access`, `state_change`): built straight to bytes,
    without a `LogRecord`, and written together at most `FLUSH_SECONDS` after the first of
    them (one `write` for a batch under load). Any other record written meanwhile flushes
    what is pending first, so lines keep their order."""

    def __init__(self, handler: LineHandler | None, json: bool) -> None:
        self.handler = handler
        self.json = json
        self.pending: list[bytes] = []
        self.lock = threading.Lock()
        self._clock = _Clock()

    def line(self, level: str, logger: str, msg: str, fields: dict[str, Any]) -> bytes:
        now = time.time()
        if self.json:
            return orjson.dumps(
                {"ts": self._clock.iso(now), "level": level, "logger": logger, "msg": msg, **fields}, default=str
            )
        ms = int((now - int(now)) * 1000)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        extra = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return f"{stamp},{ms:03d} {level.upper()} {logger}: {msg}  {extra}".encode("utf-8", "replace")

    def add(self, data: bytes) -> None:
        with self.lock:
            self.pending.append(data)
            first = len(self.pending) == 1
        if first:
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no event loop here: write at once
                self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self.pending:
                return
            data = b"\n".join(self.pending) + b"\n"
            self.pending.clear()
        handler = self.handler
        if handler is None:
            return
        handler.write(data)


#: how long the structured lines wait to be written together (one `write` for all of them)
FLUSH_SECONDS = 0.05
#: set by `configure`; None: the structured lines go through `logging` like any record
_lines: _Lines | None = None


def default_format(stream: IO[str] | None = None) -> str:
    """json unless `stream` (stdout) is a terminal."""
    s = stream or sys.stdout
    try:
        return "text" if s.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def configure(fmt: str | None = None, level: str = "info", stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record (bgmode's, uvicorn's, warnings) to `stream` (stdout) in `fmt`."""
    stream = stream or sys.stdout
    handler = LineHandler(stream)
    handler.setFormatter(JSONFormatter() if (fmt or default_format(stream)) == "json" else TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.captureWarnings(True)
    # Per-record work no line of ours shows: the caller's frame and file (`findCaller` walks
    # the stack), thread and process names. About half the cost of an access line.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _lines
    _lines = _Lines(handler, isinstance(handler.formatter, JSONFormatter))
    return handler


def flush() -> None:
    """Write the structured lines still pending (at shutdown)."""
    if _lines is not None:
        _lines.flush()


def access(method: str, route: str, status: int, duration_ms: float, tenant: str | None, request_id: bytes) -> None:
    """One `bgmode.access` line for an answered request (JSON: from a bytes template, the
    hottest line bgmode writes)."""
    lines = _lines
    if lines is not None and lines.json:
        key = (method, route, status)
        head = _access_heads.get(key)
        if head is None:
            head = _access_head(method, route, status)
        ms = b"%.2f" % duration_ms
        lines.add(
            b'{"ts":"%s%s%s%s%s,"tenant":%s,"request_id":"%s"}'
            % (
                lines._clock.iso_bytes(time.time()),
                head[0],
                ms,
                head[1],
                ms,
                _json_text(tenant),
                request_id if _PLAIN_ID(request_id) else orjson.dumps(request_id.decode("ascii"))[1:-1],
            )
        )
        return
    fields = {
        "method": method,
        "route": route,
        "status": status,
        "duration_ms": round(duration_ms, 2),
        "tenant": tenant,
        "request_id": request_id.decode("ascii", "replace"),
    }
    msg = f"{method} {route} {status} {duration_ms:.1f}ms"
    if lines is not None:
        lines.add(lines.line("info", "bgmode.access", msg, fields))
    else:
        ACCESS.info("%s", msg, extra={"fields": fields})


_access_heads: dict[tuple[str, str, int], tuple[bytes, bytes]] = {}


def _access_head(method: str, route: str, status: int) -> tuple[bytes, bytes]:
    """The constant parts of an access line for one method, route and status, made once."""
    m, r = orjson.dumps(method)[1:-1], orjson.dumps(route)[1:-1]
    head = (
        b'","level":"info","logger":"bgmode.access","msg":"%s %s %d ' % (m, r, status),
        b'ms","method":"%s","route":"%s","status":%d,"duration_ms":' % (m, r, status),
    )
    if len(_access_heads) < 1000:
        _access_heads[(method, route, status)] = head
    return head


#: request ids that need no JSON escaping (what bgmode makes, and most clients send)
_PLAIN_ID = re.compile(rb"[A-Za-z0-9_.:/+=-]*").fullmatch
_json_cache: dict[str | None, bytes] = {}


def _json_text(text: str | None) -> bytes:
    """`text` (a tenant name: a few distinct values) as a JSON value."""
    out = _json_cache.get(text)
    if out is None:
        out = orjson.dumps(text)
        if len(_json_cache) < 1000:
            _json_cache[text] = out
    return out


# -- the structured lines ----------------------------------------------------------------------


_STATE_JSON = (
    b'{"ts":"%s","level":"info","logger":"bgmode.response","msg":"response %s %s%s: model=%s",'
    b'"response_id":%s,"model":%s,"status":"%s","attempt":%s,"worker":%s%s}'
)


def state_change(
    response_id: str,
    status: str,
    model: object,
    *,
    tenant: str | None = None,
    attempt: int | None = None,
    worker: str | None = None,
    route: str | None = None,
    error: dict[str, Any] | None = None,
    reason: str | None = None,
    duration_ms: float | None = None,
    foreground: bool = False,
) -> None:
    """One `bgmode.response` line for a response's new status."""
    failed = status in ("failed", "incomplete")
    level = logging.WARNING if failed else logging.INFO
    if not RESPONSE.isEnabledFor(level):
        return
    where = " (foreground)" if foreground else ""
    lines = _lines
    if lines is not None and lines.json and not failed:  # the common line, straight to bytes
        rid = orjson.dumps(response_id)
        mj = orjson.dumps(model if isinstance(model, str) else str(model))
        tail = b""
        if tenant is not None:
            tail += b',"tenant":' + _json_text(tenant)
        if route is not None:
            tail += b',"route":' + _json_text(route)
        if duration_ms is not None:
            tail += b',"duration_ms":' + orjson.dumps(round(duration_ms, 1))
        if reason is not None:
            tail += b',"reason":' + orjson.dumps(reason)
        lines.add(
            _STATE_JSON
            % (
                lines._clock.iso_bytes(time.time()),
                rid[1:-1],
                status.encode(),
                where.encode(),
                mj[1:-1],
                rid,
                mj,
                status.encode(),
                b"null" if attempt is None else b"%d" % attempt,
                _json_text(worker),
                tail,
            )
        )
        return
    fields: dict[str, Any] = {
        "response_id": response_id,
        "model": model,
        "status": status,
        "attempt": attempt,
        "worker": worker,
    }
    if tenant is not None:
        fields["tenant"] = tenant
    if route is not None:
        fields["route"] = route
    if duration_ms is not None:
        fields["duration_ms"] = round(duration_ms, 1)
    if error is not None:
        fields["error_code"] = error.get("code")
        fields["error"] = error.get("message")
    if reason is not None:
        fields["reason"] = reason
    if lines is not None and not failed:
        msg = f"response {response_id} {status}{where}: model={model}"
        lines.add(lines.line("info", "bgmode.response", msg, fields))
        return
    if failed:
        detail = f"error={error.get('code')}: {error.get('message')}" if error else f"reason={reason}"
        RESPONSE.warning(
            "response %s %s%s: model=%s route=%s attempts=%s %s",
            response_id,
            status,
            where,
            model,
            route or "none",
            attempt,
            detail,
            extra={"fields": fields},
        )
    else:
        RESPONSE.info("response %s %s%s: model=%s", response_id, status, where, model, extra={"fields": fields})
