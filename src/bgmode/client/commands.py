"""Client commands of the `bgmode` CLI (run, monitor, get, cancel, stream, jobs).

Thin click wrappers over `bgmode.client.api` (through `Session`). Output is JSON lines when
stdout is not a terminal or with `--json`, else a live view. Exit codes: `ExitCode`.
The SDK is imported only when a command needs it, so `bgmode serve`, `--help` and usage
errors stay fast.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bgmode.client.defaults import (
    DEFAULT_MODEL,
    DEFAULT_POLL_SECONDS,
    DEFAULT_REASONING_EFFORT,
    DEFAULT_VERBOSITY,
)
from bgmode.client.ledger import Ledger
from bgmode.client.outcome import EXPIRED, ExitCode

if TYPE_CHECKING:
    from bgmode.client.api import BackgroundClient
    from bgmode.client.session import Session, SessionOptions

#: how the resume hint is spelled; "{id}" is replaced by the response id
DEFAULT_RESUME_ARGV = ("bgmode", "monitor", "{id}")

F = TypeVar("F", bound=Callable[..., Any])

#: "omit" sends no `reasoning` at all (models and gateways that refuse the parameter)
REASONING_EFFORTS = ("none", "low", "medium", "high", "xhigh", "omit")
VERBOSITIES = ("low", "medium", "high")


# --------------------------------------------------------------------------- shared options


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


def connection_options(f: F) -> F:
    f = click.option(
        "--api-key",
        metavar="KEY",
        help="API key (default: $OPENAI_API_KEY; optional for servers other than OpenAI's).",
    )(f)
    f = click.option(
        "--base-url",
        metavar="URL",
        help="API base URL, e.g. http://127.0.0.1:8080/v1 (default: the ledger's URL for a known id, "
        "then $OPENAI_BASE_URL, then https://api.openai.com/v1).",
    )(f)
    f = click.option("--json", "json_lines", is_flag=True, help="JSON lines even when stdout is a terminal.")(f)
    return f


def output_options(f: F) -> F:
    f = click.option(
        "--output-json",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the final Response JSON to this file.",
    )(f)
    f = click.option(
        "--show-output-text", is_flag=True, help="Include the output text in the final event (and stream deltas)."
    )(f)
    return f


def follow_options(f: F) -> F:
    f = click.option("--cancel-on-interrupt", is_flag=True, help="On Ctrl-C, cancel the job instead of detaching.")(f)
    f = click.option(
        "--timeout",
        type=float,
        callback=_positive,
        metavar="SECONDS",
        help="Give up following after this many seconds (exit 6; the job keeps running). Default: never.",
    )(f)
    f = click.option(
        "--poll-seconds",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        show_default=True,
        callback=_positive,
        help="Seconds between polls.",
    )(f)
    return f


def _options(ctx: click.Context, kw: dict[str, Any], *, stream: bool = False) -> SessionOptions:
    from bgmode.client.session import SessionOptions

    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    resume_argv = obj.get("resume_argv", DEFAULT_RESUME_ARGV)
    flags: list[str] = []
    if kw.get("base_url"):
        flags += ["--base-url", kw["base_url"]]
    if kw.get("poll_seconds", DEFAULT_POLL_SECONDS) != DEFAULT_POLL_SECONDS:
        flags += ["--poll-seconds", f"{kw['poll_seconds']:g}"]
    if kw.get("show_output_text"):
        flags.append("--show-output-text")
    if stream and obj.get("resume_stream_flag", True):
        flags.append("--stream")
    return SessionOptions(
        base_url=kw.get("base_url"),
        api_key=kw.get("api_key"),
        json_lines=bool(kw.get("json_lines")),
        show_output_text=bool(kw.get("show_output_text")),
        output_json=kw.get("output_json"),
        poll_seconds=float(kw.get("poll_seconds") or DEFAULT_POLL_SECONDS),
        timeout=kw.get("timeout"),
        stream=stream,
        cancel_on_interrupt=bool(kw.get("cancel_on_interrupt")),
        resume_argv=resume_argv,
        resume_flags=flags,
    )


def _ledger_base_url(response_id: str) -> str | None:
    try:
        job = Ledger().get(response_id)
    except Exception:
        return None
    return job.base_url if job is not None else None


def _session(options: SessionOptions, base_url: str) -> Session:
    """A Session with its ledger and client open (usage problems exit 2, ledger ones 7)."""
    from bgmode.client.session import Session, UsageProblem

    session = Session(options)
    try:
        session.open(base_url)
    except UsageProblem as err:
        raise click.UsageError(str(err)) from err
    except (OSError, sqlite3.Error) as err:
        session.error(f"cannot open the ledger: {err}")
        session.reporter.close()
        raise click.exceptions.Exit(int(ExitCode.ERROR)) from err
    return session


def _base_url(flag: str | None, response_id: str | None = None) -> str:
    from bgmode.client.session import resolve_base_url

    return resolve_base_url(flag, _ledger_base_url(response_id) if response_id else None)


def _exit(ctx: click.Context, code: ExitCode) -> None:
    ctx.exit(int(code))


# --------------------------------------------------------------------------- run


def _parse_metadata(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def load_messages(path: Path) -> list[dict[str, Any]]:
    """The skill's message array: [{"role": ..., "content": str | [parts]}, ...]."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise click.BadParameter(f"cannot read {path}: {err}", param_hint="--messages-json-file") from err
    if not isinstance(data, list) or not data:
        raise click.BadParameter("must hold a non-empty JSON array of messages", param_hint="--messages-json-file")
    for i, message in enumerate(data):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise click.BadParameter(f"message {i} needs a role and content", param_hint="--messages-json-file")
    return data


