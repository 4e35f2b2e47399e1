"""Webhooks: OpenAI's `response.*` events, Standard-Webhooks signed, delivered from a durable outbox.

- **Events.** When a background response ends, its terminal write (`Store.write` with a
  finishing status, or `Store.cancel_queued`) inserts one outbox row per matching endpoint in
  the same transaction (`Store.configure_webhooks`, called here at construction). A crash
  after the commit therefore loses nothing; the body is OpenAI's exactly:
  `{"id": "evt_…", "object": "event", "type": "response.completed", "created_at": …,
  "data": {"id": "resp_…"}}`.
- **Signing.** Standard Webhooks, as OpenAI and its SDKs' `webhooks.unwrap()` expect:
  `webhook-id` (the event id, the same on every retry), `webhook-timestamp` (this attempt),
  `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed by the
  base64-decoded part of the endpoint's `whsec_…` secret.
- **Delivery.** A `Dispatcher` runs in every `bgmode serve` process with endpoints. It claims
  due rows under a lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`), so two processes never send
  the same delivery at once; 2xx is delivered, anything else (or no answer within the
  endpoint's timeout) is retried with exponential backoff and full jitter until `retry_hours`
  after the event, then marked failed. At least once. Each endpoint has its own HTTP client
  and at most `max_concurrency` requests in flight: a slow endpoint delays nobody else, and
  nothing on the write path ever waits for a delivery.
- **State.** `GET /v1/webhooks/deliveries` (tenant-scoped) lists the outbox rows.

Secrets come only from the environment (`secret_env` names the variable); they are never
logged, shown in errors, in a repr or in the API.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import logging
import os
import random
import socket
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bgmode.errors import InvalidRequest
from bgmode.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LAG
from bgmode.store.base import WEBHOOK_EVENTS, DeliveryRecord

if TYPE_CHECKING:
    from bgmode.app import Server
    from bgmode.store import Store

log = logging.getLogger("bgmode.webhooks")

#: every event type bgmode sends (OpenAI's names)
EVENT_TYPES = frozenset(WEBHOOK_EVENTS.values())
DELIVERY_STATUSES = ("pending", "delivered", "failed")
_TABLE_KEYS = frozenset(
    {
        "name",
        "url",
        "secret_env",
        "events",
        "tenants",
        "retry_hours",
        "timeout",
        "max_concurrency",
        "backoff_seconds",
        "max_backoff_seconds",
    }
)


@dataclass(frozen=True)
class Endpoint:
    """A webhook receiver. `events` empty: all four; `tenants` empty: every tenant."""

    name: str
    url: str
    secret: str = field(repr=False)
    events: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()
    #: keep retrying for this long after the event (OpenAI: 72 h)
    retry_hours: float = 72.0
    #: seconds to wait for the receiver's answer
    timeout: float = 10.0
    #: requests in flight to this endpoint at once (per process)
    max_concurrency: int = 8
    #: the backoff before retry n is uniform in [0, min(max_backoff, backoff * 2**n)]
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 3600.0

    def key(self) -> bytes:
        return _decode_secret(self.secret)


def _decode_secret(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        raise ValueError("must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not 'whsec_' followed by base64") from None
    if len(key) < 16:
        raise ValueError("decodes to fewer than 16 bytes")
    return key


def sign(secret_key: bytes, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value for one attempt."""
    mac = hmac.new(secret_key, f"{event_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def event_body(d: DeliveryRecord) -> bytes:
    """The event exactly as OpenAI sends it."""
    return orjson.dumps(
        {
            "id": d.event_id,
            "object": "event",
            "type": d.type,
            "created_at": int(d.created_at),
            "data": {"id": d.response_id},
        }
    )


# -- configuration --------------------------------------------------------------------------


def load_endpoints(config_path: str | None, env: Mapping[str, str]) -> list[Endpoint]:
    """`[[webhook]]` tables of the TOML config file, then one endpoint from `BGMODE_WEBHOOK_URL`
    + `BGMODE_WEBHOOK_SECRET` (+ `BGMODE_WEBHOOK_EVENTS`, comma-separated). `ValueError` naming
    the file, table and key for any mistake (never showing a secret)."""
    endpoints: list[Endpoint] = []
    if config_path is not None:
        try:
            with open(config_path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ValueError(f"{config_path}: cannot read the config file: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{config_path}: not valid TOML: {exc}") from None
        tables = doc.get("webhook", [])
        if not isinstance(tables, list):
            raise ValueError(f"{config_path}: 'webhook' must be [[webhook]] tables")
        for i, table in enumerate(tables, start=1):
            endpoints.append(_from_table(table, f"{config_path}: webhook {i}", env, f"webhook-{i}"))
    url, secret, events = (env.get(f"BGMODE_WEBHOOK_{k}") for k in ("URL", "SECRET", "EVENTS"))
    if url or secret or events:
        if not url or not secret:
            raise ValueError("BGMODE_WEBHOOK_URL and BGMODE_WEBHOOK_SECRET must be set together")
        where = "BGMODE_WEBHOOK_*"
        names = [e.strip() for e in (events or "").split(",") if e.strip()] or None
        endpoints.append(
            Endpoint(
                name="env",
                url=_url(url, where),
                secret=_secret(secret, f"{where}: BGMODE_WEBHOOK_SECRET"),
                events=_events(names, f"{where}: BGMODE_WEBHOOK_EVENTS"),
            )
        )
    seen: set[str] = set()
    for e in endpoints:
        if e.name in seen:
            raise ValueError(f"webhook endpoint name {e.name!r} is used twice")
        seen.add(e.name)
    return endpoints


def _from_table(table: Any, where: str, env: Mapping[str, str], default_name: str) -> Endpoint:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    if "secret" in table:
        raise ValueError(
            f"{where}: a literal 'secret' is not accepted in the file; put it in an environment variable"
            " and name that variable with secret_env"
        )
    extra = set(table) - _TABLE_KEYS
    if extra:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")

    def string(key: str) -> str | None:
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"{where}: key {key!r} must be a non-empty string")
        return value

    def number(key: str, default: float, minimum: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ValueError(f"{where}: key {key!r} must be a number >= {minimum:g}, not {value!r}")
        return float(value)

    def strings(key: str) -> list[str] | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{where}: key {key!r} must be a non-empty list of strings")
        return value

    name = string("name") or default_name
    where = f"{where} ({name})"
    url = string("url")
    if url is None:
        raise ValueError(f"{where}: key 'url' is required")
    var = string("secret_env")
    if var is None:
        raise ValueError(f"{where}: key 'secret_env' is required (the environment variable holding whsec_...)")
    secret = env.get(var)
    if not secret:
        raise ValueError(f"{where}: environment variable {var} is not set (it holds the endpoint's whsec_ secret)")
    concurrency = table.get("max_concurrency", 8)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"{where}: key 'max_concurrency' must be an integer >= 1, not {concurrency!r}")
    return Endpoint(
        name=name,
        url=_url(url, where),
        secret=_secret(secret, f"{where}: environment variable {var}"),
        events=_events(strings("events"), f"{where}: key 'events'"),
        tenants=frozenset(strings("tenants") or ()),
        retry_hours=number("retry_hours", 72.0, 0.0),
        timeout=number("timeout", 10.0, 0.1),
        max_concurrency=concurrency,
        backoff_seconds=number("backoff_seconds", 1.0, 0.01),
        max_backoff_seconds=number("max_backoff_seconds", 3600.0, 0.01),
    )


def _url(url: str, where: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{where}: the webhook url must be an http:// or https:// URL")
    return url


def _secret(secret: str, where: str) -> str:
    try:
        _decode_secret(secret)
    except ValueError as exc:
        raise ValueError(f"{where}: the webhook secret {exc} (Standard Webhooks: whsec_<base64>)") from None
    return secret


def _events(names: list[str] | None, where: str) -> frozenset[str]:
    if names is None:
        return EVENT_TYPES
    unknown = sorted(set(names) - EVENT_TYPES)
    if unknown:
        raise ValueError(
            f"{where}: unknown event type(s) {', '.join(unknown)} (one of {', '.join(sorted(EVENT_TYPES))})"
        )
    return frozenset(names)


# -- delivery -------------------------------------------------------------------------------


class Dispatcher:
    """Sends the outbox's due deliveries; one per `bgmode serve` process with endpoints."""

    #: the longest wait between looks at the outbox when nothing wakes the dispatcher (another
    #: SQLite process's events; a lost notification)
    idle_seconds = 1.0

    def __init__(self, store: Store, endpoints: list[Endpoint]) -> None:
        self.store = store
        self.endpoints = endpoints
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"
        store.configure_webhooks(list(endpoints))
        self._task: asyncio.Task[None] | None = None
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._inflight: dict[str, set[asyncio.Task[None]]] = {e.name: set() for e in endpoints}
        self._kick = asyncio.Event()

    async def start(self) -> None:
        if not self.endpoints:
            return
        for e in self.endpoints:
            limits = httpx.Limits(max_connections=e.max_concurrency, max_keepalive_connections=e.max_concurrency)
            self._clients[e.name] = httpx.AsyncClient(
                timeout=httpx.Timeout(e.timeout), limits=limits, follow_redirects=False, trust_env=False
            )
        self._task = asyncio.create_task(self._run(), name="bgmode-webhooks")

    async def stop(self) -> None:
        """Stop claiming; unfinished sends are abandoned (their claims lapse and another
        attempt follows, on this database's next dispatcher)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        sends = [t for ts in self._inflight.values() for t in ts]
        for t in sends:
            t.cancel()
        if sends:
            await asyncio.gather(*sends, return_exceptions=True)
        for c in self._clients.values():
            await c.aclose()
        self._clients.clear()

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: try again shortly
                log.warning("webhook dispatch failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(self.idle_seconds)

    async def _round(self) -> None:
        self._kick.clear()
        open_ = []
        for e in self.endpoints:
            free = e.max_concurrency - len(self._inflight[e.name])
            if free <= 0:
                continue
            open_.append(e.name)
            for d in await self.store.webhook_claim(e.name, self.owner, free, e.timeout + 5.0):
                task = asyncio.create_task(self._send(e, d), name=f"bgmode-webhook-{d.id}")
                self._inflight[e.name].add(task)
                task.add_done_callback(functools.partial(self._done, e.name))
        wait = self.idle_seconds
        due = await self.store.webhook_next_due([n for n in open_ if len(self._inflight[n]) < self._limit(n)])
        if due is not None:
            wait = min(wait, max(0.0, due - time.time()))
        if wait <= 0:
            return
        kick = asyncio.create_task(self._kick.wait())
        store = asyncio.create_task(self.store.wait_for_webhooks(wait))
        try:
            await asyncio.wait({kick, store}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (kick, store):
                t.cancel()
            await asyncio.gather(kick, store, return_exceptions=True)

    def _limit(self, name: str) -> int:
        return next(e.max_concurrency for e in self.endpoints if e.name == name)

    def _done(self, name: str, task: asyncio.Task[None]) -> None:
        self._inflight[name].discard(task)
        self._kick.set()  # a slot is free

    async def _send(self, e: Endpoint, d: DeliveryRecord) -> None:
        body = event_body(d)
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "bgmode-webhooks",
            "webhook-id": d.event_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(e.key(), d.event_id, ts, body),
        }
        code: int | None = None
        error: str | None = None
        try:
            async with self._clients[e.name].stream("POST", e.url, content=body, headers=headers) as r:
                code = r.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}"
        except httpx.TimeoutException:
            error = f"no answer within {e.timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: could not deliver"
        now = time.time()
        if error is None:
            status, next_at, outcome = "delivered", None, "delivered"
        else:
            n = d.attempts + 1
            delay = random.uniform(0, min(e.max_backoff_seconds, e.backoff_seconds * 2.0 ** min(n, 60)))
            if now + delay > d.created_at + e.retry_hours * 3600:
                status, next_at, outcome = "failed", None, "gave_up"
            else:
                status, next_at, outcome = "pending", now + delay, "retry"
            log.warning(
                "webhook %s to endpoint %s, attempt %d: %s (%s)",
                d.event_id,
                e.name,
                n,
                error,
                "giving up" if status == "failed" else f"retry in {delay:.1f} s",
            )
        try:
            recorded = await self.store.webhook_result(
                d.id, self.owner, status=status, status_code=code, error=error, next_attempt_at=next_at
            )
        except Exception as exc:  # the claim lapses and the delivery is tried again (at least once)
            log.warning("webhook %s: recording the attempt failed (%s)", d.event_id, type(exc).__name__)
            return
        WEBHOOK_DELIVERIES.labels(e.name, outcome).inc()
        if status == "delivered":
            WEBHOOK_LAG.labels(e.name).observe(max(0.0, now - d.created_at))
        if not recorded:
            log.warning("webhook %s: the claim lapsed before the attempt was recorded", d.event_id)


# -- the delivery-state API -----------------------------------------------------------------

_QUERY = frozenset({"response_id", "status", "limit", "after"})


def routes(server: Server) -> list[BaseRoute]:
    async def deliveries(request: Request) -> Response:
        tenant = server.tenant(request)
        q = request.query_params
        extra = sorted(set(q.keys()) - _QUERY)
        if extra:
            raise InvalidRequest(f"Unknown parameter: '{extra[0]}'.", param=extra[0], code="unknown_parameter")
        status = q.get("status") or None
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidRequest(
                f"Invalid 'status': expected one of {', '.join(DELIVERY_STATUSES)}, but got {status[:40]!r} instead.",
                param="status",
                code="invalid_value",
            )
        raw = q.get("limit")
        limit = 20
        if raw:
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
                raise InvalidRequest(
                    f"Invalid type for 'limit': expected an integer, but got {raw[:40]!r} instead.",
                    param="limit",
                    code="invalid_type",
                )
            limit = int(raw)
            if not 1 <= limit <= 100:
                raise InvalidRequest(
                    f"Invalid 'limit': expected a value between 1 and 100, but got {limit} instead.",
                    param="limit",
                    code="invalid_value",
                )
        rows = await server.store.webhook_deliveries(
            tenant,
            response_id=q.get("response_id") or None,
            status=status,
            after=q.get("after") or None,
            limit=limit + 1,
        )
        data = [d.public() for d in rows[:limit]]
        page = {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }
        return Response(orjson.dumps(page), media_type="application/json")

    return [Route("/v1/webhooks/deliveries", deliveries, methods=["GET"])]


_NULLABLE_INT = {"type": ["integer", "null"]}
_DELIVERY = {
    "type": "object",
    "required": [
        "id",
        "object",
        "event_id",
        "endpoint",
        "response_id",
        "type",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "delivered_at",
        "created_at",
    ],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "webhook.delivery"},
        "event_id": {"type": "string", "description": "the `webhook-id` header, the same on every attempt"},
        "endpoint": {"type": "string", "description": "the endpoint's name in the configuration"},
        "response_id": {"type": "string"},
        "type": {"enum": sorted(EVENT_TYPES)},
        "status": {"enum": list(DELIVERY_STATUSES)},
        "attempts": {"type": "integer", "minimum": 0},
        "last_status_code": _NULLABLE_INT,
        "last_error": {"type": ["string", "null"]},
        "next_attempt_at": {**_NULLABLE_INT, "description": "epoch seconds of the next attempt (pending only)"},
        "delivered_at": _NULLABLE_INT,
        "created_at": {"type": "integer", "description": "when the response ended (the event's created_at)"},
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/webhooks/deliveries": {
        "get": {
            "operationId": "listWebhookDeliveries",
            "summary": "List webhook deliveries of this API key's responses, newest first (bgmode extension)",
            "parameters": [
                {"name": "response_id", "in": "query", "schema": {"type": "string"}},
                {"name": "status", "in": "query", "schema": {"enum": list(DELIVERY_STATUSES)}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "a delivery id: list the ones older than it",
                },
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["object", "data", "first_id", "last_id", "has_more"],
                                "properties": {
                                    "object": {"const": "list"},
                                    "data": {"type": "array", "items": _DELIVERY},
                                    "first_id": {"type": ["string", "null"]},
                                    "last_id": {"type": ["string", "null"]},
                                    "has_more": {"type": "boolean"},
                                },
                            }
                        }
                    },
                },
                "400": {
                    "description": "Invalid query parameter",
                    "content": {"application/json": {"schema": _ERROR}},
                },
                "401": {
                    "description": "Missing or invalid API key",
                    "content": {"application/json": {"schema": _ERROR}},
                },
            },
        }
    }
}
