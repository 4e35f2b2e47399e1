"""The web dashboard at `/dashboard` and the `GET /v1/responses` listing it reads.

SEAM (filled in by the dashboard work): `routes` adds the pages, static files and the listing
route (documented in `openapi.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from bgmode.app import Server


def routes(server: Server) -> list[BaseRoute]:
    return []