def _effort(value: str | None) -> str | None:
    return None if value == "omit" else value


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model name.")
@click.option(
    "--reasoning-effort", type=click.Choice(REASONING_EFFORTS), default=DEFAULT_REASONING_EFFORT, show_default=True
)
@click.option("--verbosity", type=click.Choice(VERBOSITIES), default=DEFAULT_VERBOSITY, show_default=True)
@click.option("--prompt", help="The user prompt.")
@click.option(
    "--messages-json-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A JSON array of input messages (role + content), instead of --prompt.",
)
@click.option("--instructions", help="System/developer instructions.")
@click.option(
    "--metadata",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_parse_metadata,
    help="Request metadata (repeatable).",
)
@click.option("--max-output-tokens", type=click.IntRange(min=1), help="Cap on output tokens.")
@click.option("--stream", is_flag=True, help="Create with stream=true and follow the event stream (resumes on drops).")
@follow_options
@output_options
@connection_options
@click.pass_context
def run(ctx: click.Context, /, **kw: Any) -> None:
    """Submit a background response and follow it to the end."""
    if (kw["prompt"] is None) == (kw["messages_json_file"] is None):
        raise click.UsageError("give exactly one of --prompt or --messages-json-file")
    from bgmode.client.api import ResponseRequest

    request = ResponseRequest(
        input=kw["prompt"] if kw["prompt"] is not None else load_messages(kw["messages_json_file"]),
        model=kw["model"],
        reasoning_effort=_effort(kw["reasoning_effort"]),
        verbosity=kw["verbosity"],
        metadata=kw["metadata"],
        max_output_tokens=kw["max_output_tokens"],
        instructions=kw["instructions"],
    )
    options = _options(ctx, kw, stream=kw["stream"])
    session = _session(options, _base_url(options.base_url))
    code = session.finish(
        lambda c: c.run(request, poll_seconds=options.poll_seconds, timeout=options.timeout, stream=options.stream)
    )
    _exit(ctx, code)


# --------------------------------------------------------------------------- monitor / stream


def _pick_id(response_id: str | None, flag_id: str | None, last: bool) -> str:
    given = [v for v in (response_id, flag_id) if v]
    if len(given) + int(last) != 1:
        raise click.UsageError("give exactly one of ID, --response-id or --last")
    if last:
        job = Ledger().last()
        if job is None or job.response_id is None:
            raise click.UsageError("the ledger has no jobs yet")
        return job.response_id
    return given[0]


