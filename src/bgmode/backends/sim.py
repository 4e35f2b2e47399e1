"""The built-in simulated model: deterministic, offline, with knobs for tests and demos.

A test double that lives in the package on purpose: `bgmode serve` with no upstream serves
every model name with it. Per-request knobs come in `metadata` (string values):

- `sim_output_tokens`: how many output tokens (default 40, scaled by `text.verbosity`:
  low x0.5, high x2);
- `sim_token_delay_ms`: pause before each token (default 5);
- `sim_fail_after_tokens`: fail with `server_error` after that many tokens.

`reasoning.effort` adds a reasoning item (low 8, medium 16, high 32, xhigh 64 tokens);
`instructions` change the text (the opening words echo them); `max_output_tokens` caps the
reasoning and text tokens together and ends the response `incomplete`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from bgmode.backends.base import (
    Backend,
    BackendError,
    BackendEvent,
    Finish,
    ModelRequest,
    ReasoningDelta,
    TextDelta,
    Usage,
    estimate_tokens,
)

_WORDS = (
    "the background job keeps running while you poll stream resume or cancel it and every event "
    "is stored durably so a dropped connection loses nothing model output arrives token by token "
    "with sequence numbers from zero a worker holds a lease renews it and finishes exactly once"
).split()

_REASONING_TOKENS = {"none": 0, "minimal": 4, "low": 8, "medium": 16, "high": 32, "xhigh": 64}
_VERBOSITY_SCALE = {"low": 0.5, "medium": 1.0, "high": 2.0}
DEFAULT_OUTPUT_TOKENS = 40
DEFAULT_TOKEN_DELAY_MS = 5.0


def _int_knob(request: ModelRequest, name: str, default: int | None) -> int | None:
    raw = request.metadata.get(name)
    if raw is None:
        return default
    try:
        return max(0, int(raw))
    except ValueError:
        raise BackendError(f"metadata.{name} must be an integer, got {raw!r}", "invalid_prompt") from None


def _seed(request: ModelRequest) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(request.model.encode())
    h.update(b"\0" + (request.instructions or "").encode())
    for m in request.messages:
        h.update(b"\0" + m.role.encode() + b"\0" + m.text.encode())
    return int.from_bytes(h.digest(), "big")


def simulated_tokens(request: ModelRequest, count: int) -> list[str]:
    """The text tokens the simulator produces for `request` (deterministic)."""
    seed = _seed(request)
    tokens: list[str] = []
    if request.instructions:
        tokens.extend(" " + w for w in request.instructions.split()[:3])
    n = len(_WORDS)
    i = 0
    while len(tokens) < count:
        tokens.append(" " + _WORDS[(seed + i * 7919) % n])
        i += 1
    tokens = tokens[:count]
    if tokens:
        tokens[0] = tokens[0].lstrip()
    return tokens


class SimulatedBackend(Backend):
    """Serves any model name with deterministic text (see the module docstring)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[BackendEvent]:
        out_tokens = _int_knob(request, "sim_output_tokens", None)
        if out_tokens is None:
            scale = _VERBOSITY_SCALE.get(request.verbosity or "medium", 1.0)
            out_tokens = int(DEFAULT_OUTPUT_TOKENS * scale)
        delay_raw = request.metadata.get("sim_token_delay_ms")
        try:
            delay = float(delay_raw) / 1000 if delay_raw is not None else DEFAULT_TOKEN_DELAY_MS / 1000
        except ValueError:
            raise BackendError(
                f"metadata.sim_token_delay_ms must be a number, got {delay_raw!r}", "invalid_prompt"
            ) from None
        fail_after = _int_knob(request, "sim_fail_after_tokens", None)
        budget = request.max_output_tokens

        reasoning_n = _REASONING_TOKENS.get(request.reasoning_effort or "none", 0)
        input_tokens = sum(estimate_tokens(m.text) for m in request.messages)
        input_tokens += estimate_tokens(request.instructions or "")
        produced = 0
        reasoning_done = 0
        stopped: Finish = Finish()

        for _ in range(reasoning_n):
            if budget is not None and produced >= budget:
                stopped = Finish("max_output_tokens")
                break
            if delay:
                await asyncio.sleep(delay)
            yield ReasoningDelta("thinking " if reasoning_done else "Thinking ")
            produced += 1
            reasoning_done += 1

        if stopped.reason is None:
            for i, tok in enumerate(simulated_tokens(request, out_tokens)):
                if fail_after is not None and i >= fail_after:
                    raise BackendError(f"The simulated model failed after {i} tokens (sim_fail_after_tokens).")
                if budget is not None and produced >= budget:
                    stopped = Finish("max_output_tokens")
                    break
                if delay:
                    await asyncio.sleep(delay)
                else:
                    await asyncio.sleep(0)
                yield TextDelta(tok)
                produced += 1
        yield Usage(input_tokens=input_tokens, output_tokens=produced, reasoning_tokens=reasoning_done)
        yield stopped
