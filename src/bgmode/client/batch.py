"""`bgmode batch`: many background responses from a JSON-lines file, followed together.

Each input line is `{"prompt": ..., [model, reasoning_effort, verbosity, instructions,
max_output_tokens, metadata]}` (the `run` flags fill in what is missing) or a full create body
(`{"input": ..., "model": ..., ...}`; `background: true` is added, `stream` dropped). At most
`concurrency` lines are in flight (submitted and not finished); each is followed by polling
and written to the output as it finishes.

Resuming: before a line's create is sent, the ledger records (input file + base URL, line
number, line hash) -> Idempotency-Key; once the server answers, the response id. Running the
same command again follows every line that has an id, resends a line whose answer never
arrived with the *same* key (the server returns the response it already made), and submits
only lines never sent. Lines already in `--output` are not touched again. A line edited since
it was sent is a different request: it is submitted anew.
"""

from __future__ import annotations

import hashlib
import queue
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from openai.types.responses import Response
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bgmode.client.api import (
    BackgroundClient,
    Backoff,
    ClientError,
    RequestRejected,
    ResponseExpired,
    ResponseRequest,
    SubmitError,
    describe_error,
    new_idempotency_key,
)
from bgmode.client.ledger import BatchLine, Ledger
from bgmode.client.outcome import EXPIRED, ExitCode, exit_code_for
from bgmode.client.output import _STATUS_STYLE, iso_now

#: outcomes from best to worst; the batch exits with the worst one's code
SEVERITY = ("completed", "incomplete", "cancelled", "failed", EXPIRED, "error")
#: seconds to wait before resending a create the server refused for now (without Retry-After)
RETRY_LATER_SECONDS = 2.0
#: create attempts on connection errors before a line is given up (as `error`, resumable)
CONNECTION_ROUNDS = 5


def batch_key(input_path: Path, base_url: str) -> str:
    """What identifies "the same batch" across runs: the input file and the server."""
    raw = f"{input_path.resolve()}\0{base_url.rstrip('/')}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def line_sha(raw: str) -> str:
    return hashlib.sha256(raw.strip().encode()).hexdigest()[:32]


def outcome(status: str | None) -> str:
    return status if status in SEVERITY else "error"


def batch_exit_code(statuses: list[str]) -> ExitCode:
    """0 if every line completed, else the exit code of the worst outcome."""
    worst = max((SEVERITY.index(outcome(s)) for s in statuses), default=0)
    name = SEVERITY[worst]
    return ExitCode.ERROR if name == "error" else exit_code_for(name)


@dataclass
class BodyRequest(ResponseRequest):
    """A line that is a full create body: sent as given, with `background: true`."""

    body: dict[str, Any] = field(default_factory=dict)

    def create_params(self) -> dict[str, Any]:
        params = {k: v for k, v in self.body.items() if k != "stream"}
        params.setdefault("model", self.model)
        params["background"] = True
        return params


@dataclass
class Line:
    number: int  # 1-based line number in the input file
    sha: str
    request: ResponseRequest | None = None
    problem: str | None = None


@dataclass
class Defaults:
    model: str
    reasoning_effort: str | None
    verbosity: str | None
    instructions: str | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)


_PROMPT_KEYS = {"prompt", "model", "reasoning_effort", "verbosity", "instructions", "max_output_tokens", "metadata"}


def parse_line(number: int, raw: str, defaults: Defaults) -> Line:
    line = Line(number=number, sha=line_sha(raw))
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        line.problem = f"line {number} is not JSON: {err}"
        return line
    if not isinstance(data, dict):
        line.problem = f"line {number} must be a JSON object"
        return line
    if "prompt" in data:
        unknown = sorted(set(data) - _PROMPT_KEYS)
        if unknown or not isinstance(data["prompt"], str):
            line.problem = (
                f"line {number}: unknown keys {unknown} beside prompt"
                if unknown
                else f"line {number}: prompt must be a string"
            )
            return line
        metadata = {**defaults.metadata, **{str(k): str(v) for k, v in (data.get("metadata") or {}).items()}}
        line.request = ResponseRequest(
            input=data["prompt"],
            model=str(data.get("model") or defaults.model),
            reasoning_effort=data.get("reasoning_effort", defaults.reasoning_effort),
            verbosity=data.get("verbosity", defaults.verbosity),
            metadata=metadata,
            max_output_tokens=data.get("max_output_tokens", defaults.max_output_tokens),
            instructions=data.get("instructions", defaults.instructions),
        )
        return line
    if "input" in data:
        line.request = BodyRequest(input=data["input"], model=str(data.get("model") or defaults.model), body=data)
        return line
    line.problem = f'line {number} needs "prompt" (a string) or "input" (a create body)'
    return line


