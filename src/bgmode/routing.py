"""Which backend serves which model name.

A `Router` maps model names to backends; `*` routes every other name. With nothing
configured, every model is served by the built-in simulator. `Router.from_config` builds one
from a TOML file and/or the one-upstream command-line flags:

    [[route]]
    model = "llama3"                 # or "*", or models = ["a", "b"] (one shared backend)
    api = "chat"                     # chat | responses | sim
    base_url = "http://127.0.0.1:11434/v1"
    upstream_model = "llama3.1:8b"   # optional: the name sent upstream
    api_key_env = "OLLAMA_KEY"       # optional: the key is read from this variable at startup
    connect_timeout = 10
    idle_timeout = 120               # seconds without a byte from the upstream
    max_retries = 3
    retry_backoff = 0.5              # first backoff in seconds, doubling; Retry-After wins
    max_concurrency = 8              # responses this backend runs at once

Chat-only keys: `max_tokens_param` ("max_tokens" | "max_completion_tokens"),
`send_reasoning_effort` (true), `send_verbosity` (false), `stream_usage` (true),
`accept_files` (false: `input_file` parts are a 400 at create unless the upstream takes them).
Responses-only keys: `send_reasoning_effort` (true), `send_verbosity` (true),
`upstream_background` (false: true runs responses upstream in background mode, resumable).

With `--upstream-url`, `--upstream-option KEY=VALUE` (repeatable) sets any of these keys for
that one route, e.g. `--upstream-option send_reasoning_effort=false`.

The same file may carry `[[webhook]]` tables (read by `webhooks.load_endpoints`); a file with
only webhooks is fine (the models then come from the flags, or are simulated).
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bgmode.backends.base import Backend
from bgmode.backends.chat import ChatBackend, ChatOptions
from bgmode.backends.http import HTTPBackend, UpstreamSettings, public_url
from bgmode.backends.responses import ResponsesBackend
from bgmode.backends.sim import SimulatedBackend

API_KINDS = ("chat", "responses", "sim")
_COMMON_KEYS = frozenset({"model", "models", "api"})
_HTTP_KEYS = frozenset(
    {
        "base_url",
        "upstream_model",
        "api_key_env",
        "connect_timeout",
        "idle_timeout",
        "max_retries",
        "retry_backoff",
        "max_concurrency",
    }
)
_CHAT_KEYS = frozenset({"max_tokens_param", "send_reasoning_effort", "send_verbosity", "stream_usage", "accept_files"})
_RESPONSES_KEYS = frozenset({"send_reasoning_effort", "send_verbosity", "upstream_background"})
_ALLOWED = {
    "sim": _COMMON_KEYS,
    "responses": _COMMON_KEYS | _HTTP_KEYS | _RESPONSES_KEYS,
    "chat": _COMMON_KEYS | _HTTP_KEYS | _CHAT_KEYS,
}


@dataclass(frozen=True, slots=True)
class Route:
    """One routed model name."""

    model: str
    backend: Backend
    #: what kind of backend this is ("sim", "chat", "responses"); shown in /v1/models
    kind: str = "sim"
    #: the model name sent upstream (None: the name the client asked for)
    upstream_model: str | None = None


@dataclass
class Router:
    """Model name → `Route`; `*` catches every other name."""

    routes: dict[str, Route] = field(default_factory=dict)
    #: when the routes were built (the `created` of every `/v1/models` entry)
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def simulated(cls) -> Router:
        """Every model name served by the simulator."""
        return cls({"*": Route("*", SimulatedBackend(), "sim")})

    @classmethod
    def from_config(
        cls,
        path: str | None = None,
        upstream_url: str | None = None,
        upstream_api: str | None = None,
        upstream_key_env: str | None = None,
        upstream_model: str | None = None,
        *,
        upstream_options: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> Router:
        """Routes from a TOML file and/or one upstream given on the command line.

        With neither, every model is simulated. The command-line upstream serves `*`
        (replacing a `*` route of the file). Raises `ValueError` naming the file and key
        for any configuration mistake, including an API key variable that is not set.
        """
        env = os.environ if environ is None else environ
        routes: dict[str, Route] = {}
        if path is not None:
            routes.update(_load_file(path, env))
        if upstream_url is not None:
            api = upstream_api or "chat"
            if api not in ("chat", "responses"):
                raise ValueError(f"--upstream-api: unknown API kind {api!r} (expected chat or responses)")
            # the flags make one [[route]] table, checked exactly as the file's are
            table: dict[str, Any] = {"model": "*", "api": api, "base_url": upstream_url}
            if upstream_key_env:
                table["api_key_env"] = upstream_key_env
            if upstream_model:
                table["upstream_model"] = upstream_model
            for option in upstream_options:
                key, sep, raw = option.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"--upstream-option: expected KEY=VALUE, got {option!r}")
                table[key.strip()] = _option_value(raw.strip())
            for route in _build_routes(table, "--upstream-option (the --upstream-url route)", env):
                routes[route.model] = route
        elif upstream_api or upstream_key_env or upstream_model or upstream_options:
            raise ValueError(
                "--upstream-api, --upstream-key-env, --upstream-model and --upstream-option need --upstream-url"
            )
        if not routes:
            return cls.simulated()
        return cls(routes)

    def resolve(self, model: str) -> Route | None:
        """The route for `model`, or None when nothing serves it (a 404 `model_not_found`)."""
        return self.routes.get(model) or self.routes.get("*")

    def models(self) -> list[dict[str, Any]]:
        """The routed model names as `GET /v1/models` lists them (`*` is not a name: left out)."""
        return [
            {"id": name, "object": "model", "created": self.created, "owned_by": f"bgmode:{r.kind}"}
            for name, r in self.routes.items()
            if name != "*"
        ]

    def describe(self) -> str:
        """One line for the startup banner (no keys: they are never part of a route's text)."""
        parts = []
        for name, r in self.routes.items():
            text = f"{name} -> {r.kind}"
            if isinstance(r.backend, HTTPBackend):
                text += f" {r.backend.where}"
            if r.upstream_model:
                text += f" as {r.upstream_model}"
            parts.append(text)
        return ", ".join(parts)

    async def aclose(self) -> None:
        seen: set[int] = set()
        for r in self.routes.values():
            if id(r.backend) not in seen:
                seen.add(id(r.backend))
                await r.backend.aclose()


def _load_file(path: str, env: Mapping[str, str]) -> dict[str, Route]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    # [[webhook]] tables are read by `webhooks.load_endpoints`
    unknown = set(doc) - {"route", "webhook"}
    if unknown:
        keys = ", ".join(sorted(unknown))
        raise ValueError(f"{path}: unknown top-level key(s) {keys} (expected [[route]] and [[webhook]] tables)")
    tables = doc.get("route", [])
    if not isinstance(tables, list) or (not tables and "webhook" not in doc):
        raise ValueError(f"{path}: no [[route]] tables")
    routes: dict[str, Route] = {}
    for i, table in enumerate(tables, start=1):
        where = f"{path}: route {i}"
        for route in _build_routes(table, where, env):
            if route.model in routes:
                raise ValueError(f"{where}: model {route.model!r} is routed twice")
            routes[route.model] = route
    return routes


def _build_routes(table: dict[str, Any], where: str, env: Mapping[str, str]) -> list[Route]:
    t = _Table(table, where)
    names = _model_names(t)
    t.where = f"{where} ({names[0] if len(names) == 1 else ', '.join(names)})"
    api = t.str_("api")
    if api is None:
        raise ValueError(f"{t.where}: missing key 'api' (one of {', '.join(API_KINDS)})")
    if api not in API_KINDS:
        raise ValueError(f"{t.where}: key 'api': unknown API kind {api!r} (one of {', '.join(API_KINDS)})")
    extra = set(table) - _ALLOWED[api]
    if extra:
        raise ValueError(f"{t.where}: unknown key(s) for api = {api!r}: {', '.join(sorted(extra))}")
    if api == "sim":
        sim = SimulatedBackend()
        return [Route(name, sim, "sim") for name in names]

    base_url = t.str_("base_url")
    if base_url is None:
        raise ValueError(f"{t.where}: missing key 'base_url'")
    key_env = t.str_("api_key_env")
    upstream_model = t.str_("upstream_model")
    max_concurrency = t.int_("max_concurrency", minimum=1)
    settings = UpstreamSettings(
        base_url=_check_url(base_url, f"{t.where}: key 'base_url'"),
        api_key=_key(key_env, env, f"{t.where}: key 'api_key_env'") if key_env else None,
        upstream_model=upstream_model,
        connect_timeout=t.float_("connect_timeout", 10.0),
        idle_timeout=t.float_("idle_timeout", 120.0),
        max_retries=_or(t.int_("max_retries", minimum=0), 3),
        retry_backoff=t.float_("retry_backoff", 0.5, minimum=0.0),
        max_concurrency=max_concurrency,
    )
    backend: Backend
    if api == "chat":
        param = t.str_("max_tokens_param") or "max_tokens"
        if param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(
                f"{t.where}: key 'max_tokens_param' must be max_tokens or max_completion_tokens, not {param!r}"
            )
        options = ChatOptions(
            max_tokens_param="max_tokens" if param == "max_tokens" else "max_completion_tokens",
            send_reasoning_effort=t.bool_("send_reasoning_effort", True),
            send_verbosity=t.bool_("send_verbosity", False),
            stream_usage=t.bool_("stream_usage", True),
            accept_files=t.bool_("accept_files", False),
        )
        backend = ChatBackend(settings, options)
    else:
        backend = ResponsesBackend(
            settings,
            send_reasoning_effort=t.bool_("send_reasoning_effort", True),
            send_verbosity=t.bool_("send_verbosity", True),
            background=t.bool_("upstream_background", False),
        )
    return [Route(name, backend, api, upstream_model) for name in names]


def _option_value(raw: str) -> Any:
    """A `--upstream-option` value as TOML reads it (true, 8, 0.5, "text"), else the text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _model_names(t: _Table) -> list[str]:
    if "model" in t.table and "models" in t.table:
        raise ValueError(f"{t.where}: give 'model' or 'models', not both")
    if "models" in t.table:
        names = t.table["models"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"{t.where}: key 'models' must be a non-empty list of model names")
        return list(names)
    name = t.str_("model")
    if not name:
        raise ValueError(f"{t.where}: missing key 'model' (a model name, or \"*\" for every other name)")
    return [name]


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _check_url(url: str, where: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{where}: {public_url(url)!r} is not an http:// or https:// URL")
    return url


def _key(var: str, env: Mapping[str, str], where: str) -> str:
    value = env.get(var)
    if not value:
        # Name the variable, never a value.
        raise ValueError(f"{where}: environment variable {var} is not set (it holds the upstream's API key)")
    return value


class _Table:
    """Typed reads from one `[[route]]` table, with errors that name the file and key."""

    def __init__(self, table: Any, where: str) -> None:
        if not isinstance(table, dict):
            raise ValueError(f"{where}: must be a table")
        self.table: dict[str, Any] = table
        self.where = where

    def _bad(self, key: str, expected: str) -> ValueError:
        return ValueError(f"{self.where}: key {key!r} must be {expected}, not {self.table[key]!r}")

    def str_(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is not None and not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self._bad(key, "true or false")
        return value

    def float_(self, key: str, default: float, minimum: float = 0.001) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self._bad(key, f"a number of seconds >= {minimum:g}")
        return float(value)

    def int_(self, key: str, minimum: int) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, f"an integer >= {minimum}")
        return value
