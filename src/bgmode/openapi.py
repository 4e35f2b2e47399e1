"""The OpenAPI document served at `/openapi.json`: the contract others test against.

Hand-written (the routes are plain Starlette and validation is hand-written in `protocol.py`,
`items.py`, `tools.py`), but built from the same constants the validators use, so limits and
enums cannot drift. `tests/test_openapi.py` runs schemathesis against a live server with this
document: every response must match it, schema-invalid requests must be refused, and nothing
may answer 5xx. Every operation has an `operationId`; `links` lead from a create to every
operation on the created response.
"""

from __future__ import annotations

from typing import Any

from bgmode import webhooks
from bgmode.events import TERMINAL_EVENT_TYPES
from bgmode.items import HOSTED_ITEM_TYPES, IMAGE_DETAILS, ROLES
from bgmode.protocol import (
    METADATA_MAX_KEY,
    METADATA_MAX_PAIRS,
    METADATA_MAX_VALUE,
    MIN_MAX_OUTPUT_TOKENS,
    PROMPT_CACHE_RETENTIONS,
    REASONING_EFFORTS,
    SERVICE_TIERS,
    TOP_LOGPROBS_MAX,
    TRUNCATIONS,
    UNSUPPORTED_PARAMS,
    VERBOSITIES,
)
from bgmode.records import Status
from bgmode.tools import HOSTED_TOOL_TYPES, INCLUDE_VALUES, TOOL_CHOICE_MODES

#: the largest sequence number a client may name (JSON-safe integers)
MAX_SEQUENCE = 2**53
_NAME = "^[A-Za-z0-9_-]{1,64}$"


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: list[str], properties: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, **kw}


_ERROR = _obj(
    ["error"],
    {
        "error": _obj(
            ["message", "type", "param", "code"],
            {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        )
    },
)
_ERROR_TEXT = {
    400: "Invalid request (the error names the `param`)",
    401: "Missing or wrong API key",
    404: "Not found (an unknown model or response, or another tenant's)",
    413: "Request body larger than --max-body-bytes",
    429: "Queue limit reached (Retry-After)",
    503: "Shutting down or the store is unreachable (Retry-After)",
}

# -- the Response object and the events ----------------------------------------------------------

_ITEM = {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}}
_USAGE = _obj(
    ["input_tokens", "output_tokens", "total_tokens", "input_tokens_details", "output_tokens_details"],
    {
        "input_tokens": {"type": "integer", "minimum": 0},
        "output_tokens": {"type": "integer", "minimum": 0},
        "total_tokens": {"type": "integer", "minimum": 0},
        "input_tokens_details": {"type": "object"},
        "output_tokens_details": {"type": "object"},
    },
)
_RESPONSE = _obj(
    ["id", "object", "created_at", "status", "model", "output", "background", "error", "metadata"],
    {
        "id": {"type": "string", "pattern": "^resp_"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {"enum": [s.value for s in Status]},
        "background": {"type": "boolean"},
        "completed_at": {"type": ["integer", "null"]},
        "model": {"type": "string"},
        "output": {"type": "array", "items": _ITEM},
        "usage": _nullable(_USAGE),
        "error": _nullable(_obj(["code", "message"], {"code": {"type": "string"}, "message": {"type": "string"}})),
        "incomplete_details": {"type": ["object", "null"]},
        "instructions": {"type": ["string", "null"]},
        "max_output_tokens": {"type": ["integer", "null"]},
        "max_tool_calls": {"type": ["integer", "null"]},
        "parallel_tool_calls": {"type": "boolean"},
        "previous_response_id": {"type": ["string", "null"]},
        "store": {"type": "boolean"},
        "temperature": {"type": ["number", "null"]},
        "top_p": {"type": ["number", "null"]},
        "tools": {"type": "array", "items": _ITEM},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    description="An OpenAI Response object.",
)
_EVENT_TYPES = sorted(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        *TERMINAL_EVENT_TYPES,
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_text.annotation.added",
        "response.refusal.delta",
        "response.refusal.done",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    }
)
_SSE = {
    "description": (
        "Server-sent events: each has `event:` (its type) and `data:` (its JSON, with `type` and "
        "`sequence_number`); a `responses` upstream's own hosted-tool events are relayed too. Idle "
        "streams get `: keep-alive` comments. The stream ends after the terminal event."
    ),
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "pattern": "^response\\.", "examples": _EVENT_TYPES},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}

# -- the create request --------------------------------------------------------------------------

