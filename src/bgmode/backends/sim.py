"""The built-in simulated model: deterministic, offline, with knobs for tests and demos.

A test double that lives in the package on purpose: `bgmode serve` with no upstream serves
every model name with it. Per-request knobs come in `metadata` (string values):

- `sim_output_tokens`: how many output tokens (default 40, scaled by `text.verbosity`:
  low x0.5, high x2; at most 1,000,000);
- `sim_token_delay_ms`: pause before each token (default 5; 0 to 60,000);
  (values out of range are a 400 naming the key at create: `Backend.check`)
- `sim_fail_after_tokens`: fail with `server_error` after that many tokens;
- `sim_refusal`: refuse with this text (a `refusal` content part) instead of answering.

What it answers:

- `reasoning.effort` adds a reasoning item first (low 8, medium 16, high 32, xhigh 64 tokens
  of reasoning text); `reasoning.summary` adds a summary part to it;
- **function tools** (with `tool_choice` not "none", and the newest input item not a
  `function_call_output`): it calls the named function (`tool_choice: {"type": "function"}`),
  the first tool (`"required"`, or `allowed_tools` with mode "required"), or (`"auto"`) each
  tool whose name appears in the newest user text (only the first when `parallel_tool_calls`
  is false; at most `max_tool_calls`), with arguments that validate against the tool's JSON
  schema, streamed in pieces; the response then ends `completed` with the `function_call`
  items and no text;
- after `function_call_output` items it answers in text that quotes each output:
  `get_weather returned "sunny".`;
- `text.format` `json_schema`: JSON that validates against the schema (deterministic);
  `json_object`: `{"answer": "..."}`;
- images and files in the input: the text starts with "I see 2 images and 1 file.";
- otherwise deterministic words (the opening ones echo `instructions`).

`max_output_tokens` caps reasoning, arguments and text together and ends `incomplete`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from bgmode.backends.base import (
    Backend,
    BackendError,
    BackendEvent,
    Finish,
    ModelRequest,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolArguments,
    ToolCall,
    Usage,
    estimate_input_tokens,
    item_text,
)
from bgmode.backends.sim_schema import example
from bgmode.items import count_media

_WORDS = (
    "the background job keeps running while you poll stream resume or cancel it and every event "
    "is stored durably so a dropped connection loses nothing model output arrives token by token "
    "with sequence numbers from zero a worker holds a lease renews it and finishes exactly once"
).split()

_REASONING_TOKENS = {"none": 0, "minimal": 4, "low": 8, "medium": 16, "high": 32, "xhigh": 64}
_VERBOSITY_SCALE = {"low": 0.5, "medium": 1.0, "high": 2.0}
DEFAULT_OUTPUT_TOKENS = 40
DEFAULT_TOKEN_DELAY_MS = 5.0
MAX_OUTPUT_TOKENS = 1_000_000
MAX_TOKEN_DELAY_MS = 60_000.0
#: characters of a JSON document (arguments, structured output) per streamed delta
_JSON_CHUNK = 8


@dataclass(frozen=True, slots=True)
class Knobs:
    output_tokens: int | None
    delay: float
    fail_after: int | None


def knobs(metadata: dict[str, str]) -> Knobs:
    """The `sim_*` knobs; `ValueError(param, message)` for a value out of range."""
    raw = metadata.get("sim_token_delay_ms")
    delay = DEFAULT_TOKEN_DELAY_MS
    if raw is not None:
        try:
            delay = float(raw)
        except ValueError:
            delay = math.nan
        if not math.isfinite(delay) or not 0 <= delay <= MAX_TOKEN_DELAY_MS:
            raise ValueError(
                "metadata.sim_token_delay_ms",
                f"metadata.sim_token_delay_ms must be a number from 0 to {MAX_TOKEN_DELAY_MS:g}, got {raw[:40]!r}.",
            )
    return Knobs(_int_knob(metadata, "sim_output_tokens"), delay / 1000, _int_knob(metadata, "sim_fail_after_tokens"))


def _int_knob(metadata: dict[str, str], name: str) -> int | None:
    raw = metadata.get(name)
    if raw is None:
        return None
    s = raw.strip()
    if not (s.isascii() and s.isdigit()) or int(s) > MAX_OUTPUT_TOKENS:
        raise ValueError(
            f"metadata.{name}", f"metadata.{name} must be an integer from 0 to {MAX_OUTPUT_TOKENS}, got {raw[:40]!r}."
        )
    return int(s)


def _seed(request: ModelRequest) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(request.model.encode())
    h.update(b"\0" + (request.instructions or "").encode())
    for it in request.input:
        h.update(b"\0" + str(it.get("role", it.get("type"))).encode() + b"\0" + item_text(it).encode())
    return int.from_bytes(h.digest(), "big")


def simulated_tokens(request: ModelRequest, count: int) -> Iterator[str]:
    """The text tokens the simulator produces for `request` (deterministic, made lazily)."""
    seed = _seed(request)
    lead = [" " + w for w in (request.instructions or "").split()[:3]]
    n = len(_WORDS)
    for i in range(count):
        tok = lead[i] if i < len(lead) else " " + _WORDS[(seed + (i - len(lead)) * 7919) % n]
        yield tok.lstrip() if i == 0 else tok


def _chunks(text: str, size: int = _JSON_CHUNK) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def _newest_user_text(items: list[dict[str, Any]]) -> str:
    for it in reversed(items):
        if it.get("type") == "message" and it.get("role") == "user":
            return item_text(it)
    return ""


def _trailing_outputs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for it in reversed(items):
        if it.get("type") != "function_call_output":
            break
        out.append(it)
    return out[::-1]


def _calls(request: ModelRequest) -> list[dict[str, Any]]:
    """The function tools the simulated model calls for `request` (see the module docstring)."""
    tools = request.function_tools
    choice = request.tool_choice
    if not tools or choice == "none" or _trailing_outputs(request.input):
        return []
    if isinstance(choice, dict) and choice.get("type") == "function":
        calls = [t for t in tools if t["name"] == choice.get("name")]
    else:
        mode = choice
        if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
            names = {t.get("name") for t in choice.get("tools") or () if t.get("type") == "function"}
            tools = [t for t in tools if t["name"] in names]
            mode = choice.get("mode", "auto")
        if mode == "required":
            calls = tools[:1]
        else:
            text = _newest_user_text(request.input).lower()
            calls = [t for t in tools if t["name"].lower() in text]
            if not request.parallel_tool_calls:
                calls = calls[:1]
    if request.max_tool_calls is not None:
        calls = calls[: request.max_tool_calls]
    return calls


def _answer_to_outputs(request: ModelRequest, outputs: list[dict[str, Any]]) -> str:
    names = {it.get("call_id"): it.get("name") for it in request.input if it.get("type") == "function_call"}
    said = [
        f"{names.get(o.get('call_id')) or 'the tool'} returned {orjson.dumps(item_text(o)).decode()}." for o in outputs
    ]
    return " ".join(said)


def _structured(request: ModelRequest, text: str) -> str | None:
    fmt = request.text_format
    if not fmt:
        return None
    if fmt.get("type") == "json_schema":
        return orjson.dumps(example(fmt.get("schema") or {})).decode()
    return orjson.dumps({"answer": text}).decode()


class SimulatedBackend(Backend):
    """Serves any model name deterministically (see the module docstring)."""

    def check(self, metadata: dict[str, str]) -> None:
        knobs(metadata)

    async def stream(self, request: ModelRequest) -> AsyncIterator[BackendEvent]:
        try:
            k = knobs(request.metadata)
        except ValueError as exc:
            raise BackendError(str(exc.args[-1]), "invalid_prompt") from None
        out_tokens = k.output_tokens
        if out_tokens is None:
            scale = _VERBOSITY_SCALE.get(request.verbosity or "medium", 1.0)
            out_tokens = int(DEFAULT_OUTPUT_TOKENS * scale)
        delay, fail_after = k.delay, k.fail_after
        budget = request.max_output_tokens
        input_tokens = estimate_input_tokens(request)
        produced = 0
        reasoning_done = 0

        def over_budget() -> bool:
            return budget is not None and produced >= budget

        async def pace() -> None:
            await asyncio.sleep(delay)  # sleep(0) still yields to the loop between tokens

        # reasoning: an optional summary part, then the reasoning text
        reasoning_n = _REASONING_TOKENS.get(request.reasoning_effort or "none", 0)
        if reasoning_n and request.reasoning_summary:
            for tok in _words("Planning how to answer the request."):
                if over_budget():
                    yield Usage(input_tokens, produced, reasoning_done)
                    yield Finish("max_output_tokens")
                    return
                await pace()
                yield ReasoningDelta(tok, summary=True)
                produced += 1
                reasoning_done += 1
        for i in range(reasoning_n):
            if over_budget():
                yield Usage(input_tokens, produced, reasoning_done)
                yield Finish("max_output_tokens")
                return
            await pace()
            yield ReasoningDelta("thinking " if i else "Thinking ")
            produced += 1
            reasoning_done += 1

        calls = _calls(request)
        if calls:
            seed = _seed(request)
            for n, tool in enumerate(calls):
                call_id = "call_" + hashlib.blake2b(f"{seed}:{n}".encode(), digest_size=12).hexdigest()
                await pace()
                yield ToolCall(call_id, tool["name"])
                args = orjson.dumps(example(tool.get("parameters") or {"type": "object"})).decode()
                for piece in _chunks(args):
                    if over_budget():
                        yield Usage(input_tokens, produced, reasoning_done)
                        yield Finish("max_output_tokens")
                        return
                    await pace()
                    yield ToolArguments(piece)
                    produced += 1
            yield Usage(input_tokens, produced, reasoning_done)
            yield Finish()
            return

        outputs = _trailing_outputs(request.input)
        refusal = request.metadata.get("sim_refusal")
        images, files = count_media(request.input)
        seen = ""
        if images or files:
            said = [f"{k} {w}{'s' if k != 1 else ''}" for k, w in ((images, "image"), (files, "file")) if k]
            seen = "I see " + " and ".join(said) + "."
        tokens: Iterator[str]
        if outputs:
            text = _answer_to_outputs(request, outputs)
            structured = _structured(request, text)
            tokens = iter(_chunks(structured) if structured is not None else _words(text))
        elif refusal is not None:
            tokens = iter(_words(refusal))
        elif request.text_format:
            structured = _structured(request, " ".join(simulated_tokens(request, 8)))
            assert structured is not None
            tokens = iter(_chunks(structured))
        else:
            tokens = simulated_tokens(request, out_tokens)
            if seen:
                tokens = iter([*_words(seen), *(" " + t.lstrip() for t in tokens)])
        emit = RefusalDelta if refusal is not None and not outputs else TextDelta
        for i, tok in enumerate(tokens):
            if fail_after is not None and i >= fail_after:
                raise BackendError(f"The simulated model failed after {i} tokens (sim_fail_after_tokens).")
            if over_budget():
                yield Usage(input_tokens, produced, reasoning_done)
                yield Finish("max_output_tokens")
                return
            await pace()
            yield emit(tok)
            produced += 1
        yield Usage(input_tokens=input_tokens, output_tokens=produced, reasoning_tokens=reasoning_done)
        yield Finish()