@click.command()
@click.argument("response_id", required=False, metavar="[ID]")
@click.option("--response-id", "flag_id", metavar="ID", help="The response id (as in the skill's script).")
@click.option("--last", is_flag=True, help="Follow the newest job in the ledger.")
@click.option("--stream", is_flag=True, help="Follow by streaming (replays from the start; polls if not streamable).")
@follow_options
@output_options
@connection_options
@click.pass_context
def monitor(ctx: click.Context, /, response_id: str | None, flag_id: str | None, last: bool, **kw: Any) -> None:
    """Follow an existing response until it ends."""
    rid = _pick_id(response_id, flag_id, last)
    options = _options(ctx, kw, stream=kw["stream"])
    session = _session(options, _base_url(options.base_url, rid))
    if options.stream:
        code = session.finish(lambda c: c.stream(rid, poll_seconds=options.poll_seconds, timeout=options.timeout))
    else:
        code = session.finish(lambda c: c.follow(rid, poll_seconds=options.poll_seconds, timeout=options.timeout))
    _exit(ctx, code)


@click.command()
@click.argument("response_id", metavar="ID")
@click.option("--starting-after", type=click.IntRange(min=0), metavar="N", help="Resume after this sequence number.")
@follow_options
@output_options
@connection_options
@click.pass_context
def stream(ctx: click.Context, /, response_id: str, starting_after: int | None, **kw: Any) -> None:
    """Stream the events of a background+stream response (auto-resume; polls as a fallback)."""
    options = _options(ctx, kw, stream=True)
    session = _session(options, _base_url(options.base_url, response_id))
    code = session.finish(
        lambda c: c.stream(
            response_id,
            starting_after=starting_after,
            poll_seconds=options.poll_seconds,
            timeout=options.timeout,
        )
    )
    _exit(ctx, code)


# --------------------------------------------------------------------------- get / cancel / jobs


def _one_shot(
    ctx: click.Context, response_id: str, kw: dict[str, Any], event: str, call: Callable[[BackgroundClient], Any]
) -> None:
    options = _options(ctx, kw)
    from bgmode.client.api import ClientError, RequestRejected, ResponseExpired

    session = _session(options, _base_url(options.base_url, response_id))
    client = session.client
    assert client is not None
    try:
        try:
            response = call(client)
        except ResponseExpired as err:
            session.reporter(event, {"response_id": response_id, "status": EXPIRED, "error": {"message": str(err)}})
            _exit(ctx, ExitCode.EXPIRED)
            return
        except RequestRejected as err:
            fields: dict[str, Any] = {"response_id": response_id, "status": None, "error": {"message": str(err)}}
            try:
                fields["status"] = client.get(response_id, timeout=options.timeout or 30).status
            except (ClientError, KeyboardInterrupt):
                pass
            fields["status_code"] = err.status_code
            session.reporter(event, fields)
            _exit(ctx, ExitCode.ERROR)
            return
        except ClientError as err:
            _exit(ctx, session.error(str(err), response_id=response_id))
            return
        except KeyboardInterrupt:
            _exit(ctx, ExitCode.INTERRUPTED)
            return
        if event == "cancel":
            session.reporter(event, {"response_id": response.id, "status": response.status})
            _exit(ctx, ExitCode.COMPLETED if response.status == "cancelled" else ExitCode.ERROR)
            return
        session.final(response, event=event)
    finally:
        session.reporter.close()


@click.command()
@click.argument("response_id", metavar="ID")
@click.option("--timeout", type=float, callback=_positive, metavar="SECONDS", help="Give up retrying after this long.")
@output_options
@connection_options
@click.pass_context
def get(ctx: click.Context, /, response_id: str, **kw: Any) -> None:
    """Retrieve a response once and show its status (exit 0 if found, 5 if unknown)."""
    _one_shot(ctx, response_id, kw, "response", lambda c: c.get(response_id, timeout=kw["timeout"]))


@click.command()
@click.argument("response_id", metavar="ID")
@click.option("--timeout", type=float, callback=_positive, metavar="SECONDS", help="Give up retrying after this long.")
@connection_options
@click.pass_context
def cancel(ctx: click.Context, /, response_id: str, **kw: Any) -> None:
    """Cancel a background response (exit 0 once it is cancelled)."""
    _one_shot(ctx, response_id, kw, "cancel", lambda c: c.cancel(response_id, timeout=kw["timeout"]))


#: how long `bgmode jobs --server` retries an unreachable or overloaded server
LIST_TIMEOUT = 60.0


