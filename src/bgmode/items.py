"""Input items: validation and normalisation of a create request's `input`.

Every item is checked for the fields OpenAI requires and normalised to the shapes the model
contract documents (`backends/base.py`): messages always carry a list of content parts,
text parts of assistant messages are `output_text`, of the others `input_text`. Items keep
the `id` the client sent, or get one (the `/input_items` listing needs ids). Every output
item bgmode produces is accepted back as input.

Errors name the offending `param` (`input[2].content[0].image_url`), as OpenAI does.
"""

from __future__ import annotations

from typing import Any

from bgmode.errors import InvalidRequest
from bgmode.ids import new_id

ROLES = ("user", "assistant", "system", "developer")
IMAGE_DETAILS = ("low", "high", "auto", "original")

#: output item types of hosted tools: accepted back as input, verbatim (a `responses`
#: upstream uses them; other backends skip them)
HOSTED_ITEM_TYPES = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "code_interpreter_call",
        "image_generation_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "custom_tool_call",
        "custom_tool_call_output",
        "tool_search_call",
        "tool_search_output",
        "compaction",
    }
)


def invalid_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def invalid_value(param: str, value: Any, allowed: tuple[str, ...]) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for '{param}': expected one of {', '.join(repr(a) for a in allowed)}, "
        f"but got {value!r} instead.",
        param=param,
        code="invalid_value",
    )


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def req_str(obj: dict[str, Any], key: str, param: str, *, empty: bool = True) -> str:
    v = obj.get(key)
    if v is None:
        raise missing(f"{param}.{key}")
    if not isinstance(v, str):
        raise invalid_type(f"{param}.{key}", "a string", v)
    if not empty and not v:
        raise InvalidRequest(f"Invalid '{param}.{key}': empty string.", param=f"{param}.{key}", code="invalid_value")
    return v


def opt_str(obj: dict[str, Any], key: str, param: str) -> str | None:
    v = obj.get(key)
    if v is None or isinstance(v, str):
        return v
    raise invalid_type(f"{param}.{key}", "a string", v)


def input_items(v: Any) -> list[dict[str, Any]]:
    """`input` → normalised items with ids (a string is one user message)."""
    if v is None:
        return []
    if isinstance(v, str):
        return [message_item("user", [{"type": "input_text", "text": v}])]
    if not isinstance(v, list):
        raise invalid_type("input", "a string or an array", v)
    return [input_item(raw, f"input[{i}]") for i, raw in enumerate(v)]


def message_item(role: str, content: list[dict[str, Any]], item_id: str | None = None) -> dict[str, Any]:
    return {"id": item_id or new_id("msg"), "type": "message", "role": role, "status": "completed", "content": content}


