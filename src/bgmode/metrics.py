"""Prometheus metrics (`GET /metrics`), with `prometheus-client`.

Every series is defined here, in one registry; other modules import the objects (or the small
helpers below) they update. Two kinds of series:

- **per process**: counters, histograms and the live-stream gauge count what *this* process
  did (requests it answered, responses it created or finished, events its flusher wrote).
  With many processes on one PostgreSQL database, scrape every process and `sum` them.
- **store-wide**: `bgmode_store_responses{status}` is read from the store (`status_counts`)
  when scraped, cached for `STORE_CACHE_SECONDS` so a burst of scrapes costs one query. Every
  process reports the same numbers: aggregate with `max`, not `sum`.

Hot paths never look labels up by name: `labels()` children are bound once and kept in
small dicts (`_child`), and the model label is bounded (`model_label`).
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from bgmode.store import Store

# `*_created` timestamps double the series and no dashboard uses them (process-wide setting)
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: webhook delivery attempts by endpoint name and outcome (delivered, retry, gave_up)
WEBHOOK_DELIVERIES = Counter(
    "bgmode_webhook_deliveries", "Webhook delivery attempts.", ["endpoint", "outcome"], registry=REGISTRY
)
#: seconds from the terminal write to the successful delivery
WEBHOOK_LAG = Histogram(
    "bgmode_webhook_lag_seconds",
    "Seconds from a response's end to its webhook's delivery.",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400),
    registry=REGISTRY,
)

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# -- HTTP ------------------------------------------------------------------------------------


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class _Requests:
    """`bgmode_http_requests_total{route,method,status}` and
    `bgmode_http_request_duration_seconds{route,method}`, kept as plain numbers and turned into
    Prometheus families at scrape time. Every request updates them, and prometheus-client's own
    objects take a lock and walk the buckets per update: several times the cost of this."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        #: per (route, method): a count per bucket (then +Inf), then the sum of seconds
        self.hist: dict[tuple[str, str], list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "other"
        key = (route, method, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        h = self.hist.get((route, method))
        if h is None:
            h = self.hist[(route, method)] = [0.0] * (len(_FAST) + 2)
        h[bisect_left(_FAST, seconds)] += 1
        h[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "bgmode_http_requests",
            "HTTP requests answered, by route template (not the raw path), method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), n in list(self.counts.items()):
            requests.add_metric([route, method, str(status)], n)
        yield requests
        duration = HistogramMetricFamily(
            "bgmode_http_request_duration_seconds",
            "Seconds from a request's arrival to its response's headers (a stream's length is not in it).",
            labels=["route", "method"],
        )
        for (route, method), h in list(self.hist.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip((*_FAST, math.inf), h, strict=False):
                cumulative += in_bucket
                buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
            duration.add_metric([route, method], buckets, h[-1])
        yield duration


_REQUESTS = _Requests()
REGISTRY.register(_REQUESTS)
SSE_STREAMS = Gauge("bgmode_sse_streams", "Live server-sent event streams in this process.", registry=REGISTRY)

# -- responses -------------------------------------------------------------------------------


class _Created:
    """`bgmode_responses_created_total{model,mode}`, plain numbers like `_Requests` (every create
    counts one)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[object, bool], int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "bgmode_responses_created",
            "Responses created by this process, by model and mode (background, foreground).",
            labels=["model", "mode"],
        )
        for (model, background), n in list(self.counts.items()):
            family.add_metric([str(model), "background" if background else "foreground"], n)
        yield family


_CREATED = _Created()
REGISTRY.register(_CREATED)
RESPONSES_FINISHED = Counter(
    "bgmode_responses_finished",
    "Responses this process wrote a terminal status for, by model and status.",
    ["model", "status"],
    registry=REGISTRY,
)
QUEUE_SECONDS = Histogram(
    "bgmode_response_queue_seconds",
    "Seconds from a background response's create to a worker starting it (each attempt).",
    ["model"],
    buckets=_SLOW,
    registry=REGISTRY,
)
FIRST_TOKEN_SECONDS = Histogram(
    "bgmode_response_first_token_seconds",
    "Seconds from a response's create to its first output (queue time included).",
    ["model"],
    buckets=_SLOW,
    registry=REGISTRY,
)
DURATION_SECONDS = Histogram(
    "bgmode_response_duration_seconds",
    "Seconds from a response's create to its terminal status.",
    ["model", "status"],
    buckets=_SLOW,
    registry=REGISTRY,
)
TOKENS = Counter(
    "bgmode_tokens",
    "Tokens of finished responses (usage), by model and direction (input, output).",
    ["model", "direction"],
    registry=REGISTRY,
)
WORKER_RUNNING = Gauge("bgmode_worker_running", "Responses this process's worker is running now.", registry=REGISTRY)
WORKER_SLOTS = Gauge("bgmode_worker_slots", "Responses this process's worker may run at once.", registry=REGISTRY)
STORE_RESPONSES = Gauge(
    "bgmode_store_responses",
    "Responses in the store by status (store-wide: every process reports the same; use max).",
    ["status"],
    registry=REGISTRY,
)

# -- the store and upstreams -----------------------------------------------------------------

EVENTS_PERSISTED = Counter(
    "bgmode_events_persisted", "Events the worker's flusher committed to the store.", registry=REGISTRY
)
STORE_WRITE_SECONDS = Histogram(
    "bgmode_store_write_seconds",
    "Seconds one flusher write (a group commit of many responses' events) took.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
STORE_WRITE_ERRORS = Counter(
    "bgmode_store_write_errors", "Flusher writes that failed (retried with backoff).", registry=REGISTRY
)
STORE_COUNT_ERRORS = Counter(
    "bgmode_store_count_errors",
    "Scrapes whose store-wide counts could not be read (the gauges kept their last values).",
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "bgmode_upstream_errors",
    "Failed upstream attempts (retried or not), by backend (its URL) and kind.",
    ["backend", "kind"],
    registry=REGISTRY,
)

# -- cheap label binding -------------------------------------------------------------------

#: distinct model names used as label values; past this, "other" (a `*` route accepts any name)
MAX_MODELS = 100
_models: set[str] = set()
_children: dict[tuple[Any, ...], Any] = {}


def model_label(model: object) -> str:
    name = model if isinstance(model, str) else str(model)
    if name in _models:
        return name
    if len(_models) < MAX_MODELS and len(name) <= 200:
        _models.add(name)
        return name
    return "other"


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, bound once."""
    key = (id(metric), *labels)
    c = _children.get(key)
    if c is None:
        c = _children[key] = metric.labels(*labels)
    return c


#: one answered request: route template, method, status, seconds to the response's headers
observe_request = _REQUESTS.observe


def response_created(model: object, background: bool) -> None:
    counts = _CREATED.counts
    key = (model, background)
    n = counts.get(key)
    if n is None:  # a model not counted yet: its label (or "other", past MAX_MODELS)
        key = (model_label(model), background)
        n = counts.get(key, 0)
    counts[key] = n + 1


def response_started(model: object, created_at: float, now: float) -> None:
    _child(QUEUE_SECONDS, model_label(model)).observe(max(0.0, now - created_at))


def first_token(model: object, created_at: float, now: float) -> None:
    _child(FIRST_TOKEN_SECONDS, model_label(model)).observe(max(0.0, now - created_at))


def response_finished(model: object, status: str, created_at: float, now: float, usage: Any) -> None:
    m = model_label(model)
    _child(RESPONSES_FINISHED, m, status).inc()
    _child(DURATION_SECONDS, m, status).observe(max(0.0, now - created_at))
    if isinstance(usage, dict):
        tin, tout = usage.get("input_tokens"), usage.get("output_tokens")
        if isinstance(tin, int) and tin > 0:
            _child(TOKENS, m, "input").inc(tin)
        if isinstance(tout, int) and tout > 0:
            _child(TOKENS, m, "output").inc(tout)


def upstream_error(backend: str, kind: str) -> None:
    _child(UPSTREAM_ERRORS, backend, kind).inc()


# -- the scrape --------------------------------------------------------------------------------

#: how long store-wide counts are reused between scrapes
STORE_CACHE_SECONDS = 1.0


class Scraper:
    """Renders the registry, with store-wide gauges refreshed at most every second."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._at = -1e9
        self._lock = asyncio.Lock()
        self._statuses: set[str] = set()

    async def refresh(self) -> None:
        if time.monotonic() - self._at < STORE_CACHE_SECONDS:
            return
        async with self._lock:  # concurrent scrapes wait for one query
            if time.monotonic() - self._at < STORE_CACHE_SECONDS:
                return
            counts = await self.store.status_counts()
            for status in ("queued", "in_progress", *counts, *self._statuses):
                STORE_RESPONSES.labels(status).set(counts.get(status, 0))
            self._statuses |= set(counts)
            self._at = time.monotonic()

    async def render(self) -> bytes:
        try:
            await self.refresh()
        except Exception:
            # a store that cannot answer: the gauges keep their last values, everything
            # else is still worth scraping
            STORE_COUNT_ERRORS.inc()
        return generate_latest(REGISTRY)