@click.command()
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Newest N jobs (0: all).")
@click.option("--json", "json_lines", is_flag=True, help="JSON lines even when stdout is a terminal.")
@click.option(
    "--watch",
    is_flag=True,
    help="A live table, newest first, refreshed from the server until every job shown has finished.",
)
@click.option(
    "--interval",
    type=float,
    default=2.0,
    show_default=True,
    callback=_positive,
    metavar="SECONDS",
    help="With --watch: seconds between refreshes.",
)
@click.option(
    "--server",
    is_flag=True,
    help="List the server's responses (GET /v1/responses, a bgmode extension), newest first, instead of the ledger.",
)
@click.option(
    "--status",
    type=click.Choice(["queued", "in_progress", "completed", "failed", "cancelled", "incomplete"]),
    help="With --server: only responses with this status.",
)
@click.option("--model", metavar="NAME", help="With --server: only responses of this model.")
@click.option(
    "--base-url",
    metavar="URL",
    help="With --watch: ask this server (default: each job's own). With --server: the server to list "
    "(default: $OPENAI_BASE_URL, then https://api.openai.com/v1).",
)
@click.option("--api-key", metavar="KEY", help="With --watch or --server: API key (default: $OPENAI_API_KEY).")
@click.pass_context
def jobs(
    ctx: click.Context,
    /,
    limit: int,
    json_lines: bool,
    watch: bool,
    interval: float,
    server: bool,
    status: str | None,
    model: str | None,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """List the jobs in the local ledger (oldest first; with --watch, a live view, newest first;
    with --server, what the server has, newest first)."""
    from bgmode.client.output import make_reporter

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)

    if watch and server:
        raise click.UsageError("give at most one of --watch and --server")
    for name, flag in (("status", "--status"), ("model", "--model")):
        if given(name) and not server:
            raise click.UsageError(f"{flag} needs --server (the ledger is listed without filters)")
    for name, flag in (("base_url", "--base-url"), ("api_key", "--api-key")):
        if given(name) and not (watch or server):
            raise click.UsageError(f"{flag} needs --watch or --server (the ledger is read without a server)")
    if given("interval") and not watch:
        raise click.UsageError("--interval needs --watch")
    if server:
        _exit(ctx, _list_server(base_url, api_key, status=status, model=model, limit=limit, json_lines=json_lines))
        return
    if watch:
        import sys

        from bgmode.client.session import UsageProblem
        from bgmode.client.watch import Watch

        try:
            code = Watch(
                limit=limit or None,
                interval=interval,
                base_url=base_url,
                api_key=api_key,
                json_lines=json_lines or not sys.stdout.isatty(),
            ).run()
        except UsageProblem as err:
            raise click.UsageError(str(err)) from err
        _exit(ctx, code)
        return
    reporter = make_reporter(json_lines=json_lines, show_output_text=False)
    try:
        for job in Ledger().list(limit or None):
            reporter("job", job.to_dict())
    finally:
        reporter.close()


