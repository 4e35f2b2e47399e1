# ruff: noqa: F811  (the contract fixtures are imported from tests.test_store)
"""The store contract for conversations, on every store (SQLite and PostgreSQL): items in
order with unique ids, pages, the turn lock, and the append that rides a finishing write."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bgmode.ids import new_id
from bgmode.records import Status
from bgmode.store import Store, Write, WriteResult
from bgmode.store.base import ConversationAppend, ConversationLocked, ConversationRecord
from tests.test_store import W1, W2, connect, create, event, opened, running, store, store_url  # noqa: F401

pytest_plugins = ("tests.pg",)


def msg(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": text}],
    }


async def conversation(store: Store, tenant: str = "t1", texts: tuple[str, ...] = ()) -> str:
    cid = new_id("conv")
    await store.conversation_create(ConversationRecord(cid, tenant, time.time(), {"k": "v"}), [msg(t) for t in texts])
    return cid


async def texts(store: Store, cid: str) -> list[str]:
    got = await store.conversation_items(cid, None, 100, "asc")
    assert got is not None
    return [it["content"][0]["text"] for it in got[0]]


async def test_create_get_update_delete(store: Store) -> None:
    cid = await conversation(store, texts=("a", "b"))
    conv = await store.conversation_get(cid)
    assert conv is not None and conv.tenant == "t1" and conv.metadata == {"k": "v"}
    updated = await store.conversation_update(cid, {"x": "y"})
    assert updated is not None and updated.metadata == {"x": "y"}
    assert (await store.conversation_get(cid)).metadata == {"x": "y"}  # type: ignore[union-attr]
    assert await texts(store, cid) == ["a", "b"]
    assert await store.conversation_delete(cid)
    assert await store.conversation_get(cid) is None
    assert await store.conversation_items(cid, None, 10, "asc") is None
    assert not await store.conversation_delete(cid)
    assert await store.conversation_update(cid, {}) is None
    assert await store.conversation_add(cid, [msg("c")]) is None


async def test_items_page_both_ways_with_a_cursor(store: Store) -> None:
    cid = await conversation(store, texts=tuple("abcde"))
    page = await store.conversation_items(cid, None, 2, "asc")
    assert page is not None
    items, more = page
    assert [i["content"][0]["text"] for i in items] == ["a", "b"] and more
    page = await store.conversation_items(cid, items[-1]["id"], 2, "asc")
    assert page is not None and [i["content"][0]["text"] for i in page[0]] == ["c", "d"] and page[1]
    page = await store.conversation_items(cid, page[0][-1]["id"], 2, "asc")
    assert page is not None and [i["content"][0]["text"] for i in page[0]] == ["e"] and not page[1]
    desc = await store.conversation_items(cid, None, 3, "desc")
    assert desc is not None and [i["content"][0]["text"] for i in desc[0]] == ["e", "d", "c"] and desc[1]
    rest = await store.conversation_items(cid, desc[0][-1]["id"], 3, "desc")
    assert rest is not None and [i["content"][0]["text"] for i in rest[0]] == ["b", "a"] and not rest[1]
    assert await store.conversation_items(cid, "msg_nope", 3, "asc") is None


async def test_ids_stay_unique_and_items_can_be_deleted(store: Store) -> None:
    cid = await conversation(store)
    added = await store.conversation_add(cid, [msg("a", "msg_same"), msg("b", "msg_same")])
    assert added is not None and added[0]["id"] == "msg_same" and added[1]["id"].startswith("msg_")
    again = await store.conversation_add(cid, [msg("c", "msg_same")])
    assert again is not None and again[0]["id"] not in ("msg_same", added[1]["id"])
    assert (await store.conversation_item(cid, "msg_same"))["content"][0]["text"] == "a"  # type: ignore[index]
    assert await store.conversation_item_delete(cid, "msg_same")
    assert not await store.conversation_item_delete(cid, "msg_same")
    assert await store.conversation_item(cid, "msg_same") is None
    assert await texts(store, cid) == ["b", "c"]


async def test_begin_locks_and_returns_the_context(store: Store) -> None:
    cid = await conversation(store, texts=("a",))
    assert await store.conversation_begin(cid, "t2", "resp_x", time.time() + 60) is None  # another tenant
    assert await store.conversation_begin("conv_nope", "t1", "resp_x", time.time() + 60) is None
    ctx = await store.conversation_begin(cid, "t1", "resp_first", time.time() + 60)
    assert ctx is not None and [i["content"][0]["text"] for i in ctx] == ["a"]
    # not created yet, within its hold: locked
    with pytest.raises(ConversationLocked):
        await store.conversation_begin(cid, "t1", "resp_second", time.time() + 60)
    # the turn ends (foreground): its items appended, the lock released
    await store.conversation_end(cid, "resp_first", [msg("b")])
    ctx = await store.conversation_begin(cid, "t1", "resp_second", time.time() + 60)
    assert ctx is not None and [i["content"][0]["text"] for i in ctx] == ["a", "b"]
    # an ended turn of another response does not release this one
    await store.conversation_end(cid, "resp_first", [])
    with pytest.raises(ConversationLocked):
        await store.conversation_begin(cid, "t1", "resp_third", time.time() + 60)


async def test_a_lock_whose_response_never_appeared_lapses(store: Store) -> None:
    cid = await conversation(store)
    assert await store.conversation_begin(cid, "t1", "resp_gone", time.time() - 1) is not None
    assert await store.conversation_begin(cid, "t1", "resp_next", time.time() + 60) is not None


async def test_a_stored_response_holds_the_lock_until_it_finishes(store: Store) -> None:
    cid = await conversation(store)
    rec = await running(store)
    # begun with a hold already over: the response row, still running, holds the lock
    assert await store.conversation_begin(cid, "t1", rec.id, time.time() - 1) is not None
    with pytest.raises(ConversationLocked):
        await store.conversation_begin(cid, "t1", "resp_other", time.time() + 60)
    res = await store.write(
        W1,
        [
            Write(
                rec.id,
                [event(2, "response.completed")],
                {"id": rec.id, "status": "completed"},
                Status.COMPLETED.value,
                conversation=ConversationAppend(cid, [msg("in"), msg("out")]),
            )
        ],
    )
    assert res == [WriteResult.OK]
    assert await texts(store, cid) == ["in", "out"]
    assert await store.conversation_begin(cid, "t1", "resp_other", time.time() + 60) is not None


async def test_a_refused_finishing_write_appends_nothing(store: Store) -> None:
    cid = await conversation(store)
    rec = await running(store)
    await store.conversation_begin(cid, "t1", rec.id, time.time() + 60)
    append = ConversationAppend(cid, [msg("late")])
    fenced = await store.write(W2, [Write(rec.id, [event(2)], None, Status.COMPLETED.value, conversation=append)])
    assert fenced == [WriteResult.FENCED]
    await store.request_cancel(rec.id)
    refused = await store.write(W1, [Write(rec.id, [event(2)], None, Status.COMPLETED.value, conversation=append)])
    assert refused == [WriteResult.CANCEL_REQUESTED]
    assert await texts(store, cid) == []
    with pytest.raises(ConversationLocked):
        await store.conversation_begin(cid, "t1", "resp_other", time.time() + 60)
    ok = await store.write(
        W1,
        [
            Write(
                rec.id,
                [event(2, "response.failed")],
                None,
                Status.CANCELLED.value,
                force=True,
                conversation=ConversationAppend(cid, []),
            )
        ],
    )
    assert ok == [WriteResult.OK]
    assert await texts(store, cid) == []
    assert await store.conversation_begin(cid, "t1", "resp_other", time.time() + 60) is not None


async def test_a_finish_on_a_deleted_conversation_still_finishes(store: Store) -> None:
    cid = await conversation(store)
    rec = await running(store)
    await store.conversation_begin(cid, "t1", rec.id, time.time() + 60)
    await store.conversation_delete(cid)
    res = await store.write(
        W1,
        [Write(rec.id, [event(2, "response.completed")], None, "completed", conversation=ConversationAppend(cid, []))],
    )
    assert res == [WriteResult.OK]
    assert (await store.get(rec.id)).status == "completed"  # type: ignore[union-attr]


async def test_turns_from_two_connections_never_overlap(connect: Callable[[], Awaitable[Store]]) -> None:
    a, b = await connect(), await connect()
    cid = await conversation(a)
    got: list[str] = []
    for s, rid in ((a, "resp_a"), (b, "resp_b")):
        try:
            await s.conversation_begin(cid, "t1", rid, time.time() + 60)
            got.append(rid)
        except ConversationLocked:
            pass
    assert got == ["resp_a"]


async def test_sweep_removes_idle_conversations(store: Store) -> None:
    old = await conversation(store, texts=("a",))
    assert await store.conversation_sweep(time.time() - 3600, 100) == 0
    assert await store.conversation_sweep(time.time() + 1, 100) >= 1
    assert await store.conversation_get(old) is None
    assert await store.conversation_items(old, None, 10, "asc") is None


async def test_a_queued_response_that_gets_cancelled_frees_its_conversation(store: Store) -> None:
    cid = await conversation(store)
    rec = await create(store)
    await store.conversation_begin(cid, "t1", rec.id, time.time() - 1)
    with pytest.raises(ConversationLocked):
        await store.conversation_begin(cid, "t1", "resp_other", time.time() + 60)
    assert await store.cancel_queued(rec.id, {"id": rec.id}, [event(2, "response.failed")])
    assert await store.conversation_begin(cid, "t1", "resp_other", time.time() + 60) is not None
