"""`GET /v1/responses` (a bgmode extension): the caller's responses over HTTP, through the official
`openai` SDK (its cursor pages walk the listing by themselves), on SQLite and PostgreSQL.

Filters (status, model, both), both orders, pagination that sees every response exactly once,
items identical to what `GET /v1/responses/{id}` returns, tenants that never see each other's
responses, and strict validation (400 naming the parameter, 401 without a key)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from openai import OpenAI
from openai.pagination import SyncCursorPage
from openai.types.responses import Response

from tests.serving import BgmodeServer

pytest_plugins = ("tests.pg",)

KEYS = "key-alice:alice,key-bob:bob"
TERMINAL = {"completed", "failed", "cancelled", "incomplete"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, make_server: type[BgmodeServer]) -> BgmodeServer:
    store = None if request.param == "sqlite" else str(request.getfixturevalue("pg_database_url"))
    return make_server(store, args=["--workers", "4", "--api-keys", KEYS]).start()


def sdk(server: BgmodeServer, key: str) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def wait_terminal(client: OpenAI, rid: str, timeout: float = 30) -> Response:
    deadline = time.monotonic() + timeout
    while True:
        r = client.responses.retrieve(rid)
        if r.status in TERMINAL:
            return r
        assert time.monotonic() < deadline, f"{rid} still {r.status}"
        time.sleep(0.05)  # polling for a condition with a deadline


def wait_status(client: OpenAI, rid: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while client.responses.retrieve(rid).status != status:
        assert time.monotonic() < deadline, f"{rid} never {status}"
        time.sleep(0.05)  # polling for a condition with a deadline


def listing(client: OpenAI, **params: Any) -> SyncCursorPage[Response]:
    return client.get_api_list("/responses", model=Response, page=SyncCursorPage[Response], options={"params": params})


def raw_list(server: BgmodeServer, key: str | None, params: dict[str, Any] | list[tuple[str, str]]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{server.base_url}/responses", params=params, headers=headers, timeout=10)


def make_mix(client: OpenAI) -> dict[str, list[str]]:
    """Responses of every finished status on two models; returns ids by status (creation order)."""
    by_status: dict[str, list[str]] = {s: [] for s in TERMINAL}
    made: list[tuple[str, str]] = []
    for i in range(9):
        model = "sim-a" if i % 3 else "sim-b"
        kind = ("completed", "failed", "incomplete", "cancelled")[i % 4]
        metadata = {"sim_output_tokens": "20", "sim_token_delay_ms": "0"}
        kw: dict[str, Any] = {}
        if kind == "failed":
            metadata["sim_fail_after_tokens"] = "2"
        elif kind == "incomplete":
            kw["max_output_tokens"] = 16
        elif kind == "cancelled":
            metadata["sim_token_delay_ms"] = "5000"
        r = client.responses.create(model=model, input=f"job {i}", background=True, metadata=metadata, **kw)
        if kind == "cancelled":
            wait_status(client, r.id, "in_progress")
            assert client.responses.cancel(r.id).status == "cancelled"
        made.append((r.id, kind))
    for rid, kind in made:
        assert wait_terminal(client, rid).status == kind
        by_status[kind].append(rid)
    return {"all": [rid for rid, _ in made], **by_status}


def test_filters_orders_pages_and_tenants(server: BgmodeServer) -> None:
    alice, bob = sdk(server, "key-alice"), sdk(server, "key-bob")
    ids = make_mix(alice)
    # a foreground (stored) response is listed too
    fg = alice.responses.create(model="sim-b", input="now", metadata={"sim_output_tokens": "3"})
    everything = [*ids["all"], fg.id]

    # newest first by default; each item is exactly what a retrieve returns
    page = listing(alice, limit=100)
    assert [r.id for r in page.data] == everything[::-1]
    assert page.has_more is False
    for item in page.data:
        assert item.to_dict() == alice.responses.retrieve(item.id).to_dict()
    raw = raw_list(server, "key-alice", {"limit": 3}).json()
    assert raw["object"] == "list" and [r["id"] for r in raw["data"]] == everything[::-1][:3]
    assert raw["first_id"] == everything[-1] and raw["last_id"] == everything[-3] and raw["has_more"] is True
    assert [r["id"] for r in raw_list(server, "key-alice", {"order": "asc"}).json()["data"]] == everything

    # the SDK's cursor pages walk the whole listing, every response exactly once, both orders
    for order, expected in (("desc", everything[::-1]), ("asc", everything)):
        for limit in (1, 2, 3, 10):
            walked = [r.id for r in listing(alice, limit=limit, order=order)]
            assert walked == expected, (order, limit)
    # a page exactly as large as what is left: has_more false, and an empty page after the last id
    last = raw_list(server, "key-alice", {"limit": len(everything)}).json()
    assert last["has_more"] is False and len(last["data"]) == len(everything)
    tail = raw_list(server, "key-alice", {"after": everything[0]}).json()
    assert tail == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}

    # filters
    for status in TERMINAL:
        got = [r.id for r in listing(alice, status=status, order="asc")]
        assert got == [i for i in everything if i in ids[status] or (status == "completed" and i == fg.id)], status
    assert [r.id for r in listing(alice, status="queued")] == []
    sim_a = [r.id for r in listing(alice, model="sim-a", order="asc", limit=2)]
    assert sim_a == [rid for n, rid in enumerate(ids["all"]) if n % 3]
    both = [r.id for r in listing(alice, model="sim-b", status="completed", order="asc")]
    assert both == [rid for n, rid in enumerate(ids["all"]) if n % 3 == 0 and rid in ids["completed"]] + [fg.id]
    assert [r.id for r in listing(alice, model="no-such-model")] == []
    # a live filter: a queued/in-progress response shows under its current status
    slow = alice.responses.create(model="sim-a", input="slow", background=True, metadata={"sim_token_delay_ms": "5000"})
    wait_status(alice, slow.id, "in_progress")
    assert [r.id for r in listing(alice, status="in_progress")] == [slow.id]
    alice.responses.cancel(slow.id)
    assert [r.id for r in listing(alice, status="in_progress")] == []

    # tenants: bob sees only his own, alice never sees bob's
    assert [r.id for r in listing(bob)] == []
    mine = bob.responses.create(model="sim-a", input="bob's", background=True)
    wait_terminal(bob, mine.id)
    assert [r.id for r in listing(bob)] == [mine.id]
    assert mine.id not in [r.id for r in listing(alice, limit=100)]
    assert [r.id for r in listing(bob, model="sim-a", status="completed")] == [mine.id]

    # no key, a wrong key: 401
    for key in (None, "key-mallory"):
        resp = raw_list(server, key, {})
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")


BAD = [
    ({"limit": "0"}, "limit", "invalid_value"),
    ({"limit": "101"}, "limit", "invalid_value"),
    ({"limit": "-1"}, "limit", "invalid_value"),
    ({"limit": "ten"}, "limit", "invalid_type"),
    ({"limit": "1.5"}, "limit", "invalid_type"),
    ({"order": "newest"}, "order", "invalid_value"),
    ({"order": "ASC"}, "order", "invalid_value"),
    ({"status": "done"}, "status", "invalid_value"),
    ({"status": ""}, "status", "invalid_value"),
    ({"model": ""}, "model", "invalid_value"),
    ({"before": "resp_x"}, "before", "unknown_parameter"),
    ({"include[]": "usage"}, "include[]", "unknown_parameter"),
    ([("status", "completed"), ("status", "failed")], "status", "invalid_value"),
    ([("limit", "2"), ("limit", "3")], "limit", "invalid_value"),
]


def test_bad_queries_are_400s_naming_the_parameter(make_server: type[BgmodeServer]) -> None:
    server = make_server(args=["--api-keys", KEYS]).start()
    for params, param, code in BAD:
        resp = raw_list(server, "key-alice", params)
        assert resp.status_code == 400, (params, resp.text)
        err = resp.json()["error"]
        assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error"), params
        assert err["message"]
    # the key is checked before the query
    assert raw_list(server, None, {"limit": "0"}).status_code == 401
    # the SDK surfaces the 400 as BadRequestError naming the parameter
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        listing(sdk(server, "key-alice"), order="sideways")
    assert info.value.param == "order"
    # an empty `after` is no cursor (as input_items); any id works as a cursor, existing or not
    assert raw_list(server, "key-alice", {"after": ""}).status_code == 200
    assert raw_list(server, "key-alice", {"after": "resp_0"}).json()["data"] == []
