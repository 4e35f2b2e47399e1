"""Webhooks: OpenAI's `response.*` events, Standard-Webhooks signed, delivered from a durable outbox.

SEAM (filled in by the webhooks work): `load_endpoints` reads `[[webhook]]` tables of the TOML
config and `BGMODE_WEBHOOK_*` variables; `Dispatcher` sends what the store's outbox holds;
`routes` adds the delivery-state API; `OPENAPI_PATHS` documents it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from bgmode.app import Server
    from bgmode.store import Store


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str
    secret: str = field(repr=False)
    events: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()


def load_endpoints(config_path: str | None, env: Mapping[str, str]) -> list[Endpoint]:
    return []


class Dispatcher:
    def __init__(self, store: Store, endpoints: list[Endpoint]) -> None:
        self.store = store
        self.endpoints = endpoints

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def routes(server: Server) -> list[BaseRoute]:
    return []


OPENAPI_PATHS: dict[str, Any] = {}
