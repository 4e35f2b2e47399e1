"""The wire format: create-request validation, the Response object, input items, ids.

Validation is hand-written rather than a pydantic model on purpose: it is on the hot path
of every create, and it must name the offending `param` with OpenAI's codes
(`invalid_type`, `integer_below_min_value`, `missing_required_parameter`, ...).
Input items are validated in `items.py`; tools, `tool_choice`, `text.format` and `include` in
`tools.py`. No parameter is silently ignored: an unknown top-level key (or an unknown key
inside `reasoning`, `text`, `stream_options`) is a 400 `unknown_parameter`, as OpenAI answers;
parameters bgmode cannot honour (`prompt` templates, ...) are a 400 `unsupported_parameter`
when set; every other one is honoured or echoed with the meaning the README's table gives.
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
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
TRUNCATIONS = ("auto", "disabled")
PROMPT_CACHE_RETENTIONS = ("in_memory", "24h")
SAFETY_IDENTIFIER_MAX = 64
TOP_LOGPROBS_MAX = 20
#: every create parameter OpenAI's spec has (anything else is a 400 `unknown_parameter`)
CREATE_PARAMS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "previous_response_id",
        "conversation",
        "background",
        "stream",
        "stream_options",
        "store",
        "include",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "parallel_tool_calls",
        "reasoning",
        "service_tier",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt",
        "prompt_cache_options",
        "context_management",
        "moderation",
        "image",
        "access_programs",
        "background_options",
    }
)
#: spec parameters bgmode does not implement: a 400 `unsupported_parameter` unless null
UNSUPPORTED_PARAMS = {
    "prompt": "stored prompt templates do not exist in bgmode; send `instructions` and `input` instead",
    "prompt_cache_options": "bgmode has no prompt cache to configure",
    "context_management": "bgmode does not compact contexts",
    "moderation": "bgmode runs no moderation model",
    "image": "bgmode does not compress image contexts",
    "access_programs": "bgmode has no access programs",
    "background_options": "bgmode has no completion windows or continuations",
}
REASONING_KEYS = frozenset({"effort", "summary", "generate_summary"})
TEXT_KEYS = frozenset({"format", "verbosity"})
STREAM_OPTIONS_KEYS = frozenset({"include_obfuscation"})
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


def unknown_parameter(name: str) -> InvalidRequest:
    return InvalidRequest(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")


def _known_keys(obj: dict[str, Any], allowed: frozenset[str], prefix: str) -> None:
    for k in obj:
        if k not in allowed:
            raise unknown_parameter(f"{prefix}{k}")


def _max_len(value: str | None, name: str, limit: int) -> str | None:
    if value is not None and len(value) > limit:
        raise InvalidRequest(
            f"Invalid '{name}': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(value)} instead.",
            param=name,
            code="string_above_max_length",
        )
    return value


def parse_conversation(v: Any) -> str | None:
    """`conversation`: a conversation id, or `{"id": ...}`."""
    if v is None:
        return None
    if isinstance(v, dict):
        _known_keys(v, frozenset({"id"}), "conversation.")
        cid = v.get("id")
        if cid is None:
            raise InvalidRequest(
                "Missing required parameter: 'conversation.id'.",
                param="conversation.id",
                code="missing_required_parameter",
            )
        if not isinstance(cid, str):
            raise _invalid_type("conversation.id", "a string", cid)
        v = cid
    elif not isinstance(v, str):
        raise _invalid_type("conversation", "a string or an object", v)
    if not v:
        raise InvalidRequest("Invalid 'conversation': empty string.", param="conversation", code="invalid_value")
    return str(v)


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
    conversation: str | None = None
    #: echoed as sent (OpenAI's default when absent); forwarded to a Responses upstream
    service_tier: str = "auto"
    truncation: str = "disabled"
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str = "in_memory"
    top_logprobs: int = 0


#: a body with only these parameters skips the checks of all the others (the hot create)
_PLAIN_PARAMS = frozenset({"model", "input", "background", "stream", "store"})


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
    for k in body:
        if k not in CREATE_PARAMS:
            raise unknown_parameter(k)
        if k in UNSUPPORTED_PARAMS and body[k] is not None:
            raise InvalidRequest(
                f"Unsupported parameter: '{k}': {UNSUPPORTED_PARAMS[k]}.", param=k, code="unsupported_parameter"
            )

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

    if body.keys() <= _PLAIN_PARAMS:  # every other parameter absent: each at its default
        return CreateRequest(
            model=model,
            input_items=input_items(body.get("input")),
            instructions=None,
            background=background,
            stream=stream,
            store=store,
            previous_response_id=None,
            max_output_tokens=None,
            temperature=None,
            top_p=None,
            reasoning=None,
            text={"format": {"type": "text"}, "verbosity": "medium"},
            metadata={},
            raw=body,
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
        _known_keys(reasoning, REASONING_KEYS, "reasoning.")
        _enum(reasoning.get("effort"), "reasoning.effort", REASONING_EFFORTS)
        _enum(reasoning.get("summary"), "reasoning.summary", ("auto", "concise", "detailed"))
        # `generate_summary`: the deprecated name of `summary`
        legacy = _enum(reasoning.get("generate_summary"), "reasoning.generate_summary", ("auto", "concise", "detailed"))
        reasoning = {"effort": reasoning.get("effort"), "summary": reasoning.get("summary") or legacy}

    text = body.get("text")
    if text is None:
        text = {"format": {"type": "text"}, "verbosity": "medium"}
    elif not isinstance(text, dict):
        raise _invalid_type("text", "an object", text)
    else:
        _known_keys(text, TEXT_KEYS, "text.")
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
    conversation = parse_conversation(body.get("conversation"))
    if conversation is not None and prev:
        raise InvalidRequest(
            "Mutually exclusive parameters. Ensure you are only providing one of: 'previous_response_id' or "
            "'conversation'.",
            code="mutually_exclusive_parameters",
        )
    stream_options = body.get("stream_options")
    if stream_options is not None:
        if not isinstance(stream_options, dict):
            raise _invalid_type("stream_options", "an object", stream_options)
        _known_keys(stream_options, STREAM_OPTIONS_KEYS, "stream_options.")
        _opt_bool(stream_options, "include_obfuscation")
        if not stream:
            raise InvalidRequest(
                "'stream_options' is only allowed when 'stream' is true.", param="stream_options", code="invalid_value"
            )
    top_logprobs = body.get("top_logprobs")
    if top_logprobs is not None:
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int):
            raise _invalid_type("top_logprobs", "an integer", top_logprobs)
        if not 0 <= top_logprobs <= TOP_LOGPROBS_MAX:
            raise InvalidRequest(
                f"Invalid 'top_logprobs': integer {'below minimum' if top_logprobs < 0 else 'above maximum'} value. "
                f"Expected a value {'>= 0' if top_logprobs < 0 else f'<= {TOP_LOGPROBS_MAX}'}, "
                f"but got {top_logprobs} instead.",
                param="top_logprobs",
                code="integer_below_min_value" if top_logprobs < 0 else "integer_above_max_value",
            )
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
        conversation=conversation,
        service_tier=_enum(body.get("service_tier"), "service_tier", SERVICE_TIERS) or "auto",
        truncation=_enum(body.get("truncation"), "truncation", TRUNCATIONS) or "disabled",
        user=_opt_str(body, "user"),
        safety_identifier=_max_len(_opt_str(body, "safety_identifier"), "safety_identifier", SAFETY_IDENTIFIER_MAX),
        prompt_cache_key=_opt_str(body, "prompt_cache_key"),
        prompt_cache_retention=_enum(
            body.get("prompt_cache_retention"), "prompt_cache_retention", PROMPT_CACHE_RETENTIONS
        )
        or "in_memory",
        top_logprobs=top_logprobs or 0,
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
        "conversation": {"id": req.conversation} if req.conversation else None,
        "error": None,
        "frequency_penalty": 0.0,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "model": model or req.model,
        "output": [],
        "parallel_tool_calls": req.parallel_tool_calls,
        "presence_penalty": 0.0,
        "previous_response_id": req.previous_response_id,
        "prompt": None,
        "prompt_cache_key": req.prompt_cache_key,
        "prompt_cache_retention": req.prompt_cache_retention,
        "reasoning": req.reasoning or {"effort": None, "summary": None},
        "safety_identifier": req.safety_identifier,
        "service_tier": req.service_tier,
        "store": req.store,
        "temperature": 1.0 if req.temperature is None else req.temperature,
        "text": req.text,
        "tool_choice": req.tool_choice,
        "tools": req.tools,
        "top_logprobs": req.top_logprobs,
        "top_p": 1.0 if req.top_p is None else req.top_p,
        "truncation": req.truncation,
        "usage": None,
        "user": req.user,
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