_TEXT_PART = _obj(
    ["type", "text"], {"type": {"enum": ["input_text", "output_text", "text"]}, "text": {"type": "string"}}
)
_REFUSAL_PART = _obj(["type", "refusal"], {"type": {"const": "refusal"}, "refusal": {"type": "string"}})
_IMAGE_PART = _obj(
    ["type", "image_url"],
    {
        "type": {"const": "input_image"},
        "image_url": {"type": "string", "pattern": "^(https?://|data:image/)"},
        "detail": _nullable({"enum": list(IMAGE_DETAILS)}),
    },
    **{"not": {"required": ["file_id"]}},
    description="An image by URL or data: URL (uploaded file_ids are refused: bgmode has no Files API).",
)
_FILE_PART = _obj(
    ["type"],
    {
        "type": {"const": "input_file"},
        "file_data": {"type": ["string", "null"]},
        "file_url": {"type": ["string", "null"]},
        "filename": {"type": ["string", "null"]},
    },
    anyOf=[{"required": ["file_data"]}, {"required": ["file_url"]}],
    description="At least one of file_data and file_url must be a non-empty string.",
    **{"not": {"required": ["file_id"]}},
)
_USER_PARTS = {"type": "array", "items": {"anyOf": [_TEXT_PART, _IMAGE_PART, _FILE_PART]}}


def _message(roles: list[str], parts: dict[str, Any]) -> dict[str, Any]:
    return _obj(
        ["role", "content"],
        {
            "type": {"enum": ["message", None]},
            "role": {"enum": roles},
            "content": {"anyOf": [{"type": "string"}, parts]},
            "id": {"type": ["string", "null"]},
        },
    )


