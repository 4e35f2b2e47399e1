"""The model's context: what a create stores to run later, and the `ModelRequest` built from it.

A response row keeps `request` (how to run it) beside its `input_items` (what the client
sent, with ids, as `/input_items` lists them). `request["history"]` holds the items that came
before this request's input: with `previous_response_id`, the previous response's history,
its input and its output items (function calls and reasoning included), so a chain is
expanded once, at create time; with `conversation`, the conversation's items as they were
when the turn began (`request["conversation"]` names it, for the append at the finish). At run time the context is `history + input_items`, with
bgmode's own reasoning tokens opened and item ids and statuses dropped (a model needs
neither; an upstream would try to look ids up).
"""

from __future__ import annotations

from typing import Any

from bgmode.backends.base import ModelRequest, user_message
from bgmode.items import HOSTED_ITEM_TYPES
from bgmode.protocol import CreateRequest
from bgmode.records import ResponseRecord
from bgmode.sealing import Sealer

#: create-request fields not forwarded to pass-through backends as they are (the service
#: expands or consumes them)
NOT_FORWARDED = frozenset({"input", "instructions", "metadata", "model", "previous_response_id", "conversation"})


def run_request(req: CreateRequest, history: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The `request` a response row keeps to run it (only what differs from the defaults)."""
    request: dict[str, Any] = {
        "model": req.model,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "reasoning_effort": (req.reasoning or {}).get("effort"),
        "verbosity": req.text.get("verbosity"),
        "metadata": req.metadata,
        # what pass-through backends may forward; the input is in `input_items`
        "body": {k: v for k, v in req.raw.items() if k not in NOT_FORWARDED},
    }
    if history:
        request["history"] = history
    if req.conversation is not None:  # the turn's items are appended to it when it finishes
        request["conversation"] = req.conversation
    if req.reasoning and req.reasoning.get("summary"):
        request["reasoning_summary"] = req.reasoning["summary"]
    if req.tools:
        request["tools"] = req.tools
        request["tool_choice"] = req.tool_choice
        request["parallel_tool_calls"] = req.parallel_tool_calls
    if req.max_tool_calls is not None:
        request["max_tool_calls"] = req.max_tool_calls
    fmt = req.text.get("format") or {}
    if fmt.get("type") in ("json_schema", "json_object"):
        request["text_format"] = fmt
    if req.include:
        request["include"] = req.include
    return request


def following(prev: ResponseRecord) -> list[dict[str, Any]]:
    """The history a response continuing `prev` starts from (`previous_response_id`)."""
    r = prev.request
    if "context" in r:  # rows of bgmode before 0.2: [role, text] pairs, this input included
        items = [user_message(text, role) for role, text in r["context"]]
    else:
        items = [*r.get("history", ()), *prev.input_items]
    return [*items, *(prev.body.get("output") or ())]


def model_input(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items as a model sees them: no ids nor statuses (except on items only an upstream knows)."""
    out = []
    for it in items:
        kind = it.get("type")
        if kind in HOSTED_ITEM_TYPES or (kind == "reasoning" and it.get("encrypted_content")):
            out.append(it)
        else:
            out.append({k: v for k, v in it.items() if k != "id" and k != "status"})
    return out


def model_request(rec: ResponseRecord, sealer: Sealer | None) -> ModelRequest:
    r = rec.request
    if "context" in r:  # rows of bgmode before 0.2
        items = [user_message(text, role) for role, text in r["context"]]
    else:
        items = [*r.get("history", ()), *rec.input_items]
        if sealer is not None:
            items = sealer.open_items(items)
    return ModelRequest(
        model=r["model"],
        input=model_input(items),
        instructions=r.get("instructions"),
        max_output_tokens=r.get("max_output_tokens"),
        temperature=r.get("temperature"),
        top_p=r.get("top_p"),
        reasoning_effort=r.get("reasoning_effort"),
        reasoning_summary=r.get("reasoning_summary"),
        verbosity=r.get("verbosity"),
        metadata=r.get("metadata") or {},
        tools=r.get("tools") or [],
        tool_choice=r.get("tool_choice") or "auto",
        parallel_tool_calls=r.get("parallel_tool_calls", True),
        max_tool_calls=r.get("max_tool_calls"),
        text_format=r.get("text_format"),
        include=r.get("include") or [],
        body=r.get("body") or {},
    )
