"""The wire format: create-request validation, the Response object, input items, ids.

Validation is hand-written rather than a pydantic model on purpose: it is on the hot path
of every create, and it must name the offending `param` with OpenAI's codes
(`invalid_type`, `integer_below_min_value`, `missing_required_parameter`, ...).
Input items are validated in `items.py`; tools, `tool_choice`, `text.format` and `include` in
`tools.py`. Unknown request fields are accepted and ignored, as lenient servers do, so newer
SDKs keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bgmode.errors import InvalidRequest
from bgmode.items import input_items
from bgmode.items import invalid_type as _invalid_type
from bgmode.tools import (
    parse_include,
    parse_max_tool_calls,
    parse_text_format,
    parse_tool_choice,
    parse_tools,
)

REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
VERBOSITIES = ("low", "medium", "high")
MIN_MAX_OUTPUT_TOKENS = 16
METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512


def _opt_bool(body: dict[str, Any], name: str) -> bool | None:
    v = body.get(name)
    if v is None or isinstance(v, bool):
        return v
    raise _invalid_type(name, "a boolean", v)


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    v = body.get(name)
    if v is None or isinstance(v, str):
        return v
    raise _invalid_type(name, "a string", v)


def _opt_number(body: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _invalid_type(name, "a number", v)
    if v < lo:
        raise InvalidRequest(
            f"Invalid '{name}': decimal below minimum value. Expected a value >= {lo}, but got {v} instead.",
            param=name,
            code="decimal_below_min_value",
        )
    if v > hi:
        raise InvalidRequest(
            f"Invalid '{name}': decimal above maximum value. Expected a value <= {hi}, but got {v} instead.",
            param=name,
            code="decimal_above_max_value",
        )
    return float(v)


def _enum(value: Any, param: str, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(
            f"Invalid value for '{param}': expected one of {', '.join(repr(a) for a in allowed)}, "
            f"but got {value!r} instead.",
            param=param,
            code="invalid_value",
        )
    return value


def _metadata(v: Any) -> dict[str, str]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _invalid_type("metadata", "an object", v)
    if len(v) > METADATA_MAX_PAIRS:
        raise InvalidRequest(
            f"Invalid 'metadata': too many properties. Expected at most {METADATA_MAX_PAIRS} properties, "
            f"but got {len(v)} instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for k, val in v.items():
        if len(k) > METADATA_MAX_KEY:
            raise InvalidRequest(
                f"Invalid 'metadata': key {k[:70]!r} is longer than {METADATA_MAX_KEY} characters.",
                param="metadata",
                code="invalid_value",
            )
        if not isinstance(val, str):
            raise _invalid_type(f"metadata.{k}", "a string", val)
        if len(val) > METADATA_MAX_VALUE:
            raise InvalidRequest(
                f"Invalid 'metadata.{k}': string too long. Expected a string with maximum length "
                f"{METADATA_MAX_VALUE}, but got a string with length {len(val)} instead.",
                param=f"metadata.{k}",
                code="string_above_max_length",
            )
    return dict(v)


def output_text(output: list[dict[str, Any]]) -> str:
    """The concatenated text of the message items in `output` (the SDK's `output_text`)."""
    return "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content", ())
        if part.get("type") == "output_text"
    )


@dataclass(slots=True)
class CreateRequest:
    """A validated `POST /v1/responses` body."""

    model: str
    input_items: list[dict[str, Any]]
    instructions: str | None
    background: bool
    stream: bool
    store: bool
    previous_response_id: str | None
    max_output_tokens: int | None
    temperature: float | None
    top_p: float | None
    reasoning: dict[str, Any] | None
    text: dict[str, Any]
    metadata: dict[str, str]
    raw: dict[str, Any] = field(repr=False)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None
    include: list[str] = field(default_factory=list)


def parse_create(body: Any) -> CreateRequest:
    """Validate a create body; raise `InvalidRequest` naming the offending param."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    if not model:
        raise InvalidRequest("Invalid 'model': empty string.", param="model", code="invalid_value")

    background = bool(_opt_bool(body, "background"))
    stream = bool(_opt_bool(body, "stream"))
    store_flag = _opt_bool(body, "store")
    store = True if store_flag is None else store_flag
    if background and not store:
        raise InvalidRequest(
            "Background mode requires store=true: a background response must be stored to be polled.",
            param="background",
            code="unsupported_parameter",
        )

    mot = body.get("max_output_tokens")
    if mot is not None:
        if isinstance(mot, bool) or not isinstance(mot, int):
            raise _invalid_type("max_output_tokens", "an integer", mot)
        if mot < MIN_MAX_OUTPUT_TOKENS:
            raise InvalidRequest(
                "Invalid 'max_output_tokens': integer below minimum value. "
                f"Expected a value >= {MIN_MAX_OUTPUT_TOKENS}, but got {mot} instead.",
                param="max_output_tokens",
                code="integer_below_min_value",
            )

    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _invalid_type("reasoning", "an object", reasoning)
        _enum(reasoning.get("effort"), "reasoning.effort", REASONING_EFFORTS)
        _enum(reasoning.get("summary"), "reasoning.summary", ("auto", "concise", "detailed"))
        reasoning = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}

    text = body.get("text")
    if text is None:
        text = {"format": {"type": "text"}, "verbosity": "medium"}
    elif not isinstance(text, dict):
        raise _invalid_type("text", "an object", text)
    else:
        verbosity = _enum(text.get("verbosity"), "text.verbosity", VERBOSITIES)
        text = {"format": parse_text_format(text.get("format")), "verbosity": verbosity or "medium"}

    tools = parse_tools(body.get("tools"))
    tool_choice = parse_tool_choice(body.get("tool_choice"), tools)
    if tool_choice == "required" and not tools:
        raise InvalidRequest(
            "Tool choice 'required' must be specified with 'tools' parameter.",
            param="tool_choice",
            code="invalid_value",
        )
    parallel = _opt_bool(body, "parallel_tool_calls")

    prev = _opt_str(body, "previous_response_id")
    return CreateRequest(
        model=model,
        input_items=input_items(body.get("input")),
        instructions=_opt_str(body, "instructions"),
        background=background,
        stream=stream,
        store=store,
        previous_response_id=prev or None,
        max_output_tokens=mot,
        temperature=_opt_number(body, "temperature", 0, 2),
        top_p=_opt_number(body, "top_p", 0, 1),
        reasoning=reasoning,
        text=text,
        metadata=_metadata(body.get("metadata")),
        raw=body,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=True if parallel is None else parallel,
        max_tool_calls=parse_max_tool_calls(body.get("max_tool_calls")),
        include=parse_include(body.get("include")),
    )


def response_object(
    req: CreateRequest, response_id: str, created_at: int, status: str, model: str | None = None
) -> dict[str, Any]:
    """The Response object as created (no output yet), with every field real bodies carry."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": req.background,
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "model": model or req.model,
        "output": [],
        "parallel_tool_calls": req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": req.reasoning or {"effort": None, "summary": None},
        "service_tier": "default",
        "store": req.store,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": req.text,
        "tool_choice": req.tool_choice,
        "tools": req.tools,
        "top_logprobs": 0,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": req.metadata,
    }


def usage_object(input_tokens: int, output_tokens: int, reasoning_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }
