"""A deterministic JSON value that validates against a JSON Schema (for the simulated model).

Covers what tool parameters and structured-output schemas use in practice (pydantic's and the
Agents SDK's output included): `type` (or a list of types), `properties`/`required`, `enum`,
`const`, `default`, `anyOf`/`oneOf`/`allOf`, `$ref` into `$defs`/`definitions`, `items`/
`prefixItems`, `minItems`, string `minLength`/`maxLength`/`format`, number bounds and
`multipleOf`. Every property is filled in, so `strict` schemas (all properties required,
no additional ones) are met.
"""

from __future__ import annotations

import math
from typing import Any

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}


def example(schema: Any, root: Any = None, depth: int = 0, name: str = "value") -> Any:
    """A value valid against `schema` (`root` resolves `$ref`s; `name` seeds strings)."""
    root = schema if root is None else root
    if depth > 32 or not isinstance(schema, dict):
        return None if schema is False else {}
    if "$ref" in schema:
        target = _resolve(root, schema["$ref"])
        return example(target, root, depth + 1, name)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example((non_null or options)[0], root, depth + 1, name)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                part = _resolve(root, part["$ref"]) if "$ref" in part else part
                for k, v in part.items():
                    if k == "properties" and isinstance(v, dict):
                        merged.setdefault("properties", {}).update(v)
                    elif k == "required" and isinstance(v, list):
                        merged.setdefault("required", []).extend(v)
                    else:
                        merged.setdefault(k, v)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return example({**merged, **rest}, root, depth + 1, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        return {k: example(v, root, depth + 1, k) for k, v in props.items()}
    if kind == "array":
        prefix = schema.get("prefixItems")
        if not isinstance(prefix, list):
            prefix = []
        out = [example(p, root, depth + 1, name) for p in prefix]
        n = max(int(schema.get("minItems") or 0), 1 if not prefix else 0)
        items = schema.get("items", {})
        while len(out) < n:
            out.append(example(items, root, depth + 1, name))
        max_items = schema.get("maxItems")
        return out[:max_items] if isinstance(max_items, int) else out
    if kind == "string":
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        text = f"example {name}"
        lo, hi = int(schema.get("minLength") or 0), schema.get("maxLength")
        while len(text) < lo:
            text += "x"
        return text[:hi] if isinstance(hi, int) else text
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return {}


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    lo = schema.get("minimum")
    ex_lo = schema.get("exclusiveMinimum")
    hi = schema.get("maximum")
    ex_hi = schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    value: float = 1
    if isinstance(lo, int | float):
        value = max(value, lo) if not isinstance(hi, int | float) or hi >= 1 else lo
    if isinstance(ex_lo, int | float) and value <= ex_lo:
        value = ex_lo + 1
    if isinstance(hi, int | float) and value > hi:
        value = hi
    if isinstance(ex_hi, int | float) and value >= ex_hi:
        value = ex_hi - 1
    if isinstance(step, int | float) and step > 0:
        value = math.ceil(value / step) * step
    return int(math.ceil(value)) if integer else value


def _resolve(root: Any, ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node
