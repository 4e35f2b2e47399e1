"""Run the app under uvicorn, with bgmode's own shutdown sequence.

On SIGTERM/SIGINT uvicorn stops accepting connections and waits for open ones; live SSE
streams would keep it waiting forever, so the first signal also tells bgmode to end its
streams (clients resume with `starting_after` against the next server) and to stop
claiming work. The worker then gets its grace period in the lifespan shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bgmode import logs
from bgmode.app import Server, create_app
from bgmode.config import Settings
from bgmode.errors import InvalidRequest
from bgmode.routing import Router


def _json_400(self: H11Protocol, msg: str) -> None:
    """uvicorn's answer to malformed HTTP, as OpenAI's error envelope instead of plain text."""
    body = InvalidRequest(f"Invalid HTTP request: {msg}", code="invalid_http_request").to_json()
    head = [b"HTTP/1.1 400 Bad Request\r\n"]
    for name, value in self.server_state.default_headers:
        head.append(name + b": " + value + b"\r\n")
    head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    self.transport.write(b"".join(head) + body)
    self.transport.close()


class _H11(H11Protocol):
    send_400_response = _json_400


class _OneSend:
    """The transport as one response sees it: its header block is held back until its first
    body bytes, so a whole JSON answer leaves in one `send()` instead of two (uvicorn writes
    the header block at `http.response.start`, uvloop writes at once). A header block with no
    body written in the same turn of the event loop (an SSE stream's first event comes later,
    a HEAD answer has none) is sent at the end of that turn."""

    __slots__ = ("_transport", "_held", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data = self._held + data
            self._held = None
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):  # a header block
            self._held = data
            self._loop.call_soon(self._release)
            return
        self._transport.write(data)

    def _release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _http_protocol() -> type[asyncio.Protocol]:
    if importlib.util.find_spec("httptools") is None:
        return _H11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _HttpTools(HttpToolsProtocol):
        send_400_response = _json_400

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None and cycle.transport is self.transport:  # not an upgrade
                cycle.transport = _OneSend(self.transport, self.loop)  # type: ignore[assignment]

    return _HttpTools


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, server: Server) -> None:
        super().__init__(config)
        self.bgmode = server

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.bgmode.begin_shutdown()
        super().handle_exit(sig, frame)


def run(settings: Settings, router: Router, log_level: str = "info") -> None:
    app = create_app(settings, router)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        # bgmode logs each request itself (`bgmode.access`, structured); uvicorn's own lines
        # go to the root logger's handler (`logs.configure`), in the same format
        access_log=False,
        log_config=None,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=_http_protocol(),
        timeout_graceful_shutdown=int(settings.grace_seconds) + 15,
        lifespan="on",
        # bgmode uses no client address; parsing X-Forwarded-* costs every request
        proxy_headers=False,
    )
    # The heap is mostly long-lived (modules, the app); each request allocates short-lived
    # dicts. Freezing what exists and collecting the young generation less often took the
    # collector from about a tenth of the event loop's time on the create path to little.
    gc.freeze()
    gc.set_threshold(20_000, 50, 1000)
    try:
        _Uvicorn(config, app.state.server).run()
    finally:
        logs.flush()
