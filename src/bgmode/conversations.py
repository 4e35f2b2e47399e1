"""The Conversations API: durable conversation state, as OpenAI's `/v1/conversations`.

A conversation is an ordered list of items (messages, function calls and outputs, reasoning,
hosted-tool items) owned by one tenant. Clients add items directly (`POST .../items`, as the
Agents SDK's `OpenAIConversationsSession` does), or run a response with `conversation`: its
items are the model's context, and when it finishes its input and output items are appended
in the same transaction as its terminal write (see `worker.turn_items` for what a failed or
cancelled turn appends: nothing). One turn at a time: a second `conversation` create while a
turn is queued or running is a 400 `conversation_locked` (see `Store.conversation_begin`).

Shapes, limits and errors follow OpenAI's (`../shared/reference/responses-items.md` §7):
at most 20 items per create or add, `limit` 1-100 (default 20), `order` default `desc`,
cursor `after` an item id, `include[]` values from the create enum (bgmode always returns
every stored field, so they change nothing). Deleting a conversation deletes its items too
(OpenAI keeps them, unreachable; bgmode has no other way to reach them either).
"""

from __future__ import annotations

import time
from typing import Any

from bgmode.errors import InvalidRequest, NotFound
from bgmode.ids import new_id
from bgmode.items import input_item, invalid_type, missing
from bgmode.protocol import _metadata, unknown_parameter
from bgmode.store.base import ConversationRecord, Store
from bgmode.tools import INCLUDE_VALUES

MAX_ITEMS_PER_REQUEST = 20
#: item types a conversation lists with a `status` (OpenAI's ConversationItem requires one)
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})


class ConversationNotFound(NotFound):
    def __init__(self, conversation_id: str, param: str | None = None) -> None:
        super().__init__(f"Conversation with id '{conversation_id}' not found.", param=param)


class ItemNotFound(NotFound):
    def __init__(self, item_id: str) -> None:
        super().__init__(f"Item with id '{item_id}' not found.")


def conversation_object(conv: ConversationRecord) -> dict[str, Any]:
    return {"id": conv.id, "object": "conversation", "created_at": int(conv.created_at), "metadata": conv.metadata}


def parse_items(v: Any, required: bool) -> list[dict[str, Any]]:
    """`items` of a create or an add: at most 20 input items, normalised, with ids."""
    if v is None:
        if required:
            raise missing("items")
        return []
    if not isinstance(v, list):
        raise invalid_type("items", "an array", v)
    if len(v) > MAX_ITEMS_PER_REQUEST:
        raise InvalidRequest(
            f"Invalid 'items': array too long. Expected an array with maximum length {MAX_ITEMS_PER_REQUEST}, "
            f"but got an array with length {len(v)} instead.",
            param="items",
            code="array_above_max_length",
        )
    return [as_conversation_item(input_item(raw, f"items[{i}]")) for i, raw in enumerate(v)]


def as_conversation_item(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("type") in _WITH_STATUS and "status" not in item:
        item = {**item, "status": "completed"}
    return item


def parse_include(values: list[str]) -> None:
    for i, x in enumerate(values):
        if x not in INCLUDE_VALUES:
            raise InvalidRequest(
                f"Invalid value for 'include[{i}]': expected one of {', '.join(repr(a) for a in INCLUDE_VALUES)}, "
                f"but got {x!r} instead.",
                param=f"include[{i}]",
                code="invalid_value",
            )


def _body(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    for k in body:
        if k not in allowed:
            raise unknown_parameter(k)
    return body


def _page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


class Conversations:
    """The Conversations API's use cases (no HTTP, no SQL), tenant-scoped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def _get(self, conversation_id: str, tenant: str) -> ConversationRecord:
        conv = await self.store.conversation_get(conversation_id)
        if conv is None or conv.tenant != tenant:
            raise ConversationNotFound(conversation_id)
        return conv

    async def create(self, body: Any, tenant: str) -> dict[str, Any]:
        b = _body(body, frozenset({"items", "metadata"}))
        items = parse_items(b.get("items"), required=False)
        conv = ConversationRecord(new_id("conv"), tenant, time.time(), _metadata(b.get("metadata")))
        await self.store.conversation_create(conv, items)
        return conversation_object(conv)

    async def get(self, conversation_id: str, tenant: str) -> dict[str, Any]:
        return conversation_object(await self._get(conversation_id, tenant))

    async def update(self, conversation_id: str, body: Any, tenant: str) -> dict[str, Any]:
        b = _body(body, frozenset({"metadata"}))
        if "metadata" not in b:
            raise missing("metadata")
        metadata = _metadata(b["metadata"])
        await self._get(conversation_id, tenant)
        conv = await self.store.conversation_update(conversation_id, metadata)
        if conv is None:
            raise ConversationNotFound(conversation_id)
        return conversation_object(conv)

    async def delete(self, conversation_id: str, tenant: str) -> dict[str, Any]:
        await self._get(conversation_id, tenant)
        await self.store.conversation_delete(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(self, conversation_id: str, body: Any, tenant: str, include: list[str]) -> dict[str, Any]:
        parse_include(include)
        b = _body(body, frozenset({"items"}))
        items = parse_items(b.get("items"), required=True)
        await self._get(conversation_id, tenant)
        stored = await self.store.conversation_add(conversation_id, items)
        if stored is None:
            raise ConversationNotFound(conversation_id)
        return _page(stored, False)

    async def list_items(
        self, conversation_id: str, tenant: str, limit: int, order: str, after: str | None, include: list[str]
    ) -> dict[str, Any]:
        parse_include(include)
        await self._get(conversation_id, tenant)
        got = await self.store.conversation_items(conversation_id, after, limit, order)
        if got is None:
            if after is not None and await self.store.conversation_get(conversation_id) is not None:
                raise InvalidRequest(f"No item with id '{after}' in this conversation.", param="after")
            raise ConversationNotFound(conversation_id)
        return _page(*got)

    async def get_item(self, conversation_id: str, item_id: str, tenant: str, include: list[str]) -> dict[str, Any]:
        parse_include(include)
        await self._get(conversation_id, tenant)
        item = await self.store.conversation_item(conversation_id, item_id)
        if item is None:
            raise ItemNotFound(item_id)
        return item

    async def delete_item(self, conversation_id: str, item_id: str, tenant: str) -> dict[str, Any]:
        conv = await self._get(conversation_id, tenant)
        if not await self.store.conversation_item_delete(conversation_id, item_id):
            raise ItemNotFound(item_id)
        return conversation_object(conv)


__all__ = ["Conversations", "ConversationNotFound", "conversation_object"]