_INPUT_ITEM = {
    "anyOf": [
        _message([r for r in ROLES if r != "assistant"], _USER_PARTS),
        _message(["assistant"], {"type": "array", "items": {"anyOf": [_TEXT_PART, _REFUSAL_PART]}}),
        _obj(
            ["type", "call_id", "name", "arguments"],
            {
                "type": {"const": "function_call"},
                "call_id": {"type": "string", "minLength": 1},
                "name": {"type": "string", "minLength": 1},
                "arguments": {"type": "string"},
                "id": {"type": ["string", "null"]},
            },
        ),
        _obj(
            ["type", "call_id", "output"],
            {
                "type": {"const": "function_call_output"},
                "call_id": {"type": "string", "minLength": 1},
                "output": {"anyOf": [{"type": "string"}, _USER_PARTS]},
                "id": {"type": ["string", "null"]},
            },
        ),
        _obj(
            ["type"],
            {
                "type": {"const": "reasoning"},
                "id": {"type": ["string", "null"]},
                "summary": {"type": "array", "items": _obj(["text"], {"text": {"type": "string"}})},
                "content": _nullable({"type": "array", "items": _obj(["text"], {"text": {"type": "string"}})}),
                "encrypted_content": {"type": ["string", "null"]},
            },
            description="An `encrypted_content` starting with `bgm1:` must be one this server made.",
        ),
        _obj(["type"], {"type": {"enum": sorted(HOSTED_ITEM_TYPES)}}),
    ]
}
_JSON_SCHEMA = {"type": "object", "description": "A JSON Schema (checked against its metaschema)"}
_FUNCTION_TOOL = _obj(
    ["type", "name"],
    {
        "type": {"const": "function"},
        "name": {"type": "string", "pattern": _NAME},
        "description": {"type": ["string", "null"]},
        "parameters": _nullable(_JSON_SCHEMA),
        "strict": {"type": ["boolean", "null"]},
    },
    description="Function names must be unique within a request.",
)
_TOOL = {
    "anyOf": [
        _FUNCTION_TOOL,
        _obj(
            ["type", "function"], {"type": {"const": "function"}, "function": {**_FUNCTION_TOOL, "required": ["name"]}}
        ),
        _obj(
            ["type"], {"type": {"enum": sorted(HOSTED_TOOL_TYPES)}}, description="Only on `responses` upstream routes."
        ),
    ]
}
_TOOL_CHOICE = {
    "anyOf": [
        {"enum": list(TOOL_CHOICE_MODES)},
        _obj(["type", "name"], {"type": {"const": "function"}, "name": {"type": "string"}}),
        _obj(
            ["type", "mode", "tools"],
            {
                "type": {"const": "allowed_tools"},
                "mode": {"enum": ["auto", "required"]},
                "tools": {"type": "array", "items": _obj(["type"], {"type": {"type": "string"}})},
            },
        ),
        _obj(["type"], {"type": {"enum": sorted(HOSTED_TOOL_TYPES)}}),
        {"type": "null"},
    ],
    "description": "A named function must be one of the request's tools; 'required' needs tools.",
}
_FORMAT = {
    "anyOf": [
        _obj(["type"], {"type": {"enum": ["text", "json_object"]}}),
        _obj(
            ["type", "name", "schema"],
            {
                "type": {"const": "json_schema"},
                "name": {"type": "string", "pattern": _NAME},
                "schema": _JSON_SCHEMA,
                "strict": {"type": ["boolean", "null"]},
                "description": {"type": ["string", "null"]},
            },
        ),
        {"type": "null"},
    ]
}
_CREATE = _obj(
    ["model"],
    {
        "model": {"type": "string", "minLength": 1},
        "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": _INPUT_ITEM}, {"type": "null"}]},
        "instructions": {"type": ["string", "null"]},
        "background": {"type": ["boolean", "null"]},
        "stream": {"type": ["boolean", "null"]},
        "store": {"type": ["boolean", "null"]},
        "previous_response_id": {"type": ["string", "null"], "description": "A finished response of this API key."},
        "max_output_tokens": {"type": ["integer", "null"], "minimum": MIN_MAX_OUTPUT_TOKENS},
        "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
        "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "reasoning": _nullable(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "effort": _nullable({"enum": list(REASONING_EFFORTS)}),
                    "summary": _nullable({"enum": ["auto", "concise", "detailed"]}),
                    "generate_summary": _nullable({"enum": ["auto", "concise", "detailed"]}),
                },
            }
        ),
        "text": _nullable(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"format": _FORMAT, "verbosity": _nullable({"enum": list(VERBOSITIES)})},
            }
        ),
        "conversation": _nullable(
            {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    _obj(["id"], {"id": {"type": "string", "minLength": 1}}, additionalProperties=False),
                ],
                "description": "An existing conversation of this API key; not with previous_response_id.",
            }
        ),
        "service_tier": _nullable({"enum": list(SERVICE_TIERS)}),
        "truncation": _nullable({"enum": list(TRUNCATIONS)}),
        "user": {"type": ["string", "null"]},
        "safety_identifier": {"type": ["string", "null"], "maxLength": 64},
        "prompt_cache_key": {"type": ["string", "null"]},
        "prompt_cache_retention": _nullable({"enum": list(PROMPT_CACHE_RETENTIONS)}),
        "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": TOP_LOGPROBS_MAX},
        "stream_options": _nullable(
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {"include_obfuscation": {"type": ["boolean", "null"]}},
                "description": "Only with stream=true.",
            }
        ),
        **{name: {"type": "null", "description": f"Not supported: {why}."} for name, why in UNSUPPORTED_PARAMS.items()},
        "tools": _nullable({"type": "array", "items": _TOOL}),
        "tool_choice": _TOOL_CHOICE,
        "parallel_tool_calls": {"type": ["boolean", "null"]},
        "max_tool_calls": {"type": ["integer", "null"], "minimum": 1},
        "include": _nullable({"type": "array", "items": {"enum": list(INCLUDE_VALUES)}}),
        "metadata": _nullable(
            {
                "type": "object",
                "maxProperties": METADATA_MAX_PAIRS,
                "propertyNames": {"maxLength": METADATA_MAX_KEY},
                "additionalProperties": {"type": "string", "maxLength": METADATA_MAX_VALUE},
                "description": "With the simulated model, `sim_*` keys must hold valid knob values.",
            }
        ),
    },
    # background mode needs store
    **{
        "not": {
            "required": ["background", "store"],
            "properties": {"background": {"const": True}, "store": {"const": False}},
        }
    },
    additionalProperties=False,
    description="JSON nested at most 64 levels deep. Unknown parameters are a 400 `unknown_parameter`.",
)

# -- operations ----------------------------------------------------------------------------------

