"""How the client commands show progress: JSON lines, or a live view for a terminal.

Both reporters take the same `(event name, fields)` events. `JsonLinesReporter` writes one
JSON object per line (`{"event": ..., "ts": ..., **fields}`) and flushes at once, for
agents and scripts; `LiveReporter` draws a rich spinner with the status, the elapsed time and
the streamed text, and prints a summary at the end.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

#: events that are only shown with --show-output-text in JSON mode
_TEXT_EVENTS = frozenset({"delta"})
_STATUS_STYLE = {
    "completed": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "incomplete": "bold yellow",
    "expired": "bold red",
    "queued": "cyan",
    "in_progress": "cyan",
}


def iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Reporter:
    """Receives the client's events. Subclasses render them."""

    def __init__(self, *, show_output_text: bool = False) -> None:
        self.show_output_text = show_output_text

    def __call__(self, name: str, fields: dict[str, Any]) -> None:
        self.emit(name, fields)

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop any live display (idempotent)."""


class JsonLinesReporter(Reporter):
    """One JSON object per line, flushed immediately."""

    def __init__(self, out: IO[str] | None = None, *, show_output_text: bool = False) -> None:
        super().__init__(show_output_text=show_output_text)
        self.out = out if out is not None else sys.stdout
        self.broken = False

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        if name in _TEXT_EVENTS and not self.show_output_text:
            return
        if name == "warning":
            # diagnostics go to stderr so stdout stays one event per line for the caller
            print(f"bgmode: warning: {fields.get('message')}", file=sys.stderr, flush=True)
            return
        if self.broken:
            return
        record: dict[str, Any] = {"event": name, "ts": iso_now()}
        record.update(fields)
        if not self.show_output_text:
            record.pop("output_text", None)
        try:
            self.out.write(orjson.dumps(record, default=str).decode() + "\n")
            self.out.flush()
        except BrokenPipeError:
            # the reader went away: keep following (the ledger still gets the outcome), quietly
            self.broken = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())


class LiveReporter(Reporter):
    """A live terminal view: spinner, status, elapsed time, streamed text; then a summary."""

    #: how many lines of streamed text stay visible under the spinner
    tail_lines = 15

    def __init__(self, console: Console | None = None, *, show_output_text: bool = True) -> None:
        super().__init__(show_output_text=show_output_text)
        self.console = console if console is not None else Console()
        self.started = time.monotonic()
        self.response_id: str | None = None
        self.status = "starting"
        self.text: list[str] = []
        self.note = ""
        self.jobs: list[dict[str, Any]] = []
        self._live: Live | None = None

    # ---------------------------------------------------------------- live part

    def _render(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        head = Text.assemble(
            (self.status, _STATUS_STYLE.get(self.status, "bold")),
            f"  {elapsed:6.1f}s  ",
            (self.response_id or "", "dim"),
        )
        parts: list[RenderableType] = [Spinner("dots", text=head)]
        if self.text:
            lines = "".join(self.text).splitlines()[-self.tail_lines :]
            parts.append(Text("\n".join(lines)))
        if self.note:
            parts.append(Text(self.note, style="dim yellow"))
        return Group(*parts)

    def _ensure_live(self) -> None:
        if self._live is None:
            self._live = Live(
                get_renderable=self._render,
                console=self.console,
                refresh_per_second=8,
                transient=True,
            )
            self._live.start()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self.jobs:
            self._print_jobs()
            self.jobs = []

    # ---------------------------------------------------------------- events

    def emit(self, name: str, fields: dict[str, Any]) -> None:
        rid = fields.get("response_id")
        if isinstance(rid, str):
            self.response_id = rid
        status = fields.get("status")
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(fields)
            return
        if isinstance(status, str):
            self.status = status
        self._ensure_live()

    def _on_submit_start(self, fields: dict[str, Any]) -> None:
        self.status = "submitting"
        self.console.print(
            f"[bold]bgmode[/] {escape(str(fields.get('model')))} → {escape(str(fields.get('base_url')))}"
            f"  [dim]{escape(str(fields.get('input_summary') or ''))}[/]"
        )
        self._ensure_live()

    def _on_submitted(self, fields: dict[str, Any]) -> None:
        self.status = str(fields.get("status") or "queued")
        self._ensure_live()
        self.console.print(f"submitted [bold]{escape(str(fields.get('response_id')))}[/]")

    def _on_delta(self, fields: dict[str, Any]) -> None:
        self.text.append(str(fields.get("text", "")))
        self._ensure_live()

    def _on_retry(self, fields: dict[str, Any]) -> None:
        self.note = (
            f"{fields.get('operation')} failed ({fields.get('error')}); "
            f"retry {fields.get('attempt')} in {fields.get('delay_seconds')}s"
        )
        self._ensure_live()

    def _on_stream_resume(self, fields: dict[str, Any]) -> None:
        self.note = f"stream dropped; resuming after event {fields.get('starting_after')}"
        self._ensure_live()

    def _on_stream_fallback(self, fields: dict[str, Any]) -> None:
        self.note = f"streaming unavailable ({fields.get('reason')}); polling"
        self._ensure_live()

    def _on_warning(self, fields: dict[str, Any]) -> None:
        self.note = str(fields.get("message"))

    def _on_final(self, fields: dict[str, Any]) -> None:
        self.close()
        status = str(fields.get("status"))
        self.status = status
        text = fields.get("output_text")
        if self.show_output_text and text:
            self.console.print(Text(str(text)))
        elif self.text:
            self.console.print(Text("".join(self.text)))
        self.console.print(self._summary(fields))
        if fields.get("output_json"):
            self.console.print(f"[dim]response JSON written to {escape(str(fields['output_json']))}[/]")

    def _summary(self, fields: dict[str, Any]) -> Text:
        status = str(fields.get("status"))
        out = Text.assemble(
            (status, _STATUS_STYLE.get(status, "bold")),
            f"  {fields.get('response_id')}",
        )
        if fields.get("elapsed_seconds") is not None:
            out.append(f"  {float(fields['elapsed_seconds']):.1f}s")
        usage = fields.get("usage")
        if isinstance(usage, dict):
            out.append(
                f"  tokens in {usage.get('input_tokens')} / out {usage.get('output_tokens')}",
                style="dim",
            )
        error = fields.get("error")
        if isinstance(error, dict):
            out.append(f"\nerror: {error.get('code')}: {error.get('message')}", style="red")
        details = fields.get("incomplete_details")
        if isinstance(details, dict):
            out.append(f"\nincomplete: {details.get('reason')}", style="yellow")
        return out

    def _on_timeout(self, fields: dict[str, Any]) -> None:
        self.close()
        self.console.print(
            f"[yellow]gave up following after --timeout[/] (last status {escape(str(fields.get('status')))})"
            f"\nresume with: [bold]{escape(str(fields.get('resume_command')))}[/]"
        )

    def _on_interrupted(self, fields: dict[str, Any]) -> None:
        self.close()
        if fields.get("response_id") is None:
            self.console.print("[yellow]interrupted before the response id was known[/]")
            return
        if fields.get("action") == "cancelled":
            self.console.print(
                f"[yellow]interrupted: cancelled {escape(str(fields.get('response_id')))}[/]"
                f" (status {escape(str(fields.get('status')))})"
            )
            return
        self.console.print(
            f"[yellow]interrupted[/]; {escape(str(fields.get('response_id')))} keeps running"
            f" (last status {escape(str(fields.get('status')))})"
            f"\nresume with: [bold]{escape(str(fields.get('resume_command')))}[/]"
        )

    def _on_error(self, fields: dict[str, Any]) -> None:
        self.close()
        self.console.print(f"[bold red]error[/]: {escape(str(fields.get('message')))}")
        if fields.get("resume_command"):
            self.console.print(f"resume with: [bold]{escape(str(fields.get('resume_command')))}[/]")

    def _on_response(self, fields: dict[str, Any]) -> None:
        text = fields.get("output_text")
        if self.show_output_text and text:
            self.console.print(Text(str(text)))
        self.console.print(self._summary(fields))

    def _on_cancel(self, fields: dict[str, Any]) -> None:
        status = str(fields.get("status"))
        self.console.print(
            Text.assemble(
                "cancel ",
                (str(fields.get("response_id")), "bold"),
                ": ",
                (status, _STATUS_STYLE.get(status, "bold")),
            )
        )

    def _on_job(self, fields: dict[str, Any]) -> None:
        self.jobs.append(fields)

    def _print_jobs(self) -> None:
        # the ledger knows each job's prompt; a server listing (`jobs --server`) its output size
        server = all("prompt_summary" not in job for job in self.jobs)
        table = Table("created", "response id", "status", "model", "output tokens" if server else "prompt", "base url")
        for job in self.jobs:
            status = str(job.get("status"))
            fourth = job.get("output_tokens") if server else job.get("prompt_summary")
            table.add_row(
                str(job.get("created_at") or "")[:19].replace("T", " "),
                str(job.get("response_id") or "-"),
                Text(status, style=_STATUS_STYLE.get(status, "")),
                str(job.get("model") or ""),
                "" if fourth is None else str(fourth),
                str(job.get("base_url") or ""),
            )
        self.console.print(table)


def make_reporter(*, json_lines: bool, show_output_text: bool) -> Reporter:
    """JSON lines when asked or when stdout is not a terminal; else the live view."""
    if json_lines or not sys.stdout.isatty():
        return JsonLinesReporter(show_output_text=show_output_text)
    return LiveReporter(show_output_text=True)
