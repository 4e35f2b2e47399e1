"""The HTTP layer: routes, authentication, body limits, one error handler, the lifespan.

Plain Starlette rather than FastAPI: a create is on the hot path, and FastAPI's per-request
dependency and validation machinery costs more than the whole durable create. The OpenAPI
document is written by hand (`openapi.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import os
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from bgmode import dashboard, logs, metrics, webhooks
from bgmode.config import Settings
from bgmode.conversations import Conversations
from bgmode.errors import APIError, BodyTooLarge, InvalidRequest, ServiceUnavailable, Unauthorized
from bgmode.hub import Hub
from bgmode.logs import ACCESS
from bgmode.models import ModelList
from bgmode.openapi import MAX_SEQUENCE, OPENAPI
from bgmode.routing import Router
from bgmode.sealing import Sealer
from bgmode.service import Limits, Service
from bgmode.sse import EventStream
from bgmode.store import Store, open_store
from bgmode.worker import Worker, WorkerConfig

log = logging.getLogger("bgmode")

#: how deeply a request body may nest: what is accepted can always be stored and sent back
#: (orjson encodes up to 254 levels; events wrap a body in a few more)
MAX_JSON_DEPTH = 64


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class Server:
    """Everything one `bgmode serve` process holds: store, hub, worker, service."""

    def __init__(self, settings: Settings, router: Router | None = None, store: Store | None = None) -> None:
        self.settings = settings
        self.router = router or Router.simulated()
        self.store = store or open_store(settings.store_url)
        self.hub = Hub()
        self.worker = Worker(
            self.store,
            self.router,
            self.hub,
            WorkerConfig(
                concurrency=settings.workers,
                lease_seconds=settings.lease_seconds,
                heartbeat_seconds=settings.heartbeat_seconds,
                grace_seconds=settings.grace_seconds,
            ),
        )
        self.service = Service(
            self.store,
            self.hub,
            self.router,
            Limits(
                max_queued=settings.max_queued,
                max_queued_per_tenant=settings.max_queued_per_key,
                keepalive_seconds=settings.keepalive_seconds,
                lease_seconds=settings.lease_seconds,
            ),
            self.worker if settings.workers > 0 else None,
        )
        self.conversations = Conversations(self.store)
        self.model_list = ModelList(self.router)
        self._keys = [(k.encode(), t) for k, t in settings.api_keys.items()]
        self._sweeper: asyncio.Task[None] | None = None
        self.webhooks = webhooks.Dispatcher(self.store, settings.webhooks)
        self.scraper = metrics.Scraper(self.store)
        metrics.WORKER_SLOTS.set(settings.workers)

    def begin_shutdown(self) -> None:
        """The first signal: stop claiming work and end live streams (their clients resume later)."""
        self.service.shutting_down.set()
        self.worker.stop_claiming()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.store.open()
        key = self.settings.reasoning_key
        sealer = Sealer(key.encode() if key else await self.store.secret("reasoning", Sealer.generate_key()))
        self.service.sealer = self.worker.sealer = sealer
        await self.worker.start()
        await self.webhooks.start()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        try:
            yield
        finally:
            self.begin_shutdown()
            await self.webhooks.stop()
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            await self.worker.stop()
            await self.router.aclose()
            await self.store.close()
            logs.flush()

    async def _sweep_loop(self) -> None:
        s = self.settings
        while True:
            try:
                now = time.time()
                while True:
                    n_resp, n_logs = await self.store.sweep(now - s.response_ttl, now - s.events_ttl, 500)
                    if n_resp < 500 and n_logs < 500:
                        break
                while await self.store.conversation_sweep(now - s.conversation_ttl, 500) >= 500:
                    pass
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(s.sweep_seconds)

    # -- request helpers --------------------------------------------------------------------

    def tenant(self, request: Request) -> str:
        tenant = self.tenant_of(request.headers.get("authorization", ""))
        request.scope["bgmode.tenant"] = tenant
        return tenant

    def tenant_of(self, auth: str) -> str:
        """The tenant an `Authorization` header value belongs to (401 without a valid key)."""
        if not self._keys:
            return "default"
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized(
                "You didn't provide an API key. Send it in the Authorization header as 'Bearer KEY'.",
                code="missing_api_key",
            )
        g = given.strip().encode()
        found: str | None = None
        for key, tenant in self._keys:  # compare with every key, in constant time each
            if hmac.compare_digest(g, key):
                found = tenant
        if found is None:
            raise Unauthorized("Incorrect API key provided.", code="invalid_api_key")
        return found

    async def json_body(self, chunks_in: AsyncIterator[bytes], declared: str | None) -> Any:
        """The request body parsed as JSON (None if empty); 413 past --max-body-bytes."""
        limit = self.settings.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in chunks_in:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"The request body is larger than {limit} bytes.", code="request_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return None
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "We could not parse the JSON body of your request. The body must be valid JSON.",
                code="invalid_json",
            ) from None
        # only a body with many brackets can be deep: counting them is a C loop
        if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _too_deep(value, MAX_JSON_DEPTH):
            raise InvalidRequest(
                f"The request body nests JSON objects and arrays more than {MAX_JSON_DEPTH} levels deep.",
                code="invalid_json",
            )
        return value

    # -- endpoints ---------------------------------------------------------------------------

    async def create(self, scope: Scope, receive: Receive, send: Send, request_id: bytes) -> int:
        """`POST /v1/responses`, as a bare ASGI handler (see `App`); returns the status sent."""
        headers = dict(scope["headers"])
        try:
            tenant = scope["bgmode.tenant"] = self.tenant_of(headers.get(b"authorization", b"").decode("latin-1"))
            if self.service.shutting_down.is_set():
                raise ServiceUnavailable("The server is shutting down; retry.", headers={"Retry-After": "1"})
            declared = headers.get(b"content-length")
            body = await self.json_body(_body_chunks(receive), declared.decode("latin-1") if declared else None)
            if body is None:
                raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
            idem = headers.get(b"idempotency-key")
            created = await self.service.create(body, tenant, idem.decode("latin-1") if idem else None)
        except APIError as exc:
            await _send_json(send, exc.status_code, exc.to_json(), exc.headers, request_id)
            return exc.status_code
        if created.stream is not None:
            scope["bgmode.headers_at"] = time.perf_counter()
            await EventStream(created.stream, request_id)(scope, receive, send)
            return 200
        rec = created.record
        await _send_json(send, 200, created.reply_json or rec.body_json or orjson.dumps(rec.body), None, request_id)
        return 200

    async def poll(self, response_id: str, scope: Scope, send: Send, auth: bytes, request_id: bytes) -> int:
        """`GET /v1/responses/{id}` without a query, as a bare ASGI handler (see `App`); returns
        the status sent."""
        try:
            tenant = scope["bgmode.tenant"] = self.tenant_of(auth.decode("latin-1"))
            body = await self.service.get_json(response_id, tenant)
        except APIError as exc:
            await _send_json(send, exc.status_code, exc.to_json(), exc.headers, request_id)
            return exc.status_code
        except Exception as exc:
            err = store_failure(exc)
            if err is None:
                log.exception("unhandled error on GET /v1/responses/{id}")
                err = APIError("The server had an error while processing your request.")
            await _send_json(send, err.status_code, err.to_json(), err.headers, request_id)
            return err.status_code
        await _send_json(send, 200, body, None, request_id)
        return 200

    async def retrieve(self, request: Request) -> Response | EventStream:
        tenant = self.tenant(request)
        rid = request.path_params["response_id"]
        q = request.query_params
        after = _int_param(q.get("starting_after"), "starting_after", -1, MAX_SEQUENCE)
        if _flag(q.get("stream"), "stream"):
            return EventStream(await self.service.stream(rid, tenant, after))
        if after is not None:
            raise InvalidRequest(
                "'starting_after' is only valid with stream=true.", param="starting_after", code="invalid_value"
            )
        return Response(await self.service.get_json(rid, tenant), media_type="application/json")

    async def cancel(self, request: Request) -> Response:
        tenant = self.tenant(request)
        rec = await self.service.cancel(request.path_params["response_id"], tenant)
        return JSON(rec.body)

    async def delete(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return JSON(await self.service.delete(request.path_params["response_id"], tenant))

    async def input_items(self, request: Request) -> Response:
        tenant = self.tenant(request)
        q = request.query_params
        limit = _int_param(q.get("limit"), "limit", 1, 100)
        if limit is None:
            limit = 20
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                f"Invalid 'order': expected 'asc' or 'desc', but got {order!r} instead.",
                param="order",
                code="invalid_value",
            )
        page = await self.service.input_items(
            request.path_params["response_id"], tenant, limit, order, q.get("after") or None
        )
        return JSON(page)

    # -- conversations ----------------------------------------------------------------------

    async def _json_request(self, request: Request) -> Any:
        return await self.json_body(request.stream(), request.headers.get("content-length"))

    async def conversation_create(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return JSON(await self.conversations.create(await self._json_request(request), tenant))

    async def conversation_get(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return JSON(await self.conversations.get(request.path_params["conversation_id"], tenant))

    async def conversation_update(self, request: Request) -> Response:
        tenant = self.tenant(request)
        body = await self._json_request(request)
        return JSON(await self.conversations.update(request.path_params["conversation_id"], body, tenant))

    async def conversation_delete(self, request: Request) -> Response:
        tenant = self.tenant(request)
        return JSON(await self.conversations.delete(request.path_params["conversation_id"], tenant))

    async def conversation_items(self, request: Request) -> Response:
        tenant = self.tenant(request)
        q = request.query_params
        limit = _int_param(q.get("limit"), "limit", 1, 100)
        order = q.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                f"Invalid 'order': expected 'asc' or 'desc', but got {order!r} instead.",
                param="order",
                code="invalid_value",
            )
        page = await self.conversations.list_items(
            request.path_params["conversation_id"], tenant, limit or 20, order, q.get("after") or None, _include(q)
        )
        return JSON(page)

    async def conversation_add_items(self, request: Request) -> Response:
        tenant = self.tenant(request)
        body = await self._json_request(request)
        page = await self.conversations.add_items(
            request.path_params["conversation_id"], body, tenant, _include(request.query_params)
        )
        return JSON(page)

    async def conversation_item(self, request: Request) -> Response:
        tenant = self.tenant(request)
        p = request.path_params
        return JSON(
            await self.conversations.get_item(
                p["conversation_id"], p["item_id"], tenant, _include(request.query_params)
            )
        )

    async def conversation_item_delete(self, request: Request) -> Response:
        tenant = self.tenant(request)
        p = request.path_params
        return JSON(await self.conversations.delete_item(p["conversation_id"], p["item_id"], tenant))

    async def input_tokens(self, request: Request) -> Response:
        tenant = self.tenant(request)
        body = await self.json_body(request.stream(), request.headers.get("content-length"))
        if body is None:
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
        return JSON(await self.service.count_input_tokens(body, tenant))

    async def models(self, request: Request) -> Response:
        self.tenant(request)
        return JSON({"object": "list", "data": await self.model_list.entries()})

    async def healthz(self, request: Request) -> Response:
        return JSON({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            await self.store.ping()
        except Exception as exc:
            raise ServiceUnavailable(f"The store is not reachable: {type(exc).__name__}.") from None
        return JSON({"status": "ready"})

    async def openapi(self, request: Request) -> Response:
        return JSON(OPENAPI)

    async def metrics(self, request: Request) -> Response:
        """Prometheus text format. With API keys configured it needs one (any tenant's),
        unless `--metrics-public`."""
        if self._keys and not self.settings.metrics_public:
            self.tenant(request)
        return Response(await self.scraper.render(), media_type=metrics.CONTENT_TYPE)


#: a client's `X-Request-Id` is kept if it is 1-128 printable ASCII characters, else replaced
_SANE_REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}").fullmatch
_POLL_ROUTE = "/v1/responses/{response_id}"
_CREATE_ROUTE = "/v1/responses"
_INFO = logging.INFO


class App:
    """The ASGI app: the hot `POST /v1/responses` goes straight to its handler; everything
    else (and the lifespan) goes through Starlette.

    Starlette's layers (error middleware, exception middleware, router, Request and Response
    objects, two send wrappers) cost a create about as much as all of bgmode's own work
    measured here (`bench/creates.py`); the handler gives the same responses and errors.

    Every HTTP request also gets here: its `X-Request-Id` (the client's if sane, else a new
    one) is echoed on the response, and it is counted once (`metrics.observe_request`) and
    logged once (`bgmode.access`) by route template, after it is answered.
    """

    def __init__(self, server: Server, starlette: Starlette) -> None:
        self.server = server
        self.starlette = starlette
        self.state = starlette.state
        self.access_log = server.settings.access_log
        #: route templates by endpoint, for requests Starlette routed (see `_route_of`)
        self._templates: dict[Any, str] = {}
        for route in starlette.routes:
            path = getattr(route, "path", None)
            endpoint = getattr(route, "endpoint", None) or getattr(route, "app", None)
            if path is not None and endpoint is not None:
                self._templates.setdefault(endpoint, path if isinstance(route, Route) else path + "/{path}")
        self._ids = itertools.count(1)
        self._id_prefix = "req_" + os.urandom(6).hex() + "_"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        t0 = time.perf_counter()
        request_id: bytes | None = None
        auth = b""
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                request_id = v if _SANE_REQUEST_ID(v) else None
            elif k == b"authorization":
                auth = v
        if request_id is None:
            request_id = f"{self._id_prefix}{next(self._ids)}".encode()
        method: str = scope["method"]
        path: str = scope["path"]
        if method == "GET" and not scope["query_string"]:
            if path.startswith("/v1/responses/") and path.find("/", 14) < 0 and len(path) > 14:
                # a plain poll: the other hot path
                status = await self.server.poll(path[14:], scope, send, auth, request_id)
                self._done(scope, _POLL_ROUTE, method, status, t0, request_id)
                return
        if path == "/v1/responses" and method == "POST":
            status = 500
            try:
                status = await self.server.create(scope, receive, send, request_id)
            except ClientDisconnect:
                status = 499  # gone before its body arrived: nothing was created
            except Exception as exc:
                err = store_failure(exc)
                if err is None:
                    log.exception("unhandled error on POST /v1/responses")
                    err = APIError("The server had an error while processing your request.")
                status = err.status_code
                with contextlib.suppress(Exception):  # the response may have started
                    await _send_json(send, err.status_code, err.to_json(), err.headers, request_id)
            finally:
                self._done(scope, _CREATE_ROUTE, method, status, t0, request_id)
            return
        await self._starlette(scope, receive, send, t0, request_id)

    async def _starlette(self, scope: Scope, receive: Receive, send: Send, t0: float, request_id: bytes) -> None:
        status = 500
        started: float | None = None

        async def send_with_id(message: Any) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = time.perf_counter()
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.starlette(scope, receive, send_with_id)
        finally:
            if started is not None:
                scope["bgmode.headers_at"] = started
            self._done(scope, self._route_of(scope), scope["method"], status, t0, request_id)

    def _route_of(self, scope: Scope) -> str:
        """The template of the route Starlette matched (its router leaves the endpoint in the scope)."""
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return "unmatched"
        return self._templates.get(endpoint, "other")

    def _done(self, scope: Scope, route: str, method: str, status: int, t0: float, request_id: bytes) -> None:
        """Count and log one answered request."""
        end = time.perf_counter()
        metrics.observe_request(route, method, status, scope.get("bgmode.headers_at", end) - t0)
        if self.access_log and ACCESS.isEnabledFor(_INFO):
            logs.access(
                method,
                route,
                status,
                (end - t0) * 1000,
                scope.get("bgmode.tenant"),
                request_id,
            )


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:  # an async generator, but a small body comes in one message: one step
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _send_json(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None, request_id: bytes | None = None
) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        raw.append((b"x-request-id", request_id))
    if headers:
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _flag(raw: str | None, name: str) -> bool:
    if raw is None:
        return False
    v = raw.lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0", ""):
        return False
    raise InvalidRequest(
        f"Invalid value for '{name}': expected a boolean, but got {raw!r} instead.",
        param=name,
        code="invalid_type",
    )


def _include(q: Any) -> list[str]:
    """`include[]=...` (as the SDKs send it) or `include=...`, repeated."""
    return [*q.getlist("include[]"), *q.getlist("include")]


def _int_param(raw: str | None, name: str, lo: int, hi: int) -> int | None:
    """A query integer: ASCII digits with an optional leading '-', within [lo, hi]; else a 400."""
    if raw is None or raw == "":
        return None
    digits = raw[1:] if raw.startswith("-") else raw
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 20:
        raise InvalidRequest(
            f"Invalid type for '{name}': expected an integer, but got {raw[:40]!r} instead.",
            param=name,
            code="invalid_type",
        )
    value = int(raw)
    if not lo <= value <= hi:
        raise InvalidRequest(
            f"Invalid '{name}': expected a value between {lo} and {hi}, but got {value} instead.",
            param=name,
            code="invalid_value",
        )
    return value


def _too_deep(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values() if isinstance(x, dict | list))
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v if isinstance(x, dict | list))
    return False


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return Response(exc.to_json(), exc.status_code, exc.headers, "application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
    err = APIError(f"{request.method} {request.url.path}: {exc.detail}", code=code)
    err.error_type = "invalid_request_error"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method any route allows on this path, not only the first's
        allowed: set[str] = set()
        literal: set[str] = set()  # a path that is a route of its own is not also a `{param}` value
        for route in request.app.routes:
            match, _ = route.matches({**request.scope, "method": "\0"})
            if match is not Match.NONE and getattr(route, "methods", None):
                allowed |= set(route.methods)
                if "{" not in getattr(route, "path", "{"):
                    literal |= set(route.methods)
        allowed = literal or allowed
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
    return Response(err.to_json(), exc.status_code, headers, "application/json")


def store_failure(exc: Exception) -> APIError | None:
    """A 503 for a store that cannot be used right now (disk full, database down), else None."""
    if isinstance(exc, sqlite3.Error | OSError) or type(exc).__module__.startswith("asyncpg"):
        log.error("the store failed: %s: %s", type(exc).__name__, exc)
        return ServiceUnavailable(
            f"The server's store cannot be used right now ({type(exc).__name__}: {exc}); retry later.",
            code="store_unavailable",
            headers={"Retry-After": "1"},
        )
    return None


async def _server_error(request: Request, exc: Exception) -> Response:
    err = store_failure(exc)
    if err is None:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        err = APIError("The server had an error while processing your request.")
    return Response(err.to_json(), err.status_code, err.headers, "application/json")


async def _answered_by_app(request: Request) -> Response:  # pragma: no cover - App answers first
    raise APIError("POST /v1/responses is answered by bgmode.app.App.")


def create_app(settings: Settings | None = None, router: Router | None = None) -> App:
    """The ASGI app for `settings` (the store is opened by the app's lifespan)."""
    server = Server(settings or Settings(), router)
    routes = [
        # POST is answered by `App` before Starlette; listed so other methods get 405 + Allow
        Route("/v1/responses", _answered_by_app, methods=["POST"]),
        Route("/v1/responses/{response_id}", server.retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", server.delete, methods=["DELETE"]),
        Route("/v1/responses/input_tokens", server.input_tokens, methods=["POST"]),
        Route("/v1/responses/{response_id}/cancel", server.cancel, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", server.input_items, methods=["GET"]),
        Route("/v1/conversations", server.conversation_create, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", server.conversation_get, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", server.conversation_update, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", server.conversation_delete, methods=["DELETE"]),
        Route("/v1/conversations/{conversation_id}/items", server.conversation_items, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}/items", server.conversation_add_items, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}/items/{item_id}", server.conversation_item, methods=["GET"]),
        Route(
            "/v1/conversations/{conversation_id}/items/{item_id}", server.conversation_item_delete, methods=["DELETE"]
        ),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/readyz", server.readyz, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
        Route("/metrics", server.metrics, methods=["GET"]),
        *dashboard.routes(server),
        *webhooks.routes(server),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.state.server = server
    return App(server, app)
