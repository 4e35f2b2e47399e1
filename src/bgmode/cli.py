"""The `bgmode` command: `serve` runs the server; the client commands live in `bgmode.client`."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from typing import Any

import click

from bgmode.client.commands import register as register_client_commands

EXAMPLE = """\
  curl -s {url}/v1/responses -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "input": "Say hello", "background": true}}'
  bgmode run --base-url {url}/v1 --model {model} --prompt "Say hello" --show-output-text"""


@click.group()
@click.version_option(package_name="bgmode")
def main() -> None:
    """bgmode: durable OpenAI-compatible background responses, server and client."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@main.command(context_settings={"show_default": True})
@click.option("--host", default="127.0.0.1", show_default=True, envvar="BGMODE_HOST", help="Address to bind.")
@click.option("--port", default=8000, show_default=True, envvar="BGMODE_PORT", help="Port to bind.")
@click.option(
    "--store",
    "store_url",
    default=None,
    envvar="BGMODE_STORE_URL",
    help="sqlite:///path.db (default: a file in the user data dir) or postgresql://user@host/db.",
)
@click.option(
    "--workers",
    default=16,
    show_default=True,
    envvar="BGMODE_WORKERS",
    help="Responses this process runs at once; 0 serves the API only.",
)
@click.option("--config", "config_path", default=None, envvar="BGMODE_CONFIG", help="TOML file routing models.")
@click.option("--upstream-url", default=None, envvar="BGMODE_UPSTREAM_URL", help="One upstream for every model.")
@click.option(
    "--upstream-api",
    type=click.Choice(["chat", "responses"]),
    default=None,
    envvar="BGMODE_UPSTREAM_API",
    help="The upstream's API kind.",
)
@click.option("--upstream-key-env", default=None, envvar="BGMODE_UPSTREAM_KEY_ENV", help="Env var holding its key.")
@click.option("--upstream-model", default=None, envvar="BGMODE_UPSTREAM_MODEL", help="Rewrite the model name.")
@click.option(
    "--upstream-option",
    "upstream_options",
    multiple=True,
    envvar="BGMODE_UPSTREAM_OPTIONS",
    help="A route option for the --upstream-url route, KEY=VALUE (repeatable; the env var takes them space-separated).",
)
@click.option(
    "--api-keys",
    default=None,
    envvar="BGMODE_API_KEYS",
    help="Accepted API keys as key:tenant,key2:tenant2 (none: no authentication).",
)
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    envvar="BGMODE_INSECURE_NO_AUTH",
    help="Allow serving a non-loopback address without API keys.",
)
@click.option("--lease-seconds", default=30.0, show_default=True, envvar="BGMODE_LEASE_SECONDS")
@click.option("--grace-seconds", default=30.0, show_default=True, envvar="BGMODE_GRACE_SECONDS")
@click.option("--keepalive-seconds", default=15.0, show_default=True, envvar="BGMODE_KEEPALIVE_SECONDS")
@click.option("--max-queued", default=0, show_default=True, envvar="BGMODE_MAX_QUEUED", help="0: no limit.")
@click.option("--max-queued-per-key", default=0, show_default=True, envvar="BGMODE_MAX_QUEUED_PER_KEY")
@click.option("--max-body-bytes", default=8 * 1024 * 1024, show_default=True, envvar="BGMODE_MAX_BODY_BYTES")
@click.option(
    "--response-ttl",
    default=30 * 24 * 3600.0,
    show_default=True,
    envvar="BGMODE_RESPONSE_TTL",
    help="Seconds a finished response is kept.",
)
@click.option(
    "--events-ttl",
    default=24 * 3600.0,
    show_default=True,
    envvar="BGMODE_EVENTS_TTL",
    help="Seconds a finished response's event log is kept (replay).",
)
@click.option(
    "--conversation-ttl",
    default=30 * 24 * 3600.0,
    show_default=True,
    envvar="BGMODE_CONVERSATION_TTL",
    help="Seconds a conversation is kept after its last change (items added, a turn, metadata).",
)
@click.option("--sweep-seconds", default=60.0, show_default=True, envvar="BGMODE_SWEEP_SECONDS")
@click.option(
    "--reasoning-key",
    default=None,
    envvar="BGMODE_REASONING_KEY",
    help="Key sealing reasoning.encrypted_content (prefer the env var; default: a random key kept in the store).",
)
@click.option("--log-level", default="info", show_default=True, envvar="BGMODE_LOG_LEVEL")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    envvar="BGMODE_LOG_FORMAT",
    help="Log lines on stdout: json (one object per line: ts, level, logger, msg and structured fields) "
    "or text. Default: text when stdout is a terminal, else json.",
)
@click.option(
    "--access-log/--no-access-log",
    default=True,
    show_default=True,
    envvar="BGMODE_ACCESS_LOG",
    help="One log line per request (method, route, status, duration_ms, tenant, request_id), at info level.",
)
@click.option(
    "--metrics-public",
    is_flag=True,
    envvar="BGMODE_METRICS_PUBLIC",
    help="Serve GET /metrics (Prometheus) without an API key. Without this, /metrics needs a valid API key "
    "whenever --api-keys is set (and is open, like every route, when it is not).",
)
def serve(**opts: Any) -> None:
    """Serve /v1/responses with durable background mode."""
    from bgmode.config import Settings, default_store_url, parse_api_keys
    from bgmode.logs import configure, default_format
    from bgmode.routing import Router
    from bgmode.server import run
    from bgmode.webhooks import load_endpoints

    api_keys = parse_api_keys(opts["api_keys"])
    if not api_keys and not _is_loopback(opts["host"]) and not opts["insecure_no_auth"]:
        raise click.UsageError(
            f"refusing to serve {opts['host']} without API keys: set --api-keys / BGMODE_API_KEYS, "
            "or pass --insecure-no-auth if anyone who can reach this address may use it"
        )
    try:
        router = Router.from_config(
            opts["config_path"],
            opts["upstream_url"],
            opts["upstream_api"],
            opts["upstream_key_env"],
            opts["upstream_model"],
            upstream_options=opts["upstream_options"],
        )
        endpoints = load_endpoints(opts["config_path"], os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    settings = Settings(
        store_url=opts["store_url"] or default_store_url(),
        host=opts["host"],
        port=opts["port"],
        workers=opts["workers"],
        lease_seconds=opts["lease_seconds"],
        grace_seconds=opts["grace_seconds"],
        keepalive_seconds=opts["keepalive_seconds"],
        max_body_bytes=opts["max_body_bytes"],
        api_keys=api_keys,
        max_queued=opts["max_queued"],
        max_queued_per_key=opts["max_queued_per_key"],
        response_ttl=opts["response_ttl"],
        events_ttl=opts["events_ttl"],
        conversation_ttl=opts["conversation_ttl"],
        sweep_seconds=opts["sweep_seconds"],
        reasoning_key=opts["reasoning_key"],
        webhooks=endpoints,
        metrics_public=opts["metrics_public"],
        access_log=opts["access_log"],
    )
    log_format = opts["log_format"] or default_format()
    configure(log_format, opts["log_level"])
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    url = f"http://{host}:{settings.port}"
    simulated = all(getattr(r, "kind", "") == "sim" for r in router.routes.values())
    if log_format == "json":  # every line on stdout is a JSON object: the banner too
        logging.getLogger("bgmode").info(
            "bgmode serving on %s/v1",
            url,
            extra={
                "fields": {
                    "url": f"{url}/v1",
                    "store": _redact(settings.store_url),
                    "workers": settings.workers,
                    "models": router.describe(),
                    "simulated": simulated,
                }
            },
        )
    else:
        click.echo(f"bgmode serving on {url}/v1  (store: {_redact(settings.store_url)}, workers: {settings.workers})")
        click.echo(f"models: {router.describe()}")
        if simulated:
            click.echo("no upstream configured: every model name is served by the built-in simulated model")
        click.echo("try:\n" + EXAMPLE.format(url=url, model=_example_model(router)))
    sys.stdout.flush()
    run(settings, router, opts["log_level"])


for _param in serve.params:  # `serve --help` names each flag's environment variable
    if isinstance(_param, click.Option):
        _param.show_envvar = True


def _example_model(router: Any) -> str:
    """A model name the startup hint can use: a routed name, else what `*` sends upstream."""
    routes = router.routes
    if all(getattr(r, "kind", "") == "sim" for r in routes.values()):
        return "sim"
    named = [name for name in routes if name != "*"]
    if named:
        return str(named[0])
    return str(getattr(routes.get("*"), "upstream_model", None) or "YOUR-MODEL")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


register_client_commands(main)
