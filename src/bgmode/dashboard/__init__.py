"""The web dashboard at `/dashboard` and the `GET /v1/responses` listing it reads.

- `GET /v1/responses` (`listing.py`, documented in `openapi.py`): the caller's responses.
- `GET /dashboard`, `GET /dashboard/responses/{id}`: HTML shells (no data in them: the page's
  script fetches everything with the key the person typed, kept in `sessionStorage`).
- `GET /dashboard/static/{name}`: the script and stylesheet (read once at start).
- `GET /dashboard/api/overview`: counts, queue depth and workers as JSON (tenant-scoped
  counts; not part of the API, so not in the OpenAPI document).

Every dashboard page carries a strict Content-Security-Policy (`script-src 'self'`, no inline
code, `connect-src 'self'`); the script renders data with `textContent` only.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bgmode.dashboard.listing import list_responses
from bgmode.errors import NotFound
from bgmode.protocol import unknown_parameter
from bgmode.records import TERMINAL_VALUES

if TYPE_CHECKING:
    from bgmode.app import Server

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def _files(folder: str) -> dict[str, bytes]:
    root = resources.files("bgmode.dashboard") / folder
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file() and not f.name.startswith(".")}


def _no_query(request: Request) -> None:
    for name in request.query_params:
        raise unknown_parameter(name)


def routes(server: Server) -> list[BaseRoute]:
    templates = _files("templates")
    static = _files("static")

    def page(name: str) -> Response:
        return Response(templates[name], media_type="text/html; charset=utf-8", headers=HEADERS)

    async def listing(request: Request) -> Response:
        return await list_responses(server, request)

    async def list_page(request: Request) -> Response:
        return page("list.html")

    async def response_page(request: Request) -> Response:
        return page("response.html")

    async def static_file(request: Request) -> Response:
        name = request.path_params["name"]
        body = static.get(name)
        kind = _TYPES.get(name[name.rfind(".") :]) if "." in name else None
        if body is None or kind is None:
            raise NotFound(f"No dashboard file named '{name}'.", code="not_found")
        return Response(body, media_type=kind, headers=HEADERS)

    async def overview(request: Request) -> Response:
        tenant = server.tenant(request)
        _no_query(request)
        counts = await server.store.status_counts(tenant)
        queue_depth = await server.store.count_queued()
        owners = await server.store.lease_owners()
        now = time.time()
        body = {
            "object": "dashboard.overview",
            "counts": counts,
            "queued": counts["queued"],
            "in_progress": counts["in_progress"],
            "finished": sum(n for s, n in counts.items() if s in TERMINAL_VALUES),
            "queue_depth": queue_depth,
            "workers": [
                {"id": owner, "in_progress": n, "lease_expires_in": round(expires - now, 1)}
                for owner, n, expires in owners
            ],
            "this_worker": {"id": server.worker.worker_id, "slots": server.settings.workers},
            "now": now,
        }
        return Response(orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"})

    return [
        Route("/v1/responses", listing, methods=["GET"]),
        Route("/dashboard", list_page, methods=["GET"]),
        Route("/dashboard/", list_page, methods=["GET"]),
        Route("/dashboard/responses/{response_id}", response_page, methods=["GET"]),
        Route("/dashboard/static/{name}", static_file, methods=["GET"]),
        Route("/dashboard/api/overview", overview, methods=["GET"]),
    ]
