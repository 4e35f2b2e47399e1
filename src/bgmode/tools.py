"""Validation of what shapes the model's output: `tools`, `tool_choice`, `text.format`, `include`.

Function tools are validated and normalised to the flat Responses shape (the Chat shape
`{"type": "function", "function": {...}}` that `openai.pydantic_function_tool` makes is
accepted and flattened). Hosted tools (`web_search`, `mcp`, ...) are kept as sent: only a
`responses` upstream can run them, which the service checks once the route is known.
JSON schemas (tool parameters, `text.format.schema`) are checked against their metaschema.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from bgmode.errors import InvalidRequest
from bgmode.items import invalid_type, invalid_value, missing, opt_str, req_str

#: tool types only a `responses` upstream can run (OpenAI's hosted tools)
HOSTED_TOOL_TYPES = frozenset(
    {
        "file_search",
        "computer",
        "computer_use",
        "computer_use_preview",
        "web_search",
        "web_search_2025_08_26",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "mcp",
        "code_interpreter",
        "programmatic_tool_calling",
        "image_generation",
        "local_shell",
        "shell",
        "custom",
        "namespace",
        "tool_search",
        "apply_patch",
    }
)
TOOL_CHOICE_MODES = ("none", "auto", "required")
INCLUDE_VALUES = (
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
)
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise invalid_type(param, "an object", schema)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise InvalidRequest(
            f"Invalid schema for '{param}': {exc.message}" + (f" (at '{where}')" if where else "") + ".",
            param=param,
            code="invalid_json_schema",
        ) from None
    except RecursionError:
        raise InvalidRequest(
            f"Invalid schema for '{param}': nested too deeply.", param=param, code="invalid_json_schema"
        ) from None
    return schema


def _name(obj: dict[str, Any], p: str) -> str:
    name = req_str(obj, "name", p)
    if not _NAME.match(name):
        raise InvalidRequest(
            f"Invalid '{p}.name': string does not match pattern. Expected a string that matches the "
            f"pattern '^[a-zA-Z0-9_-]+$' with at most 64 characters, but got {name[:80]!r} instead.",
            param=f"{p}.name",
            code="invalid_value",
        )
    return name


def parse_tools(v: Any) -> list[dict[str, Any]]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise invalid_type("tools", "an array", v)
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, raw in enumerate(v):
        p = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise invalid_type(p, "an object", raw)
        kind = raw.get("type")
        if kind is None:
            raise missing(f"{p}.type")
        if kind == "function":
            if isinstance(raw.get("function"), dict) and "name" not in raw:  # the Chat shape
                raw = {"type": "function", **raw["function"]}
            name = _name(raw, p)
            if name in names:
                raise InvalidRequest(
                    f"Invalid 'tools': duplicate function name {name!r}.", param=f"{p}.name", code="invalid_value"
                )
            names.add(name)
            params = raw.get("parameters")
            if params is not None:
                check_schema(params, f"{p}.parameters")
            strict = raw.get("strict")
            if strict is not None and not isinstance(strict, bool):
                raise invalid_type(f"{p}.strict", "a boolean", strict)
            tool = {
                "type": "function",
                "name": name,
                "description": opt_str(raw, "description", p),
                "parameters": params,
                "strict": strict,
            }
            out.append(tool)
        elif isinstance(kind, str) and kind in HOSTED_TOOL_TYPES:
            out.append(dict(raw))
        elif not isinstance(kind, str):
            raise invalid_type(f"{p}.type", "a string", kind)
        else:
            raise InvalidRequest(
                f"Invalid value for '{p}.type': unknown tool type {kind!r}.", param=f"{p}.type", code="invalid_value"
            )
    return out


def parse_tool_choice(v: Any, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    if v is None:
        return "auto"
    if isinstance(v, str):
        if v not in TOOL_CHOICE_MODES:
            raise invalid_value("tool_choice", v, TOOL_CHOICE_MODES)
        return v
    if not isinstance(v, dict):
        raise invalid_type("tool_choice", "a string or an object", v)
    kind = v.get("type")
    functions = {t["name"] for t in tools if t["type"] == "function"}
    if kind == "function":
        name = req_str(v, "name", "tool_choice")
        if name not in functions:
            raise InvalidRequest(
                f"Invalid value for 'tool_choice': function {name!r} is not among the request's tools.",
                param="tool_choice.name",
                code="invalid_value",
            )
        return {"type": "function", "name": name}
    if kind == "allowed_tools":
        mode = v.get("mode")
        if mode not in ("auto", "required"):
            raise invalid_value("tool_choice.mode", mode, ("auto", "required"))
        allowed = v.get("tools")
        if not isinstance(allowed, list):
            raise invalid_type("tool_choice.tools", "an array", allowed)
        for j, t in enumerate(allowed):
            if not isinstance(t, dict) or not isinstance(t.get("type"), str):
                raise invalid_type(f"tool_choice.tools[{j}]", "an object with a type", t)
            if t["type"] == "function" and t.get("name") not in functions:
                raise InvalidRequest(
                    f"Invalid value for 'tool_choice.tools[{j}]': function {t.get('name')!r} is not among the "
                    "request's tools.",
                    param=f"tool_choice.tools[{j}].name",
                    code="invalid_value",
                )
        return {"type": "allowed_tools", "mode": mode, "tools": allowed}
    if isinstance(kind, str):
        return dict(v)  # a hosted tool: checked against the route by the service
    raise missing("tool_choice.type")


def parse_text_format(fmt: Any) -> dict[str, Any]:
    if fmt is None:
        return {"type": "text"}
    if not isinstance(fmt, dict):
        raise invalid_type("text.format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "text":
        return {"type": "text"}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name = _name(fmt, "text.format")
        if "schema" not in fmt:
            raise missing("text.format.schema")
        schema = check_schema(fmt["schema"], "text.format.schema")
        strict = fmt.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise invalid_type("text.format.strict", "a boolean", strict)
        out = {"type": "json_schema", "name": name, "schema": schema, "strict": strict}
        description = opt_str(fmt, "description", "text.format")
        if description is not None:
            out["description"] = description
        return out
    if kind is None:
        raise missing("text.format.type")
    raise invalid_value("text.format.type", kind, ("text", "json_object", "json_schema"))


def parse_include(v: Any) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise invalid_type("include", "an array", v)
    for i, x in enumerate(v):
        if x not in INCLUDE_VALUES:
            raise invalid_value(f"include[{i}]", x, INCLUDE_VALUES)
    return list(v)


def parse_max_tool_calls(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise invalid_type("max_tool_calls", "an integer", v)
    if v < 1:
        raise InvalidRequest(
            f"Invalid 'max_tool_calls': integer below minimum value. Expected a value >= 1, but got {v} instead.",
            param="max_tool_calls",
            code="integer_below_min_value",
        )
    return v


def hosted_tools(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any]) -> list[tuple[str, str]]:
    """(param, type) of every hosted tool in the request (only a `responses` upstream runs them)."""
    out = [(f"tools[{i}].type", str(t["type"])) for i, t in enumerate(tools) if t["type"] != "function"]
    if isinstance(tool_choice, dict) and tool_choice.get("type") not in ("function", "allowed_tools"):
        out.append(("tool_choice.type", str(tool_choice.get("type"))))
    return out
