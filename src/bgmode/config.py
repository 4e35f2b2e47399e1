"""Server settings. Every `bgmode serve` flag has a `BGMODE_*` environment variable."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from platformdirs import user_data_dir

if TYPE_CHECKING:
    from bgmode.webhooks import Endpoint


def default_store_url() -> str:
    return "sqlite:///" + os.path.join(user_data_dir("bgmode", appauthor=False), "bgmode.db")


def parse_api_keys(spec: str | None) -> dict[str, str]:
    """`key1:tenantA,key2:tenantB` (a key without `:tenant` is its own tenant) → {key: tenant}."""
    keys: dict[str, str] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, _, tenant = part.partition(":")
        keys[key] = tenant or f"key-{len(keys) + 1}"
    return keys


@dataclass
class Settings:
    store_url: str = field(default_factory=default_store_url)
    host: str = "127.0.0.1"
    port: int = 8000
    #: responses run at once by this process's worker (0: API only)
    workers: int = 16
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 0.5
    keepalive_seconds: float = 15.0
    grace_seconds: float = 30.0
    max_body_bytes: int = 8 * 1024 * 1024
    #: API key → tenant; empty: no authentication (one tenant)
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)
    max_queued: int = 0
    max_queued_per_key: int = 0
    #: retention of finished responses and of their event logs, in seconds
    response_ttl: float = 30 * 24 * 3600.0
    events_ttl: float = 24 * 3600.0
    #: retention of conversations (with their items), in seconds since their last change
    conversation_ttl: float = 30 * 24 * 3600.0
    sweep_seconds: float = 60.0
    #: seals reasoning `encrypted_content` (None: a random key kept in the store)
    reasoning_key: str | None = field(default=None, repr=False)
    #: `GET /metrics` without an API key even when keys are configured
    metrics_public: bool = False
    #: one `bgmode.access` log line per request
    access_log: bool = True
    #: webhook endpoints (`[[webhook]]` tables of the config file and `BGMODE_WEBHOOK_*`)
    webhooks: list[Endpoint] = field(default_factory=list)