_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_LIST = _obj(
    ["object", "data", "first_id", "last_id", "has_more"],
    {
        "object": {"const": "list"},
        "data": {"type": "array", "items": _ITEM},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
        "has_more": {"type": "boolean"},
    },
)
_RESPONSE_LIST = _obj(
    ["object", "data", "first_id", "last_id", "has_more"],
    {
        "object": {"const": "list"},
        "data": {"type": "array", "items": _RESPONSE},
        "first_id": {"type": ["string", "null"]},
        "last_id": {"type": ["string", "null"]},
        "has_more": {"type": "boolean"},
    },
)
_LINKS = {
    name: {"operationId": op, "parameters": {"response_id": "$response.body#/id"}}
    for name, op in (
        ("GetResponse", "getResponse"),
        ("CancelResponse", "cancelResponse"),
        ("DeleteResponse", "deleteResponse"),
        ("ListInputItems", "listInputItems"),
    )
}


_METADATA = _nullable(
    {
        "type": "object",
        "maxProperties": METADATA_MAX_PAIRS,
        "propertyNames": {"maxLength": METADATA_MAX_KEY},
        "additionalProperties": {"type": "string", "maxLength": METADATA_MAX_VALUE},
    }
)
_CONVERSATION = _obj(
    ["id", "object", "created_at", "metadata"],
    {
        "id": {"type": "string", "pattern": "^conv_"},
        "object": {"const": "conversation"},
        "created_at": {"type": "integer"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
)
_CONV_ID = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_INCLUDE_QUERY = {
    "name": "include[]",
    "in": "query",
    "schema": {"type": "array", "items": {"enum": list(INCLUDE_VALUES)}},
    "style": "form",
    "explode": True,
}
_CONV_LINKS = {
    name: {"operationId": op, "parameters": {"conversation_id": "$response.body#/id"}}
    for name, op in (
        ("GetConversation", "getConversation"),
        ("UpdateConversation", "updateConversation"),
        ("ListConversationItems", "listConversationItems"),
        ("AddConversationItems", "addConversationItems"),
        ("DeleteConversation", "deleteConversation"),
    )
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": _ERROR_TEXT[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(
    schema: dict[str, Any], sse: bool = False, links: bool = False, link_set: dict[str, Any] | None = None
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if sse:
        content["text/event-stream"] = {"schema": _SSE}
    ok: dict[str, Any] = {"description": "OK", "content": content}
    if links:
        ok["links"] = link_set or _LINKS
    return {"200": ok}


def _auth(*codes: int) -> tuple[int, ...]:
    return (*codes, 401)


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "bgmode",
        "version": "0.2.0",
        "description": "OpenAI-compatible Responses API with durable background mode.",
    },
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}, {}],
    "paths": {
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "summary": "Create a response (background, stream, or both)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE}}},
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}}
                ],
                "responses": {**_ok(_RESPONSE, sse=True, links=True), **_errors(*_auth(400, 404, 413, 429, 503))},
            },
            "get": {
                "operationId": "listResponses",
                "summary": "List this API key's responses, newest first (a bgmode extension)",
                "description": (
                    "Each item is the Response object exactly as `GET /v1/responses/{response_id}` returns it. "
                    "Page with `after` = the previous page's `last_id` while `has_more`. Unknown or repeated "
                    "query parameters are a 400 naming them."
                ),
                "parameters": [
                    {"name": "status", "in": "query", "schema": {"enum": [s.value for s in Status]}},
                    {"name": "model", "in": "query", "schema": {"type": "string", "minLength": 1}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    {
                        "name": "after",
                        "in": "query",
                        "description": "A response id: list only those after it in `order` (exclusive).",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {**_ok(_RESPONSE_LIST), **_errors(*_auth(400))},
            },
        },
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "getResponse",
                "summary": "Retrieve a response, or stream its events (stream=true, starting_after=N)",
                "parameters": [
                    _ID,
                    {"name": "stream", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "starting_after",
                        "in": "query",
                        "description": "Only with stream=true; at most the response's last sequence_number.",
                        "schema": {"type": "integer", "minimum": -1, "maximum": MAX_SEQUENCE},
                    },
                ],
                "responses": {**_ok(_RESPONSE, sse=True), **_errors(*_auth(400, 404))},
            },
            "delete": {
                "operationId": "deleteResponse",
                "summary": "Delete a response and its events",
                "parameters": [_ID],
                "responses": {
                    **_ok(
                        _obj(
                            ["id", "object", "deleted"],
                            {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"const": True}},
                        )
                    ),
                    **_errors(*_auth(404)),
                },
            },
        },
        "/v1/responses/{response_id}/cancel": {
            "post": {
                "operationId": "cancelResponse",
                "summary": "Cancel a background response (idempotent)",
                "parameters": [_ID],
                "responses": {**_ok(_RESPONSE), **_errors(*_auth(400, 404))},
            }
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "operationId": "listInputItems",
                "summary": "List a response's input items",
                "parameters": [
                    _ID,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {**_ok(_LIST), **_errors(*_auth(400, 404))},
            }
        },
        "/v1/responses/input_tokens": {
            "post": {
                "operationId": "countInputTokens",
                "summary": "Count a create body's input tokens (the backend's own count, else an estimate)",
                "requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE}}},
                "responses": {
                    **_ok(
                        _obj(
                            ["object", "input_tokens"],
                            {
                                "object": {"const": "response.input_tokens"},
                                "input_tokens": {"type": "integer", "minimum": 0},
                            },
                        )
                    ),
                    **_errors(*_auth(400, 404, 413)),
                },
            }
        },
        "/v1/conversations": {
            "post": {
                "operationId": "createConversation",
                "summary": "Create a conversation",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": ["object", "null"],
                                "additionalProperties": False,
                                "properties": {
                                    "items": _nullable({"type": "array", "maxItems": 20, "items": _INPUT_ITEM}),
                                    "metadata": _METADATA,
                                },
                            }
                        }
                    },
                },
                "responses": {**_ok(_CONVERSATION, links=True, link_set=_CONV_LINKS), **_errors(*_auth(400, 413))},
            }
        },
        "/v1/conversations/{conversation_id}": {
            "get": {
                "operationId": "getConversation",
                "summary": "Retrieve a conversation",
                "parameters": [_CONV_ID],
                "responses": {**_ok(_CONVERSATION), **_errors(*_auth(404))},
            },
            "post": {
                "operationId": "updateConversation",
                "summary": "Replace a conversation's metadata",
                "parameters": [_CONV_ID],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _obj(["metadata"], {"metadata": _METADATA}, additionalProperties=False)
                        }
                    },
                },
                "responses": {**_ok(_CONVERSATION), **_errors(*_auth(400, 404))},
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Delete a conversation and its items",
                "parameters": [_CONV_ID],
                "responses": {
                    **_ok(
                        _obj(
                            ["id", "object", "deleted"],
                            {
                                "id": {"type": "string"},
                                "object": {"const": "conversation.deleted"},
                                "deleted": {"const": True},
                            },
                        )
                    ),
                    **_errors(*_auth(404)),
                },
            },
        },
        "/v1/conversations/{conversation_id}/items": {
            "get": {
                "operationId": "listConversationItems",
                "summary": "List a conversation's items",
                "parameters": [
                    _CONV_ID,
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    _INCLUDE_QUERY,
                ],
                "responses": {**_ok(_LIST), **_errors(*_auth(400, 404))},
            },
            "post": {
                "operationId": "addConversationItems",
                "summary": "Add items to a conversation",
                "parameters": [_CONV_ID, _INCLUDE_QUERY],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _obj(
                                ["items"],
                                {"items": {"type": "array", "maxItems": 20, "items": _INPUT_ITEM}},
                                additionalProperties=False,
                            )
                        }
                    },
                },
                "responses": {**_ok(_LIST), **_errors(*_auth(400, 404, 413))},
            },
        },
        "/v1/conversations/{conversation_id}/items/{item_id}": {
            "get": {
                "operationId": "getConversationItem",
                "summary": "Retrieve one item of a conversation",
                "parameters": [_CONV_ID, _ITEM_ID, _INCLUDE_QUERY],
                "responses": {**_ok(_ITEM), **_errors(*_auth(400, 404))},
            },
            "delete": {
                "operationId": "deleteConversationItem",
                "summary": "Delete one item of a conversation (returns the conversation)",
                "parameters": [_CONV_ID, _ITEM_ID],
                "responses": {**_ok(_CONVERSATION), **_errors(*_auth(404))},
            },
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "Models routed by this server",
                "responses": {
                    **_ok(_obj(["object", "data"], {"object": {"const": "list"}, "data": {"type": "array"}})),
                    **_errors(401),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of this process, and store-wide response counts",
                "description": "Needs a valid API key when keys are configured, unless the server runs with "
                "`--metrics-public`.",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The process is up",
                "security": [{}],
                "responses": _ok(_obj(["status"], {"status": {"const": "ok"}})),
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "The store is reachable",
                "security": [{}],
                "responses": {**_ok(_obj(["status"], {"status": {"const": "ready"}})), **_errors(503)},
            }
        },
    },
}

# the webhooks extension documents itself next to its routes
OPENAPI["paths"].update(webhooks.OPENAPI_PATHS)