def input_item(raw: Any, p: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise invalid_type(p, "an object", raw)
    kind = raw.get("type")
    if kind is None or kind == "message":
        return _message(raw, p)
    if not isinstance(kind, str):
        raise invalid_type(f"{p}.type", "a string", kind)
    item_id = opt_str(raw, "id", p)
    if kind == "function_call":
        call = {
            "id": item_id or new_id("fc"),
            "type": "function_call",
            "call_id": req_str(raw, "call_id", p, empty=False),
            "name": req_str(raw, "name", p, empty=False),
            "arguments": req_str(raw, "arguments", p),
            "status": "completed",
        }
        return call
    if kind == "function_call_output":
        output = raw.get("output")
        if output is None:
            raise missing(f"{p}.output")
        if isinstance(output, list):
            output = [_part(part, f"{p}.output[{j}]", "user") for j, part in enumerate(output)]
        elif not isinstance(output, str):
            raise invalid_type(f"{p}.output", "a string or an array", output)
        return {
            "id": item_id or new_id("fco"),
            "type": "function_call_output",
            "call_id": req_str(raw, "call_id", p, empty=False),
            "output": output,
            "status": "completed",
        }
    if kind == "reasoning":
        summary = raw.get("summary", [])
        if not isinstance(summary, list):
            raise invalid_type(f"{p}.summary", "an array", summary)
        content = raw.get("content")
        if content is None:
            content = []
        if not isinstance(content, list):
            raise invalid_type(f"{p}.content", "an array", content)
        for j, part in enumerate([*summary, *content]):
            where = f"{p}.summary[{j}]" if j < len(summary) else f"{p}.content[{j - len(summary)}]"
            if not isinstance(part, dict):
                raise invalid_type(where, "an object", part)
            req_str(part, "text", where)
        out: dict[str, Any] = {
            "id": item_id or new_id("rs"),
            "type": "reasoning",
            "summary": summary,
            "content": content,
        }
        enc = opt_str(raw, "encrypted_content", p)
        if enc:
            out["encrypted_content"] = enc
        return out
    if kind in HOSTED_ITEM_TYPES:
        return dict(raw)
    if kind == "item_reference":
        raise InvalidRequest(
            "Input items of type 'item_reference' are not supported by bgmode; send the item itself "
            "(or continue with previous_response_id).",
            param=f"{p}.type",
            code="unsupported_value",
        )
    raise InvalidRequest(
        f"Invalid value for '{p}.type': unknown input item type {kind!r}.", param=f"{p}.type", code="invalid_value"
    )


def _message(raw: dict[str, Any], p: str) -> dict[str, Any]:
    role = raw.get("role")
    if role is None:
        raise missing(f"{p}.role")
    if role not in ROLES:
        raise invalid_value(f"{p}.role", role, ROLES)
    content = raw.get("content")
    parts: list[dict[str, Any]]
    if isinstance(content, str):
        parts = [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    elif isinstance(content, list):
        parts = [_part(part, f"{p}.content[{j}]", role) for j, part in enumerate(content)]
    elif content is None:
        raise missing(f"{p}.content")
    else:
        raise invalid_type(f"{p}.content", "a string or an array", content)
    if role == "assistant":
        for part in parts:
            if part["type"] == "output_text":
                part.setdefault("annotations", [])
    return message_item(role, parts, opt_str(raw, "id", p))


_TEXT = ("input_text", "output_text", "text")


def _part(part: Any, pp: str, role: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise invalid_type(pp, "an object", part)
    ptype = part.get("type")
    if ptype in _TEXT:
        text = req_str(part, "text", pp)
        if role == "assistant":
            return {"type": "output_text", "text": text, "annotations": part.get("annotations") or []}
        return {"type": "input_text", "text": text}
    if ptype == "refusal":
        if role != "assistant":
            raise InvalidRequest(
                f"Invalid value for '{pp}.type': 'refusal' parts are only allowed in assistant messages.",
                param=f"{pp}.type",
                code="invalid_value",
            )
        return {"type": "refusal", "refusal": req_str(part, "refusal", pp)}
    if ptype == "input_image":
        if role == "assistant":
            raise _assistant_only_output(pp, ptype)
        if part.get("file_id") is not None:
            raise _no_files_api(f"{pp}.file_id")
        url = req_str(part, "image_url", pp, empty=False)
        if not url.startswith(("https://", "http://", "data:image/")):
            raise InvalidRequest(
                f"Invalid '{pp}.image_url': expected an http(s) URL or a 'data:image/...' URL.",
                param=f"{pp}.image_url",
                code="invalid_image_url",
            )
        detail = part.get("detail")
        if detail is None:
            detail = "auto"
        elif detail not in IMAGE_DETAILS:
            raise invalid_value(f"{pp}.detail", detail, IMAGE_DETAILS)
        return {"type": "input_image", "image_url": url, "detail": detail}
    if ptype == "input_file":
        if role == "assistant":
            raise _assistant_only_output(pp, ptype)
        if part.get("file_id") is not None:
            raise _no_files_api(f"{pp}.file_id")
        file: dict[str, Any] = {"type": "input_file"}
        data = opt_str(part, "file_data", pp)
        file_url = opt_str(part, "file_url", pp)
        if not data and not file_url:
            raise InvalidRequest(
                f"Missing required parameter: '{pp}.file_data' or '{pp}.file_url'.",
                param=f"{pp}.file_data",
                code="missing_required_parameter",
            )
        if data:
            file["file_data"] = data
        if file_url:
            file["file_url"] = file_url
        filename = opt_str(part, "filename", pp)
        if filename is not None:
            file["filename"] = filename
        return file
    if ptype is None:
        raise missing(f"{pp}.type")
    raise InvalidRequest(
        f"Invalid value for '{pp}.type': unsupported content part type {ptype!r}.",
        param=f"{pp}.type",
        code="invalid_value",
    )


def _assistant_only_output(pp: str, ptype: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for '{pp}.type': {ptype!r}. Supported values are: 'output_text' and 'refusal'.",
        param=f"{pp}.type",
        code="invalid_value",
    )


def _no_files_api(param: str) -> InvalidRequest:
    return InvalidRequest(
        "Uploaded files (file_id) are not supported by bgmode: it has no Files API. "
        "Send the content inline (a data: URL in image_url or file_data) or as a URL.",
        param=param,
        code="unsupported_parameter",
    )


def count_media(items: list[dict[str, Any]]) -> tuple[int, int]:
    """How many images and files the items carry (message parts and tool outputs)."""
    images = files = 0
    for it in items:
        parts = it.get("content") if it.get("type") == "message" else it.get("output")
        if not isinstance(parts, list):
            continue
        for part in parts:
            if isinstance(part, dict):
                images += part.get("type") == "input_image"
                files += part.get("type") == "input_file"
    return images, files
