"""`GET /v1/responses`: the caller's responses, newest first, with a cursor (a bgmode extension).

Validated as strictly as `GET /v1/responses/{id}/input_items` (same `limit`/`order`/`after`
rules and the same list shape), plus `status` and `model` filters; any other query parameter,
or one given twice, is a 400 naming it. The items are the stored Response objects spliced
into the list as bytes (`ResponseRecord.body_json`, status patched as a poll does): nothing is
decoded or re-encoded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from bgmode.errors import InvalidRequest
from bgmode.protocol import unknown_parameter
from bgmode.records import ResponseRecord, Status
from bgmode.service import with_status

if TYPE_CHECKING:
    from bgmode.app import Server

#: the query parameters `GET /v1/responses` takes
PARAMS = ("status", "model", "limit", "after", "order")
STATUSES = tuple(s.value for s in Status)
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def _one(request: Request) -> dict[str, str]:
    """The query as a dict: unknown or repeated parameters are a 400 naming them."""
    q = request.query_params
    out: dict[str, str] = {}
    for name, value in q.multi_items():
        if name not in PARAMS:
            raise unknown_parameter(name)
        if name in out:
            raise InvalidRequest(
                f"Invalid '{name}': the parameter was given more than once.", param=name, code="invalid_value"
            )
        out[name] = value
    return out


def _body(rec: ResponseRecord) -> bytes:
    raw = rec.body_json if rec.body_json is not None else orjson.dumps(rec.body)
    return with_status(raw, rec.status)


def page_json(records: list[ResponseRecord], limit: int) -> bytes:
    """`{"object":"list","data":[...],"first_id","last_id","has_more"}` from up to `limit + 1`
    records, the Response objects spliced in as stored."""
    page = records[:limit]
    head = orjson.dumps(
        {
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(records) > limit,
        }
    )
    return b"".join((b'{"object":"list","data":[', b",".join(_body(r) for r in page), b"],", head[1:]))


async def list_responses(server: Server, request: Request) -> Response:
    # imported here: `bgmode.app` imports this package
    from bgmode.app import _int_param

    tenant = server.tenant(request)
    q = _one(request)
    limit = _int_param(q.get("limit"), "limit", 1, MAX_LIMIT)
    if limit is None:
        limit = DEFAULT_LIMIT
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            f"Invalid 'order': expected 'asc' or 'desc', but got {order!r} instead.",
            param="order",
            code="invalid_value",
        )
    status = q.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(
            f"Invalid 'status': expected one of {', '.join(STATUSES)}, but got {status[:40]!r} instead.",
            param="status",
            code="invalid_value",
        )
    model = q.get("model")
    if model is not None and not model:
        raise InvalidRequest(
            "Invalid 'model': expected a model name, but got an empty string.", param="model", code="invalid_value"
        )
    records = await server.store.list_responses(
        tenant, status=status, model=model, after=q.get("after") or None, order=order, limit=limit + 1
    )
    return Response(page_json(records, limit), media_type="application/json")
