"""A small, real fake upstream for the tests: an HTTP/1.1 server on 127.0.0.1 that speaks
Chat Completions SSE (`POST /v1/chat/completions`) and Responses SSE (`POST /v1/responses`),
lists `GET /v1/models`, and injects faults on demand.

It is written on plain asyncio streams, not on an ASGI framework, so that the tests control
the socket itself: a "break" closes it in the middle of a chunked body, a "stall" stops
writing and waits until the client hangs up, and that disconnect is recorded so a test can
wait for it. It runs its own event loop in a thread, so a test's loop and bgmode's server
(in the same process or another one) reach it over real TCP.

Faults are chosen per model name with a `Plan`:

    with FakeUpstream() as fake:
        fake.plan("flaky", fail_first=[429, 429], retry_after="0")
        fake.plan("cut", break_after=3)
        ... fake.base_url ...  # "http://127.0.0.1:PORT/v1"

Every request is recorded (`fake.requests`: path, lower-cased headers, JSON body).
Run `python tests/fake_upstream.py [PORT]` for a standalone server with the default plan.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from itertools import zip_longest
from typing import Any

from bgmode.backends.base import Backend, BackendError, BackendEvent, ModelRequest, TextDelta

#: the usage the fake reports, so tests can check the mapping field by field
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "reasoning_tokens": 3, "cached_tokens": 2}


@dataclass
class Plan:
    """How the fake answers the requests for one model name."""

    #: text chunks, one delta each
    text: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    #: reasoning chunks, streamed before the text
    reasoning: list[str] = field(default_factory=list)
    #: chat: the delta field for reasoning ("reasoning_content" or "reasoning");
    #: responses: "text" (reasoning_text events) or "summary" (reasoning_summary_text events)
    reasoning_field: str = "reasoning_content"
    #: statuses for the first N requests (counted per model), then a normal answer
    fail_first: list[int] = field(default_factory=list)
    #: always answer with this status (e.g. 400)
    status: int | None = None
    #: the `Retry-After` header sent with the error statuses above
    retry_after: str | None = None
    error_message: str = "the fake upstream says no"
    #: add the Authorization header the fake received to its error messages (key-leak tests)
    echo_auth: bool = False
    #: close the connection mid-body after this many deltas (reasoning + text)
    break_after: int | None = None
    #: after this many deltas send nothing more, and wait for the client to hang up
    stall_after: int | None = None
    #: "stop", "length" or "content_filter" (responses: "length" ends `incomplete`)
    finish_reason: str = "stop"
    #: report usage (chat: only when the request asks with stream_options.include_usage)
    usage: bool = True
    #: chat: end with `data: [DONE]`
    done: bool = True
    #: after the deltas, fail in-stream instead of finishing: chat "error" (an error chunk);
    #: responses "failed" (response.failed) or "error" (a nested error event)
    fail_event: str | None = None
    #: answer 200 with this JSON instead of a stream (a server that ignores `stream: true`)
    json_body: Any = None
    #: seconds to wait before each delta (a model's pace; used by bench/relay.py)
    delta_delay: float = 0.0
    #: tool calls to make (instead of text) when the request's last message is not a tool
    #: result: [{"name": ..., "arguments": [piece, ...], "id": optional (None: none sent),
    #: "no_deltas": responses only, arguments only in output_item.done}]; after tool results
    #: the fake answers with text quoting them ("a tool said sunny.")
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    #: chat: send the pieces of the calls interleaved by index (round robin: the first chunk
    #: of every call, then the second of every call, ...)
    interleave: bool = False
    #: chat: a raw `tool_calls` entry to send (malformed on purpose), after the text
    bad_tool_call: Any = None
    #: chat: raw `delta` objects, one chunk each, sent after the tool calls (each a delta)
    chat_deltas: list[dict[str, Any]] = field(default_factory=list)
    #: responses: raw events (sequence numbers added) sent right after `response.in_progress`
    events: list[dict[str, Any]] = field(default_factory=list)
    #: refusal chunks (chat `delta.refusal`; responses `response.refusal.delta`), after the text
    refusal: list[str] = field(default_factory=list)
    #: responses: a web_search_call item (with its own events) before the text
    hosted: bool = False
    #: responses: an annotation added to the text
    annotation: dict[str, Any] | None = None
    #: responses: the reasoning item's encrypted_content
    encrypted: str | None = None
    #: request parameters this upstream refuses with a 400, as gateways do for some models
    reject_params: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeUpstream:
    """The fake server (see the module docstring). Use as a context manager."""

    def __init__(self) -> None:
        self.default = Plan()
        self.plans: dict[str, Plan] = {}
        self.requests: list[Recorded] = []
        #: set when a client hangs up while the fake is streaming to it
        self.disconnected = threading.Event()
        self.disconnects = 0
        #: requests being answered right now
        self.active = 0
        #: the most requests ever answered at once
        self.max_active = 0
        self.port = 0
        self._attempts: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def plan(self, model: str | None = None, **changes: Any) -> Plan:
        """Set the plan for `model` (None: the default for every other model)."""
        plan = replace(Plan(), **changes)
        if model is None:
            self.default = plan
        else:
            self.plans[model] = plan
        return plan

    def bodies(self, path: str = "") -> list[Any]:
        return [r.body for r in self.requests if r.path.endswith(path)]

    async def wait_disconnect(self, timeout: float = 30.0) -> bool:
        """Wait (without blocking the caller's loop) until a client has hung up mid-stream."""
        return await asyncio.to_thread(self.disconnected.wait, timeout)

    def start(self, port: int = 0) -> FakeUpstream:
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(port),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- server ----------------------------------------------------------------------------

    async def _serve(self, port: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # a deep accept queue: hundreds of streams connect at once in bench/relay.py
        server = await asyncio.start_server(self._handle, "127.0.0.1", port, backlog=2048)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            for w in list(self._writers):
                w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            method, path, headers, body = await _read_request(reader)
            self.requests.append(Recorded(method, path, headers, body))
            await self._route(method, path, headers, body, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            self._hung_up()
        finally:
            self.active -= 1
            self._writers.discard(writer)
            writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if method == "GET" and path == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.plans]
            return await _send_json(writer, 200, {"object": "list", "data": data})
        if method == "POST" and path == "/v1/responses/input_tokens":  # the fake counts words
            words = len(json.dumps(body.get("input") if isinstance(body, dict) else "").split())
            return await _send_json(writer, 200, {"object": "response.input_tokens", "input_tokens": 1000 + words})
        if method != "POST" or path not in ("/v1/chat/completions", "/v1/responses"):
            return await _send_json(writer, 404, _error("no such route", "not_found"))
        model = str(body.get("model")) if isinstance(body, dict) else ""
        plan = self.plans.get(model, self.default)
        self._attempts[model] += 1
        attempt = self._attempts[model]
        refused = [p for p in plan.reject_params if isinstance(body, dict) and p in body]
        if refused:  # LiteLLM's wording
            message = f"litellm.UnsupportedParamsError: {model} does not support parameters: {refused}"
            return await _send_json(writer, 400, _error(message, "invalid_request_error"))
        status = plan.fail_first[attempt - 1] if attempt <= len(plan.fail_first) else plan.status
        if status is not None:
            message = plan.error_message
            if plan.echo_auth:
                message += f" (you sent {headers.get('authorization')})"
            extra = {"Retry-After": plan.retry_after} if plan.retry_after is not None else {}
            return await _send_json(writer, status, _error(message, "invalid_request_error"), extra)
        if plan.json_body is not None:
            return await _send_json(writer, 200, plan.json_body)
        stream = _Stream(writer, reader, plan, self)
        await stream.start()
        if path == "/v1/chat/completions":
            await stream.chat(model, body)
        else:
            await stream.responses(model, body)

    def _hung_up(self) -> None:
        self.disconnects += 1
        self.disconnected.set()


class _Hold(Exception):
    """The plan's break or stall point was reached."""


class _Stream:
    """One SSE answer: chunked transfer encoding, with the plan's break and stall points."""

    def __init__(
        self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader, plan: Plan, fake: FakeUpstream
    ) -> None:
        self.writer, self.reader, self.plan, self.fake = writer, reader, plan, fake
        self.deltas = 0
        self.seq = 0

    async def start(self) -> None:
        self.writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        )
        await self._chunk(b": keep-alive\n\n")

    async def _chunk(self, data: bytes) -> None:
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await self.writer.drain()

    async def _data(self, obj: Any, event: str | None = None) -> None:
        head = f"event: {event}\n".encode() if event else b""
        await self._chunk(head + b"data: " + json.dumps(obj).encode() + b"\n\n")

    async def _event(self, obj: dict[str, Any]) -> None:
        obj["sequence_number"] = self.seq
        self.seq += 1
        await self._data(obj, obj["type"])

    async def _before_delta(self) -> None:
        """Apply the break / stall points, counted in deltas already sent."""
        if self.plan.break_after is not None and self.deltas >= self.plan.break_after:
            # Close without the terminating chunk: the client sees an incomplete body.
            self.writer.close()
            raise _Hold
        if self.plan.stall_after is not None and self.deltas >= self.plan.stall_after:
            while await self.reader.read(1024):
                pass  # the client never sends more; EOF means it hung up
            self.fake._hung_up()
            raise _Hold
        if self.plan.delta_delay:
            await asyncio.sleep(self.plan.delta_delay)
        self.deltas += 1

    async def _end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    # -- Chat Completions ------------------------------------------------------------------

    async def chat(self, model: str, body: dict[str, Any]) -> None:
        try:
            await self._chat(model, body)
        except _Hold:
            pass

    async def _chat(self, model: str, body: dict[str, Any]) -> None:
        plan = self.plan

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        await self._data(chunk({"role": "assistant", "content": ""}))
        for piece in plan.reasoning:
            await self._before_delta()
            await self._data(chunk({plan.reasoning_field: piece}))
        calls, texts = _agent_turn(plan, body.get("messages") or [], "tool")
        for piece in texts:
            await self._before_delta()
            await self._data(chunk({"content": piece}))
        for piece in plan.refusal:
            await self._before_delta()
            await self._data(chunk({"refusal": piece}))
        by_call: list[list[dict[str, Any]]] = []
        for i, call in enumerate(calls):
            first: dict[str, Any] = {"index": i, "type": "function"}
            if call.get("id", "") is not None:
                first["id"] = call.get("id") or f"call_fake_{i}"
            mine = [{**first, "function": {"name": call["name"], "arguments": ""}}]
            mine.extend({"index": i, "function": {"arguments": p}} for p in call.get("arguments") or ())
            by_call.append(mine)
        if plan.interleave:
            deltas = [d for group in zip_longest(*by_call) for d in group if d is not None]
        else:
            deltas = [d for mine in by_call for d in mine]
        for d in deltas:
            await self._before_delta()
            await self._data(chunk({"tool_calls": [d]}))
        for raw in plan.chat_deltas:
            await self._before_delta()
            await self._data(chunk(raw))
        if plan.bad_tool_call is not None:
            await self._data(chunk({"tool_calls": [plan.bad_tool_call]}))
        if plan.fail_event:
            await self._data({"error": {"message": plan.error_message, "type": "server_error", "code": 500}})
            return await self._end()
        await self._data(chunk({}, "tool_calls" if calls and plan.finish_reason == "stop" else plan.finish_reason))
        if plan.usage and (body.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": USAGE["prompt_tokens"],
                "completion_tokens": USAGE["completion_tokens"],
                "total_tokens": USAGE["prompt_tokens"] + USAGE["completion_tokens"],
                "completion_tokens_details": {"reasoning_tokens": USAGE["reasoning_tokens"]},
                "prompt_tokens_details": {"cached_tokens": USAGE["cached_tokens"]},
            }
            await self._data({**chunk({}), "choices": [], "usage": usage})
        if plan.done:
            await self._chunk(b"data: [DONE]\n\n")
        await self._end()

    # -- Responses -------------------------------------------------------------------------

    async def responses(self, model: str, body: dict[str, Any]) -> None:
        try:
            await self._responses(model, body)
        except _Hold:
            pass

    async def _responses(self, model: str, body: dict[str, Any]) -> None:
        plan = self.plan
        resp: dict[str, Any] = {
            "id": "resp_fake",
            "object": "response",
            "created_at": 0,
            "status": "in_progress",
            "model": model,
            "output": [],
            "usage": None,
        }
        await self._event({"type": "response.created", "response": dict(resp)})
        await self._event({"type": "response.in_progress", "response": dict(resp)})
        for raw in plan.events:
            await self._event(dict(raw))
        index = 0
        if plan.reasoning:
            rs = {"id": "rs_1", "type": "reasoning", "summary": [], "status": "in_progress"}
            await self._event({"type": "response.output_item.added", "output_index": 0, "item": rs})
            for piece in plan.reasoning:
                await self._before_delta()
                if plan.reasoning_field == "summary":
                    where = {"summary_index": 0}
                    kind = "response.reasoning_summary_text.delta"
                else:
                    where = {"content_index": 0}
                    kind = "response.reasoning_text.delta"
                await self._event({"type": kind, "item_id": "rs_1", "output_index": 0, **where, "delta": piece})
            done_rs = {**rs, "status": "completed", "encrypted_content": plan.encrypted}
            await self._event({"type": "response.output_item.done", "output_index": 0, "item": done_rs})
            index = 1
        if plan.hosted:
            ws = {"id": "ws_1", "type": "web_search_call", "status": "in_progress"}
            await self._event({"type": "response.output_item.added", "output_index": index, "item": ws})
            for step in ("in_progress", "searching", "completed"):
                await self._event(
                    {"type": f"response.web_search_call.{step}", "output_index": index, "item_id": "ws_1"}
                )
            done_ws = {**ws, "status": "completed", "action": {"type": "search", "query": "q"}}
            await self._event({"type": "response.output_item.done", "output_index": index, "item": done_ws})
            index += 1
        calls, texts = _agent_turn(plan, body.get("input") or [], "function_call_output")
        if texts or plan.refusal:
            msg = {"id": "msg_1", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
            await self._event({"type": "response.output_item.added", "output_index": index, "item": msg})
            for piece in texts:
                await self._before_delta()
                await self._event(
                    {
                        "type": "response.output_text.delta",
                        "item_id": "msg_1",
                        "output_index": index,
                        "content_index": 0,
                        "delta": piece,
                        "logprobs": [],
                    }
                )
            if plan.annotation is not None:
                await self._event(
                    {
                        "type": "response.output_text.annotation.added",
                        "item_id": "msg_1",
                        "output_index": index,
                        "content_index": 0,
                        "annotation_index": 0,
                        "annotation": plan.annotation,
                    }
                )
            for piece in plan.refusal:
                await self._before_delta()
                await self._event(
                    {
                        "type": "response.refusal.delta",
                        "item_id": "msg_1",
                        "output_index": index,
                        "content_index": 1,
                        "delta": piece,
                    }
                )
            await self._event(
                {"type": "response.output_item.done", "output_index": index, "item": {**msg, "status": "completed"}}
            )
            index += 1
        for i, call in enumerate(calls):
            pieces = list(call.get("arguments") or [])
            fc = {
                "id": f"fc_{i}",
                "type": "function_call",
                "status": "in_progress",
                "arguments": "",
                "call_id": call.get("id", f"call_fake_{i}"),
                "name": call["name"],
            }
            if fc["call_id"] is None:
                del fc["call_id"]
            await self._event({"type": "response.output_item.added", "output_index": index, "item": fc})
            for piece in pieces if not call.get("no_deltas") else ():
                await self._before_delta()
                await self._event(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": fc["id"],
                        "output_index": index,
                        "delta": piece,
                    }
                )
            done_fc = {**fc, "status": "completed", "arguments": "".join(pieces)}
            await self._event({"type": "response.output_item.done", "output_index": index, "item": done_fc})
            index += 1
        usage = {
            "input_tokens": USAGE["prompt_tokens"],
            "input_tokens_details": {"cached_tokens": USAGE["cached_tokens"]},
            "output_tokens": USAGE["completion_tokens"],
            "output_tokens_details": {"reasoning_tokens": USAGE["reasoning_tokens"]},
            "total_tokens": USAGE["prompt_tokens"] + USAGE["completion_tokens"],
        }
        if plan.fail_event == "failed":
            failed = {**resp, "status": "failed", "error": {"code": "server_error", "message": plan.error_message}}
            await self._event({"type": "response.failed", "response": failed})
        elif plan.fail_event == "error":
            error = {
                "type": "server_error",
                "code": "rate_limit_exceeded",
                "message": plan.error_message,
                "param": None,
            }
            await self._event({"type": "error", "error": error})
        elif plan.finish_reason == "stop":
            done = {**resp, "status": "completed", "usage": usage if plan.usage else None}
            await self._event({"type": "response.completed", "response": done})
        else:
            reason = "max_output_tokens" if plan.finish_reason == "length" else plan.finish_reason
            done = {
                **resp,
                "status": "incomplete",
                "incomplete_details": {"reason": reason},
                "usage": usage if plan.usage else None,
            }
            await self._event({"type": "response.incomplete", "response": done})
        await self._end()


def _agent_turn(plan: Plan, history: list[Any], result_type: str) -> tuple[list[dict[str, Any]], list[str]]:
    """What a tool-using model does next: the plan's tool calls, or (after tool results, which
    are chat `role: tool` messages or `function_call_output` items) text quoting them."""
    if not plan.tool_calls:
        return [], list(plan.text)
    last = history[-1] if history else {}
    is_result = isinstance(last, dict) and (last.get("role") == "tool" or last.get("type") == result_type)
    if not is_result:
        return plan.tool_calls, []
    results = []
    for item in history:
        if isinstance(item, dict) and (item.get("role") == "tool" or item.get("type") == result_type):
            content = item.get("content", item.get("output"))
            results.append(f"a tool said {content}.")
    return [], [" ".join(results)]


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], Any]:
    request_line = (await reader.readline()).decode("latin-1")
    if not request_line:
        raise asyncio.IncompleteReadError(b"", None)
    method, target, _ = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers.get("content-length") or 0)
    raw = await reader.readexactly(size) if size else b""
    return method, target.split("?", 1)[0], headers, json.loads(raw) if raw else None


async def _send_json(writer: asyncio.StreamWriter, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
    payload = json.dumps(obj).encode()
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
    for name, value in (extra or {}).items():
        head += f"{name}: {value}\r\n"
    writer.write(head.encode() + b"connection: close\r\n\r\n" + payload)
    await writer.drain()


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# -- helpers for the backend tests --------------------------------------------------------


async def collect(backend: Backend, request: ModelRequest) -> tuple[list[BackendEvent], BackendError | None]:
    """Everything `backend` yields for `request`, and the error it ended with (if any)."""
    events: list[BackendEvent] = []
    try:
        async for ev in backend.stream(request):
            events.append(ev)
    except BackendError as exc:
        return events, exc
    return events, None


def text(events: list[BackendEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def closed_port() -> int:
    """A loopback port nothing listens on (an unreachable upstream)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    # python tests/fake_upstream.py [PORT [TOKENS [DELAY_MS]]]: every model streams TOKENS deltas
    fake = FakeUpstream()
    if len(sys.argv) > 2:
        fake.plan(
            text=[f" tok{i}" for i in range(int(sys.argv[2]))],
            delta_delay=float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0,
        )
    fake.start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"fake upstream on {fake.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()
