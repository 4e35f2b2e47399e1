"""`Router.from_config`: the TOML file, the one-upstream flags, and their errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bgmode.backends.base import ModelRequest, user_message
from bgmode.backends.chat import ChatBackend, ChatOptions
from bgmode.backends.http import UpstreamSettings
from bgmode.backends.responses import ResponsesBackend
from bgmode.backends.sim import SimulatedBackend
from bgmode.routing import Router
from tests.fake_upstream import FakeUpstream, collect, text

KEY = "sk-test-Routing-Secret-5555"
ENV = {"OLLAMA_KEY": KEY, "OPENAI_KEY": KEY}

CONFIG = """
[[route]]
model = "llama3"
api = "chat"
base_url = "http://127.0.0.1:11434/v1"
upstream_model = "llama3.1:8b"
api_key_env = "OLLAMA_KEY"
connect_timeout = 5
idle_timeout = 60
max_retries = 1
retry_backoff = 0.25
max_concurrency = 4
max_tokens_param = "max_completion_tokens"
send_verbosity = true

[[route]]
models = ["gpt-5", "gpt-5-mini"]
api = "responses"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_KEY"

[[route]]
model = "demo"
api = "sim"
"""


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as f:
        yield f


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bgmode.toml"
    path.write_text(text)
    return str(path)


def test_nothing_configured_is_the_simulator() -> None:
    router = Router.from_config()
    route = router.resolve("anything")
    assert route is not None and isinstance(route.backend, SimulatedBackend)


async def test_the_file_builds_every_route(tmp_path: Path) -> None:
    router = Router.from_config(write(tmp_path, CONFIG), environ=ENV)
    llama = router.resolve("llama3")
    assert llama is not None and llama.kind == "chat" and llama.upstream_model == "llama3.1:8b"
    assert isinstance(llama.backend, ChatBackend)
    assert llama.backend.settings == UpstreamSettings(
        base_url="http://127.0.0.1:11434/v1",
        api_key=KEY,
        upstream_model="llama3.1:8b",
        connect_timeout=5.0,
        idle_timeout=60.0,
        max_retries=1,
        retry_backoff=0.25,
        max_concurrency=4,
    )
    assert llama.backend.options == ChatOptions(max_tokens_param="max_completion_tokens", send_verbosity=True)
    gpt5, mini = router.resolve("gpt-5"), router.resolve("gpt-5-mini")
    assert gpt5 is not None and mini is not None
    assert isinstance(gpt5.backend, ResponsesBackend)
    assert gpt5.backend is mini.backend  # one backend (one concurrency cap) for both names
    assert gpt5.backend.settings.idle_timeout == 120.0 and gpt5.backend.settings.max_retries == 3
    demo = router.resolve("demo")
    assert demo is not None and isinstance(demo.backend, SimulatedBackend)
    assert router.resolve("unrouted") is None  # no "*": a 404 model_not_found
    assert [m["id"] for m in router.models()] == ["llama3", "gpt-5", "gpt-5-mini", "demo"]
    assert router.models()[0] == {
        "id": "llama3",
        "object": "model",
        "created": router.created,
        "owned_by": "bgmode:chat",
    }
    assert KEY not in router.describe() and KEY not in repr(router)
    assert "llama3 -> chat http://127.0.0.1:11434/v1/chat/completions as llama3.1:8b" in router.describe()
    await router.aclose()


def test_the_command_line_upstream_serves_star(tmp_path: Path) -> None:
    router = Router.from_config(
        upstream_url="http://127.0.0.1:8000/v1",
        upstream_api="responses",
        upstream_key_env="OPENAI_KEY",
        upstream_model="served",
        environ=ENV,
    )
    route = router.resolve("whatever")
    assert route is not None and route.model == "*" and isinstance(route.backend, ResponsesBackend)
    assert route.backend.settings.api_key == KEY and route.upstream_model == "served"
    assert router.models() == []  # "*" is not a model name
    # With a file too, the flags replace the file's "*" and keep its named routes.
    both = Router.from_config(write(tmp_path, CONFIG), upstream_url="http://127.0.0.1:8000/v1", environ=ENV)
    star = both.resolve("other")
    assert star is not None and isinstance(star.backend, ChatBackend)
    assert both.resolve("llama3") is not None


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[[route]\n", "not valid TOML"),
        ('[[route]]\nmodel = "a"\napi = "grpc"\n', "key 'api': unknown API kind 'grpc'"),
        ('[[route]]\nmodel = "a"\n', "missing key 'api'"),
        ('[[route]]\napi = "sim"\n', "missing key 'model'"),
        ('[[route]]\nmodel = "a"\napi = "chat"\n', "missing key 'base_url'"),
        ('[[route]]\nmodel = "a"\napi = "chat"\nbase_url = "x"\n', "key 'base_url'"),
        (
            '[[route]]\nmodel = "a"\napi = "chat"\nbase_url = "http://h/v1"\nidle_timout = 5\n',
            "unknown key(s) for api = 'chat': idle_timout",
        ),
        (
            '[[route]]\nmodel = "a"\napi = "responses"\nbase_url = "http://h/v1"\nstream_usage = true\n',
            "unknown key(s) for api = 'responses': stream_usage",
        ),
        (
            '[[route]]\nmodel = "a"\napi = "chat"\nbase_url = "http://h/v1"\napi_key_env = "NOPE"\n',
            "key 'api_key_env': environment variable NOPE is not set",
        ),
        (
            '[[route]]\nmodel = "a"\napi = "chat"\nbase_url = "http://h/v1"\nidle_timeout = "soon"\n',
            "key 'idle_timeout' must be a number",
        ),
        (
            '[[route]]\nmodel = "a"\napi = "chat"\nbase_url = "http://h/v1"\nmax_concurrency = 0\n',
            "key 'max_concurrency' must be an integer >= 1",
        ),
        ('[[route]]\nmodel = "a"\napi = "sim"\n[[route]]\nmodel = "a"\napi = "sim"\n', "routed twice"),
        ('[server]\nport = 1\n[[route]]\nmodel = "a"\napi = "sim"\n', "unknown top-level key(s) server"),
        ("", "no [[route]] tables"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, config: str, expected: str) -> None:
    path = write(tmp_path, config)
    with pytest.raises(ValueError) as err:
        Router.from_config(path, environ={})
    assert str(err.value).startswith(path)
    assert expected in str(err.value)


def test_flag_errors() -> None:
    with pytest.raises(ValueError, match="--upstream-url route.*api_key_env.*environment variable MISSING is not set"):
        Router.from_config(upstream_url="http://h/v1", upstream_key_env="MISSING", environ={})
    with pytest.raises(ValueError, match="--upstream-api: unknown API kind 'grpc'"):
        Router.from_config(upstream_url="http://h/v1", upstream_api="grpc", environ={})
    with pytest.raises(ValueError, match="need --upstream-url"):
        Router.from_config(upstream_api="chat", environ={})
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        Router.from_config(upstream_url="http://h/v1", upstream_options=["nonsense"], environ={})
    with pytest.raises(ValueError, match="unknown key"):
        Router.from_config(upstream_url="http://h/v1", upstream_options=["colour=blue"], environ={})
    with pytest.raises(ValueError, match="accept_files"):
        Router.from_config(
            upstream_url="http://h/v1", upstream_api="responses", upstream_options=["accept_files=true"], environ={}
        )


def test_upstream_options_set_route_options() -> None:
    chat = (
        Router.from_config(
            upstream_url="http://h/v1",
            upstream_options=["send_reasoning_effort=false", "max_tokens_param=max_completion_tokens", "max_retries=1"],
            environ={},
        )
        .routes["*"]
        .backend
    )
    assert isinstance(chat, ChatBackend)
    assert chat.options.send_reasoning_effort is False and chat.options.max_tokens_param == "max_completion_tokens"
    assert chat.settings.max_retries == 1
    resp = (
        Router.from_config(
            upstream_url="http://h/v1",
            upstream_api="responses",
            upstream_options=["send_reasoning_effort=false"],
            environ={},
        )
        .routes["*"]
        .backend
    )
    assert isinstance(resp, ResponsesBackend)
    body = resp.build_body(ModelRequest(model="m", input=[user_message("x")], reasoning_effort="high"))
    assert "reasoning" not in body
    with pytest.raises(ValueError, match="cannot read"):
        Router.from_config("/nonexistent/bgmode.toml", environ={})


def test_errors_never_show_a_key_in_the_url(tmp_path: Path) -> None:
    config = '[[route]]\nmodel = "a"\napi = "chat"\nbase_url = "ftp://user:hunter2@h/v1?key=hunter2"\n'
    with pytest.raises(ValueError) as err:
        Router.from_config(write(tmp_path, config), environ={})
    assert "hunter2" not in str(err.value)


async def test_a_routed_model_streams_from_the_upstream(tmp_path: Path, fake: FakeUpstream) -> None:
    config = f'[[route]]\nmodel = "local"\napi = "chat"\nbase_url = "{fake.base_url}"\nupstream_model = "up"\n'
    router = Router.from_config(write(tmp_path, config), environ={})
    route = router.resolve("local")
    assert route is not None
    events, error = await collect(
        route.backend, ModelRequest(model="local", input=[user_message(role="user", text="hi")])
    )
    assert error is None and text(events) == "Hello, world!"
    assert fake.bodies()[0]["model"] == "up"
    await router.aclose()


def test_accept_files_is_a_chat_route_option(tmp_path: Path) -> None:
    config = (
        '[[route]]\nmodel = "vision"\napi = "chat"\nbase_url = "http://h/v1"\naccept_files = true\n'
        '[[route]]\nmodel = "text"\napi = "chat"\nbase_url = "http://h/v1"\n'
    )
    router = Router.from_config(write(tmp_path, config), environ={})
    vision, plain = router.resolve("vision"), router.resolve("text")
    assert vision is not None and isinstance(vision.backend, ChatBackend)
    assert plain is not None and isinstance(plain.backend, ChatBackend)
    assert vision.backend.options.accept_files is True
    assert plain.backend.options.accept_files is False  # files are a 400 at create by default
    flag = Router.from_config(upstream_url="http://h/v1", upstream_options=["accept_files=true"], environ={})
    star = flag.routes["*"].backend
    assert isinstance(star, ChatBackend) and star.options.accept_files is True
    bad = '[[route]]\nmodel = "a"\napi = "chat"\nbase_url = "http://h/v1"\naccept_files = "yes"\n'
    with pytest.raises(ValueError, match="accept_files"):
        Router.from_config(write(tmp_path, bad), environ={})
