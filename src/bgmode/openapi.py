"""The OpenAPI document served at `/openapi.json` (hand-written: the routes are plain Starlette)."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_RESPONSE = {
    "type": "object",
    "description": "An OpenAI Response object (see OpenAI's API reference).",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "created_at": {"type": "integer"},
        "status": {"enum": ["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]},
        "background": {"type": "boolean"},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object"}},
        "usage": {"type": ["object", "null"]},
        "error": {"type": ["object", "null"]},
        "incomplete_details": {"type": ["object", "null"]},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "OpenAI error envelope", "content": {"application/json": {"schema": _ERROR}}}
        for c in codes
    }


def _ok(schema: dict[str, Any], sse: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if sse:
        content["text/event-stream"] = {"schema": {"type": "string", "description": "SSE frames"}}
    return {"200": {"description": "OK", "content": content}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "bgmode",
        "version": "0.1.0",
        "description": "OpenAI-compatible Responses API with durable background mode.",
    },
    "paths": {
        "/v1/responses": {
            "post": {
                "summary": "Create a response (background, stream, or both)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["model"],
                                "properties": {
                                    "model": {"type": "string"},
                                    "input": {"type": ["string", "array"]},
                                    "instructions": {"type": ["string", "null"]},
                                    "background": {"type": "boolean"},
                                    "stream": {"type": "boolean"},
                                    "store": {"type": "boolean"},
                                    "previous_response_id": {"type": ["string", "null"]},
                                    "max_output_tokens": {"type": "integer", "minimum": 16},
                                    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                                    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
                                    "reasoning": {"type": "object"},
                                    "text": {"type": "object"},
                                    "metadata": {"type": "object", "maxProperties": 16},
                                },
                            }
                        }
                    },
                },
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {**_ok(_RESPONSE, sse=True), **_errors(400, 401, 404, 413, 429)},
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "summary": "Retrieve a response, or stream its events (stream=true, starting_after=N)",
                "parameters": [
                    _ID,
                    {"name": "stream", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "starting_after", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {**_ok(_RESPONSE, sse=True), **_errors(400, 401, 404)},
            },
            "delete": {
                "summary": "Delete a response and its events",
                "parameters": [_ID],
                "responses": {**_ok({"type": "object"}), **_errors(401, 404)},
            },
        },
        "/v1/responses/{response_id}/cancel": {
            "post": {
                "summary": "Cancel a background response (idempotent)",
                "parameters": [_ID],
                "responses": {**_ok(_RESPONSE), **_errors(400, 401, 404)},
            }
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "summary": "List a response's input items",
                "parameters": [
                    _ID,
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {**_ok({"type": "object"}), **_errors(400, 401, 404)},
            }
        },
        "/v1/models": {"get": {"summary": "Models routed by this server", "responses": _ok({"type": "object"})}},
        "/healthz": {"get": {"summary": "The process is up", "responses": _ok({"type": "object"})}},
        "/readyz": {"get": {"summary": "The store is reachable", "responses": _ok({"type": "object"})}},
    },
}
