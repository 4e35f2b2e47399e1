"""The HTTP layer: routes, authentication, body limits, one error handler, the lifespan.

Plain Starlette rather than FastAPI: a create is on the hot path, and FastAPI's per-request
dependency and validation machinery costs more than the whole durable create. The OpenAPI
document is written by hand (`openapi.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bgmode.config import Settings
from bgmode.errors import APIError, BodyTooLarge, InvalidRequest, ServiceUnavailable, Unauthorized
from bgmode.hub import Hub
from bgmode.openapi import OPENAPI
from bgmode.routing import Router
from bgmode.service import Limits, Service
from bgmode.sse import EventStream
from bgmode.store import Store, open_store
from bgmode.worker import Worker, WorkerConfig

log = logging.getLogger("bgmode")


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
        )
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
        self._keys = [(k.encode(), t) for k, t in settings.api_keys.items()]
        self._sweeper: asyncio.Task[None] | None = None

    def begin_shutdown(self) -> None:
        """The first signal: stop claiming work and end live streams (their clients resume later)."""
        self.service.shutting_down.set()
        self.worker.stop_claiming()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.store.open()
        await self.worker.start()
        self._sweeper = asyncio.create_task(self._sweep_loop())
        try:
            yield
        finally:
            self.begin_shutdown()
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            await self.worker.stop()
            await self.router.aclose()
            await self.store.close()

    async def _sweep_loop(self) -> None:
        s = self.settings
        while True:
            try:
                now = time.time()
                while True:
                    n_resp, n_logs = await self.store.sweep(now - s.response_ttl, now - s.events_ttl, 500)
                    if n_resp < 500 and n_logs < 500:
                        break
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(s.sweep_seconds)

    # -- request helpers --------------------------------------------------------------------

    def tenant(self, request: Request) -> str:
        if not self._keys:
            return "default"
        auth = request.headers.get("authorization", "")
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

    async def json_body(self, request: Request) -> Any:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"The request body is larger than {limit} bytes.", code="request_too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"The request body is larger than {limit} bytes.", code="request_too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "We could not parse the JSON body of your request. The body must be valid JSON.",
                code="invalid_json",
            ) from None

    # -- endpoints ---------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        tenant = self.tenant(request)
        if self.service.shutting_down.is_set():
            raise ServiceUnavailable("The server is shutting down; retry.", headers={"Retry-After": "1"})
        body = await self.json_body(request)
        if body is None:
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
        created = await self.service.create(body, tenant, request.headers.get("idempotency-key"))
        if created.stream is not None:
            return EventStream(created.stream)
        rec = created.record
        if rec.body_json is not None:
            return Response(rec.body_json, media_type="application/json")
        return JSON(rec.body)

    async def retrieve(self, request: Request) -> Response:
        tenant = self.tenant(request)
        rid = request.path_params["response_id"]
        q = request.query_params
        if _flag(q.get("stream"), "stream"):
            after = _int_param(q.get("starting_after"), "starting_after")
            return EventStream(await self.service.stream(rid, tenant, after))
        rec = await self.service.get(rid, tenant)
        return JSON(rec.body)

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
        limit = _int_param(q.get("limit"), "limit")
        if limit is None:
            limit = 20
        if not 1 <= limit <= 100:
            raise InvalidRequest(
                f"Invalid 'limit': expected a value between 1 and 100, but got {limit} instead.",
                param="limit",
                code="invalid_value",
            )
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

    async def models(self, request: Request) -> Response:
        self.tenant(request)
        return JSON({"object": "list", "data": self.router.models()})

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


def _int_param(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(
            f"Invalid type for '{name}': expected an integer, but got {raw!r} instead.",
            param=name,
            code="invalid_type",
        ) from None


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return Response(exc.to_json(), exc.status_code, exc.headers, "application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
    err = APIError(f"{request.method} {request.url.path}: {exc.detail}", code=code)
    err.error_type = "invalid_request_error"
    return Response(err.to_json(), exc.status_code, None, "application/json")


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    err = APIError("The server had an error while processing your request.")
    return Response(err.to_json(), 500, None, "application/json")


def create_app(settings: Settings | None = None, router: Router | None = None) -> Starlette:
    """The ASGI app for `settings` (the store is opened by the app's lifespan)."""
    server = Server(settings or Settings(), router)
    routes = [
        Route("/v1/responses", server.create, methods=["POST"]),
        Route("/v1/responses/{response_id}", server.retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", server.delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", server.cancel, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", server.input_items, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/healthz", server.healthz, methods=["GET"]),
        Route("/readyz", server.readyz, methods=["GET"]),
        Route("/openapi.json", server.openapi, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=server.lifespan,
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _server_error},
    )
    app.state.server = server
    return app