def read_input(path: Path, defaults: Defaults) -> list[Line]:
    lines: list[Line] = []
    with path.open(encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip():
                lines.append(parse_line(number, raw, defaults))
    return lines


def lines_already_written(output: Path) -> set[int]:
    """Line numbers with a record in `output`; a torn last record (a crash mid-write) is cut off."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    done: set[int] = set()
    good = 0
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            break  # no newline: torn
        chunk = data[pos:end]
        pos = end + 1
        if not chunk.strip():
            good = pos
            continue
        try:
            record = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            break
        if isinstance(record, dict) and isinstance(record.get("line"), int):
            done.add(record["line"])
        good = pos
    if good < len(data):
        with output.open("r+b") as f:
            f.truncate(good)
    return done


def _dump(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


# --------------------------------------------------------------------------- the run


@dataclass
class BatchOptions:
    input_path: Path
    base_url: str
    api_key: str | None
    concurrency: int
    poll_seconds: float
    output: Path | None
    defaults: Defaults
    json_lines: bool


@dataclass
class _Track:
    line: int
    response_id: str | None = None
    status: str = "pending"
    started: float = field(default_factory=time.monotonic)


class Batch:
    """Runs one `bgmode batch` invocation; `run()` returns the exit code."""

    def __init__(self, options: BatchOptions, *, out: IO[str] | None = None) -> None:
        self.options = options
        self.out = out if out is not None else sys.stdout
        self.ledger = Ledger()
        self.key = batch_key(options.input_path, options.base_url)
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.tracks: dict[int, _Track] = {}
        self.outcomes: list[str] = []
        self.counts: Counter[str] = Counter()
        self.output_tokens = 0
        self.submitted = 0
        self.started = time.monotonic()
        self.total = 0
        self._live: Live | None = None
        self._console: Console | None = None
        self._output_file: IO[bytes] | None = None

    # ---------------------------------------------------------------- reporting

    def _emit(self, name: str, fields: dict[str, Any]) -> None:
        if not self.options.json_lines:
            return
        record: dict[str, Any] = {"event": name, "ts": iso_now(), **fields}
        self.out.write(orjson.dumps(record, default=str).decode() + "\n")
        self.out.flush()

    def _render(self) -> RenderableType:
        done = len(self.outcomes)
        elapsed = time.monotonic() - self.started
        running = sum(1 for t in self.tracks.values() if t.response_id and t.status in ("queued", "in_progress"))
        failed = sum(1 for o in self.outcomes if o != "completed")
        eta = "-"
        if done:
            eta = f"{elapsed / done * (self.total - done):.0f}s"
        head = Text.assemble(
            (f"{done}/{self.total} done", "bold"),
            f"  submitted {self.submitted}  running {running}  ",
            ("failed " + str(failed), "red" if failed else ""),
            f"  tokens {self.output_tokens}  elapsed {elapsed:.0f}s  ETA {eta}",
        )
        table = Table("line", "response id", "status", "elapsed", box=None)
        for t in sorted(self.tracks.values(), key=lambda t: t.line)[:20]:
            table.add_row(
                str(t.line),
                t.response_id or "-",
                Text(t.status, style=_STATUS_STYLE.get(t.status, "")),
                f"{time.monotonic() - t.started:.1f}s",
            )
        return Group(ProgressBar(total=max(1, self.total), completed=done), head, table)

    # ---------------------------------------------------------------- workers

    def _client(self, line: int) -> BackgroundClient:
        def sink(name: str, fields: dict[str, Any]) -> None:
            if name in ("poll", "retry"):
                self.events.put((name, {"line": line, **fields}))

        return BackgroundClient(
            base_url=self.options.base_url,
            api_key=self.options.api_key,
            on_event=sink,
            ledger=self.ledger,
            backoff=Backoff(initial=min(1.0, max(0.1, self.options.poll_seconds))),
        )

    def _submit(self, line: Line, known: BatchLine | None, client: BackgroundClient) -> Response | None:
        """Create the line's response (resending with the recorded key after a crash)."""
        assert line.request is not None
        if known is not None and known.line_sha == line.sha:
            key = known.idempotency_key  # sent before, answer never recorded: the server knows this key
        else:
            key = new_idempotency_key()
            self.ledger.batch_line_submitting(self.key, line.number, line.sha, key)
        rounds = 0
        while True:
            try:
                return client.submit(line.request, idempotency_key=key)
            except SubmitError as err:
                later = err.status_code in (429, 503)
                if err.status_code is None:
                    rounds += 1
                    later = rounds < CONNECTION_ROUNDS
                if not later:
                    self.ledger.batch_line_update(self.key, line.number, status="submit_failed")
                    self.events.put(("result", self._record(line.number, None, "error", error=str(err))))
                    return None
                delay = err.retry_after if err.retry_after is not None else RETRY_LATER_SECONDS
                self.events.put(
                    (
                        "retry",
                        {
                            "line": line.number,
                            "operation": "create",
                            "status_code": err.status_code,
                            "delay_seconds": delay,
                            "error": str(err),
                        },
                    )
                )
                time.sleep(delay)

    def _work(self, line: Line, known: BatchLine | None) -> None:
        started = time.monotonic()
        if line.problem is not None:
            self.events.put(("result", self._record(line.number, None, "error", error=line.problem)))
            return
        client = self._client(line.number)
        try:
            if known is not None and known.line_sha == line.sha and known.response_id is not None:
                rid = known.response_id
                self.events.put(("submitted", {"line": line.number, "response_id": rid, "resumed": True}))
            else:
                created = self._submit(line, known, client)
                if created is None:
                    return
                rid = created.id
                self.ledger.batch_line_update(self.key, line.number, status=created.status or "queued", response_id=rid)
                self.events.put(
                    ("submitted", {"line": line.number, "response_id": rid, "status": created.status, "resumed": False})
                )
            try:
                final = client.follow(rid, poll_seconds=self.options.poll_seconds)
            except ResponseExpired as err:
                self.ledger.batch_line_update(self.key, line.number, status=EXPIRED)
                self.events.put(("result", self._record(line.number, rid, EXPIRED, error=str(err))))
                return
            except (RequestRejected, ClientError) as err:
                self.events.put(("result", self._record(line.number, rid, "error", error=str(err))))
                return
            self.ledger.batch_line_update(self.key, line.number, status=final.status or "error")
            record = self._record(line.number, rid, final.status or "error")
            record.update(
                output_text=final.output_text,
                usage=_dump(final.usage) if final.usage is not None else None,
                error=_dump(final.error) if final.error is not None else None,
                incomplete_details=_dump(final.incomplete_details) if final.incomplete_details else None,
                elapsed_seconds=round(time.monotonic() - started, 3),
            )
            self.events.put(("result", record))
        except Exception as err:  # a worker never dies silently: the line is reported
            self.events.put(("result", self._record(line.number, None, "error", error=describe_error(err))))

    @staticmethod
    def _record(line: int, response_id: str | None, status: str, *, error: str | None = None) -> dict[str, Any]:
        return {
            "line": line,
            "response_id": response_id,
            "status": status,
            "output_text": None,
            "usage": None,
            "error": None if error is None else {"code": None, "message": error},
            "incomplete_details": None,
        }

    # ---------------------------------------------------------------- main loop

    def _handle(self, name: str, fields: dict[str, Any]) -> None:
        line = int(fields["line"])
        track = self.tracks.setdefault(line, _Track(line))
        if name == "submitted":
            self.submitted += 1
            track.response_id = fields["response_id"]
            track.status = str(fields.get("status") or "submitted")
            self._emit("submitted", fields)
        elif name == "poll":
            track.status = str(fields.get("status"))
        elif name == "retry":
            self._emit("retry", fields)
        elif name == "result":
            self.tracks.pop(line, None)
            status = str(fields["status"])
            self.outcomes.append(status)
            self.counts[outcome(status)] += 1
            usage = fields.get("usage")
            if isinstance(usage, dict):
                self.output_tokens += int(usage.get("output_tokens") or 0)
            if self._output_file is not None:
                self._output_file.write(orjson.dumps(fields) + b"\n")
                self._output_file.flush()
                shown = {k: v for k, v in fields.items() if k != "output_text"}
                self._emit("result", shown)
            else:
                self._emit("result", fields)
            if self._console is not None:
                style = _STATUS_STYLE.get(status, "")
                self._console.print(
                    Text.assemble(f"line {line} ", (status, style), f"  {fields.get('response_id') or ''}")
                )

    def run(self) -> ExitCode:
        opts = self.options
        lines = read_input(opts.input_path, opts.defaults)
        done = lines_already_written(opts.output) if opts.output is not None else set()
        known = self.ledger.batch_lines(self.key)
        todo = [ln for ln in lines if ln.number not in done]
        # jobs already submitted first (they hold their slots), then lines never sent, in order
        todo.sort(key=lambda ln: (not (ln.number in known and known[ln.number].response_id is not None), ln.number))
        self.total = len(todo)
        resumed = sum(1 for ln in todo if ln.number in known and known[ln.number].line_sha == ln.sha)
        self._emit(
            "batch_start",
            {
                "input": str(opts.input_path),
                "lines": len(lines),
                "already_written": len(lines) - len(todo),
                "to_follow": resumed,
                "to_submit": len(todo) - resumed,
                "concurrency": opts.concurrency,
                "base_url": opts.base_url,
                "output": None if opts.output is None else str(opts.output),
            },
        )
        if opts.output is not None:
            opts.output.parent.mkdir(parents=True, exist_ok=True)
            self._output_file = opts.output.open("ab")
        pending: queue.Queue[Line | None] = queue.Queue()
        for ln in todo:
            pending.put(ln)

        def worker() -> None:
            while True:
                item = pending.get()
                if item is None:
                    return
                self._work(item, known.get(item.number))

        for _ in range(min(opts.concurrency, max(1, len(todo)))):
            pending.put(None)
            threading.Thread(target=worker, daemon=True).start()
        if not opts.json_lines:
            self._console = Console()
            self._live = Live(get_renderable=self._render, console=self._console, refresh_per_second=4, transient=True)
            self._live.start()
        interrupted = False
        try:
            while len(self.outcomes) < len(todo):
                try:
                    name, fields = self.events.get(timeout=0.5)
                except queue.Empty:
                    continue
                self._handle(name, fields)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if self._live is not None:
                self._live.stop()
            if self._output_file is not None:
                self._output_file.close()
        code = ExitCode.INTERRUPTED if interrupted else batch_exit_code(self.outcomes)
        summary = {
            "lines": len(lines),
            "finished": len(self.outcomes),
            "counts": dict(self.counts),
            "output_tokens": self.output_tokens,
            "elapsed_seconds": round(time.monotonic() - self.started, 3),
            "exit_code": int(code),
            "interrupted": interrupted,
        }
        self._emit("summary", summary)
        if self._console is not None:
            self._print_summary(summary, interrupted)
        return code

    def _print_summary(self, summary: dict[str, Any], interrupted: bool) -> None:
        assert self._console is not None
        counts = ", ".join(f"{n} {k}" for k, n in sorted(summary["counts"].items())) or "nothing to do"
        self._console.print(
            f"[bold]batch[/]: {summary['finished']} finished ({counts}), {summary['output_tokens']} output tokens,"
            f" {summary['elapsed_seconds']:.1f}s"
        )
        if self.options.output is not None:
            self._console.print(f"results in {self.options.output}")
        if interrupted:
            self._console.print("[yellow]interrupted[/]: run the same command again to resume (nothing is resent)")
