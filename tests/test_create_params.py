"""Every create parameter is honoured, echoed with a documented meaning, or refused with a 400
naming it (README: "Every create parameter"). Against `bgmode serve`, with the openai SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.sdk import replay


def refused(client: OpenAI, **kw: Any) -> openai.BadRequestError:
    kw.setdefault("model", "m")
    kw.setdefault("input", "x")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(**kw)
    return err.value


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"frobnicate": 1}, "frobnicate"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"reasoning": {"effort": "low", "budget": 3}}, "reasoning.budget"),
        ({"text": {"verbosity": "low", "colour": "red"}}, "text.colour"),
        ({"stream_options": {"include_obfuscation": False, "x": 1}, "stream": True}, "stream_options.x"),
        ({"conversation": {"id": "conv_1", "extra": 1}}, "conversation.extra"),
    ],
)
def test_unknown_parameters_are_refused(client: OpenAI, extra: dict[str, Any], param: str) -> None:
    err = refused(client, extra_body=extra)
    assert (err.code, err.param) == ("unknown_parameter", param)
    assert err.message.endswith(f"Unknown parameter: '{param}'.")


@pytest.mark.parametrize(
    ("kw", "param", "code"),
    [
        ({"service_tier": "bogus"}, "service_tier", "invalid_value"),
        ({"truncation": "sometimes"}, "truncation", "invalid_value"),
        ({"safety_identifier": "s" * 65}, "safety_identifier", "string_above_max_length"),
        ({"user": 7}, "user", "invalid_type"),
        ({"prompt_cache_key": ["k"]}, "prompt_cache_key", "invalid_type"),
        ({"prompt_cache_retention": "forever"}, "prompt_cache_retention", "invalid_value"),
        ({"top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
        ({"top_logprobs": -1}, "top_logprobs", "integer_below_min_value"),
        ({"top_logprobs": "3"}, "top_logprobs", "invalid_type"),
        ({"stream_options": {"include_obfuscation": False}}, "stream_options", "invalid_value"),  # without stream
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "unsupported_parameter"),
        ({"prompt_cache_options": {"ttl": "30m"}}, "prompt_cache_options", "unsupported_parameter"),
        ({"context_management": [{"type": "compaction"}]}, "context_management", "unsupported_parameter"),
        ({"moderation": {"model": "omni"}}, "moderation", "unsupported_parameter"),
        ({"include": ["bogus.value"]}, "include[0]", "invalid_value"),
        ({"reasoning": {"generate_summary": "loud"}}, "reasoning.generate_summary", "invalid_value"),
    ],
)
def test_invalid_values_name_the_param(client: OpenAI, kw: dict[str, Any], param: str, code: str) -> None:
    err = refused(client, extra_body=kw)
    assert (err.param, err.code) == (param, code)


def test_unsupported_parameters_sent_as_null_are_accepted(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="x", extra_body={"prompt": None, "moderation": None})
    assert r.status == "completed" and r.prompt is None


SENT = {
    "service_tier": "flex",
    "truncation": "auto",
    "user": "u-1",
    "safety_identifier": "hashed-user",
    "prompt_cache_key": "thread-7",
    "prompt_cache_retention": "24h",
    "top_logprobs": 3,
    "tool_choice": "none",
    "parallel_tool_calls": False,
}
TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def test_echoed_as_sent_in_create_poll_stream_and_replay(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="x", background=True, tools=[TOOL], **SENT)  # type: ignore[arg-type]
    events = replay(client, r.id)
    bodies = [r.to_dict(), client.responses.retrieve(r.id).to_dict()]
    bodies += [e.response.to_dict() for e in events if hasattr(e, "response")]
    assert len(bodies) >= 5  # created, queued, in_progress, completed
    for body in bodies:
        assert {k: body[k] for k in SENT} == SENT
        assert body["frequency_penalty"] == 0.0 and body["presence_penalty"] == 0.0
        assert body["conversation"] is None and body["prompt"] is None and body["store"] is True


def test_openai_defaults_when_nothing_is_sent(client: OpenAI) -> None:
    body = client.responses.create(model="m", input="x").to_dict()
    assert {
        k: body[k]
        for k in (
            "service_tier",
            "truncation",
            "user",
            "safety_identifier",
            "prompt_cache_key",
            "prompt_cache_retention",
            "top_logprobs",
            "frequency_penalty",
            "presence_penalty",
            "conversation",
            "prompt",
        )
    } == {
        "service_tier": "auto",
        "truncation": "disabled",
        "user": None,
        "safety_identifier": None,
        "prompt_cache_key": None,
        "prompt_cache_retention": "in_memory",
        "top_logprobs": 0,
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
        "conversation": None,
        "prompt": None,
    }


def test_stream_options_with_stream(client: OpenAI) -> None:
    with client.responses.create(
        model="m", input="x", stream=True, stream_options={"include_obfuscation": True}
    ) as stream:
        events = list(stream)
    assert events[-1].type == "response.completed"
    assert not any("obfuscation" in e.to_dict() for e in events)  # bgmode never pads deltas


_VOLATILE = ("id", "created_at", "completed_at")


def _stable(obj: dict[str, Any]) -> dict[str, Any]:
    """A response without what differs between two creates (ids, times, the output's ids)."""
    out = {k: v for k, v in obj.items() if k not in _VOLATILE}
    out["output"] = [{k: v for k, v in item.items() if k != "id"} for item in obj.get("output", [])]
    return out


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": "hi", "background": True},
        {"model": "m", "input": [{"role": "user", "content": "hi"}], "background": True, "store": True},
        {"model": "m", "input": "hi", "background": False, "stream": False, "store": False},
        {"model": "m", "input": "hi"},
    ],
)
def test_a_plain_create_is_answered_as_with_every_other_parameter_at_its_default(
    client: OpenAI, body: dict[str, Any]
) -> None:
    """A body of only model/input/background/stream/store takes a shorter way through
    validation; its response must be the one the full way gives (forced here by a parameter
    sent as null, which means absent)."""
    plain = client.post("/responses", body=body, cast_to=object)
    full = client.post("/responses", body={**body, "temperature": None, "metadata": None}, cast_to=object)
    assert isinstance(plain, dict) and isinstance(full, dict)
    assert _stable(plain) == _stable(full)
