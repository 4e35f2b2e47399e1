"""Prometheus metrics (`GET /metrics`), with `prometheus-client`.

SEAM: the metrics work defines every series here, in one registry; other modules import the
objects they update. Names that other work relies on already: `WEBHOOK_DELIVERIES`,
`WEBHOOK_LAG`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

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