def _list_server(
    base_url: str | None, api_key: str | None, *, status: str | None, model: str | None, limit: int, json_lines: bool
) -> ExitCode:
    """`bgmode jobs --server`: one `job` event per listed response, newest first."""
    from datetime import UTC, datetime

    from bgmode.client.api import BackgroundClient, ClientError, FollowTimeout, resolve_api_key, resolve_base_url
    from bgmode.client.output import make_reporter
    from bgmode.client.session import UsageProblem

    url = resolve_base_url(base_url)
    try:
        key = resolve_api_key(api_key, url)
    except UsageProblem as err:
        raise click.UsageError(str(err)) from err
    reporter = make_reporter(json_lines=json_lines, show_output_text=False)
    client = BackgroundClient(base_url=url, api_key=key, on_event=reporter)
    try:
        try:
            listed = client.list_responses(status=status, model=model, limit=limit or None, timeout=LIST_TIMEOUT)
        except FollowTimeout:
            reporter("error", {"message": f"no answer from {url} within {LIST_TIMEOUT:g} s"})
            return ExitCode.ERROR
        except ClientError as err:
            reporter("error", {"message": str(err), "status_code": getattr(err, "status_code", None)})
            return ExitCode.ERROR
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
        for response in listed:
            created = getattr(response, "created_at", None)
            usage = getattr(response, "usage", None)
            reporter(
                "job",
                {
                    "response_id": response.id,
                    "status": getattr(response, "status", None),
                    "model": getattr(response, "model", None),
                    "created_at": None
                    if not isinstance(created, int | float)
                    else datetime.fromtimestamp(created, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
                    "background": getattr(response, "background", None),
                    "output_tokens": getattr(usage, "output_tokens", None),
                    "base_url": url,
                },
            )
        return ExitCode.COMPLETED
    finally:
        reporter.close()


# --------------------------------------------------------------------------- batch


@click.command()
@click.argument("input_path", metavar="INPUT.jsonl", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=8, show_default=True, help="Most jobs in flight at once."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append one JSON result per line here as each finishes (lines already in it are skipped on a rerun). "
    "Default: stdout when it is not a terminal, else INPUT.results.jsonl.",
)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Default model for prompt lines.")
@click.option(
    "--reasoning-effort", type=click.Choice(REASONING_EFFORTS), default=DEFAULT_REASONING_EFFORT, show_default=True
)
@click.option("--verbosity", type=click.Choice(VERBOSITIES), default=DEFAULT_VERBOSITY, show_default=True)
@click.option("--instructions", help="Default instructions for prompt lines.")
@click.option(
    "--metadata",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_parse_metadata,
    help="Metadata for prompt lines (repeatable; a line's own keys win).",
)
@click.option("--max-output-tokens", type=click.IntRange(min=1), help="Default cap on output tokens.")
@click.option(
    "--poll-seconds",
    type=float,
    default=DEFAULT_POLL_SECONDS,
    show_default=True,
    callback=_positive,
    help="Seconds between polls of each job.",
)
@connection_options
@click.pass_context
def batch(ctx: click.Context, /, input_path: Path, **kw: Any) -> None:
    """Submit every line of INPUT.jsonl as a background response and follow them all (resumable).

    A line is {"prompt": ...} (the flags fill in the rest) or a full create body ({"input": ...}).
    Run the same command again after an interruption or a crash: submitted lines are followed,
    never sent twice. Exit code: 0 if every line completed, else the worst outcome's.
    """
    import sys

    from bgmode.client.batch import Batch, BatchOptions, Defaults
    from bgmode.client.session import UsageProblem, resolve_api_key

    base_url = _base_url(kw["base_url"])
    try:
        api_key = resolve_api_key(kw["api_key"], base_url)
    except UsageProblem as err:
        raise click.UsageError(str(err)) from err
    json_lines = bool(kw["json_lines"]) or not sys.stdout.isatty()
    output = kw["output"]
    if output is None and not json_lines:
        output = input_path.with_name(input_path.name.removesuffix(".jsonl") + ".results.jsonl")
    options = BatchOptions(
        input_path=input_path,
        base_url=base_url,
        api_key=api_key,
        concurrency=kw["concurrency"],
        poll_seconds=kw["poll_seconds"],
        output=output,
        defaults=Defaults(
            model=kw["model"],
            reasoning_effort=_effort(kw["reasoning_effort"]),
            verbosity=kw["verbosity"],
            instructions=kw["instructions"],
            max_output_tokens=kw["max_output_tokens"],
            metadata=kw["metadata"],
        ),
        json_lines=json_lines,
    )
    try:
        code = Batch(options).run()
    except (OSError, sqlite3.Error) as err:
        click.echo(f"bgmode batch: {err}", err=True)
        code = ExitCode.ERROR
    _exit(ctx, code)


# --------------------------------------------------------------------------- mcp


@click.command()
@click.option(
    "--base-url",
    metavar="URL",
    help="API base URL (default: the ledger's URL for a known id, then $OPENAI_BASE_URL, then OpenAI's).",
)
@click.option(
    "--api-key-env",
    metavar="VAR",
    default="OPENAI_API_KEY",
    show_default=True,
    help="Environment variable holding the API key.",
)
def mcp(base_url: str | None, api_key_env: str) -> None:
    """Serve background responses as MCP tools over stdio (for coding agents and assistants)."""
    from bgmode.client.mcp_server import serve_stdio

    serve_stdio(base_url=base_url, api_key_env=api_key_env)


def register(group: click.Group) -> None:
    """Add the client commands to the `bgmode` group."""
    for command in (run, monitor, get, cancel, stream, jobs, batch, mcp):
        group.add_command(command)
