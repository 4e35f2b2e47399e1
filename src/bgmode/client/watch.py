"""`bgmode jobs --watch`: the ledger's jobs, newest first, refreshed from their servers.

A live table on a terminal (status, elapsed time, output size), JSON lines otherwise (one
`job` event whenever a job's status or output size changes). It ends when every job shown is
finished (or has no id to ask about), or on Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bgmode.client.api import BackgroundClient, Backoff, ClientError, ResponseExpired, describe_error
from bgmode.client.ledger import Job, Ledger
from bgmode.client.outcome import EXPIRED, TERMINAL_STATUSES, ExitCode
from bgmode.client.output import _STATUS_STYLE, iso_now
from bgmode.client.session import resolve_api_key, resolve_base_url

FINAL = TERMINAL_STATUSES | {EXPIRED}


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class Row:
    job: Job
    status: str
    output_chars: int | None = None
    output_tokens: int | None = None
    ended: float | None = None
    note: str | None = None
    fetched: bool = False

    @property
    def done(self) -> bool:
        return self.job.response_id is None or self.status in FINAL

    def elapsed(self) -> float | None:
        start = _epoch(self.job.created_at)
        if start is None:
            return None
        end = self.ended if self.ended is not None else time.time()
        return round(max(0.0, end - start), 1)

    def fields(self) -> dict[str, Any]:
        return {
            "response_id": self.job.response_id,
            "status": self.status,
            "model": self.job.model,
            "prompt_summary": self.job.prompt_summary,
            "elapsed_seconds": self.elapsed(),
            "output_chars": self.output_chars,
            "output_tokens": self.output_tokens,
            "note": self.note,
        }


class Watch:
    def __init__(
        self,
        *,
        limit: int | None,
        interval: float,
        base_url: str | None,
        api_key: str | None,
        json_lines: bool,
        out: IO[str] | None = None,
    ) -> None:
        self.ledger = Ledger()
        self.interval = interval
        self.base_url = base_url
        self.api_key = api_key
        self.json_lines = json_lines
        self.out = out if out is not None else sys.stdout
        self.rows: list[Row] = []
        for job in self.ledger.newest(limit):
            row = Row(job=job, status=job.status)
            if row.done:
                row.ended = _epoch(job.updated_at)
            self.rows.append(row)
        self._clients: dict[str, BackgroundClient] = {}

    def _client(self, job: Job) -> BackgroundClient:
        base_url = resolve_base_url(self.base_url, job.base_url)
        client = self._clients.get(base_url)
        if client is None:
            client = BackgroundClient(
                base_url=base_url,
                api_key=resolve_api_key(self.api_key, base_url),
                ledger=self.ledger,
                backoff=Backoff(initial=0.25, maximum=2.0),
                request_timeout=15.0,
            )
            self._clients[base_url] = client
        return client

    def _refresh(self, row: Row) -> bool:
        """Ask the server about one job; True if something shown changed."""
        rid = row.job.response_id
        assert rid is not None
        before = (row.status, row.output_chars, row.note)
        try:
            response = self._client(row.job).get(rid, timeout=max(1.0, self.interval))
        except ResponseExpired:
            row.status, row.note = EXPIRED, "unknown to the server (expired or deleted)"
        except ClientError as err:
            row.note = f"cannot refresh: {err}"
        except Exception as err:
            row.note = f"cannot refresh: {describe_error(err)}"
        else:
            row.status = response.status or row.status
            row.output_chars = len(response.output_text)
            row.output_tokens = response.usage.output_tokens if response.usage is not None else None
            row.note = None
        row.fetched = True
        if row.status in FINAL and row.ended is None:
            row.ended = time.time()
        return (row.status, row.output_chars, row.note) != before

    def _table(self) -> Table:
        table = Table("response id", "status", "elapsed", "output", "model", "prompt")
        for row in self.rows:
            elapsed = row.elapsed()
            size = "" if row.output_chars is None else f"{row.output_chars} chars"
            if row.output_tokens is not None:
                size += f" / {row.output_tokens} tok"
            table.add_row(
                row.job.response_id or "-",
                Text(row.status, style=_STATUS_STYLE.get(row.status, "")),
                "" if elapsed is None else f"{elapsed:.1f}s",
                size,
                row.job.model or "",
                (row.job.prompt_summary or "")[:40],
            )
        return table

    def _emit(self, name: str, fields: dict[str, Any]) -> None:
        self.out.write(orjson.dumps({"event": name, "ts": iso_now(), **fields}, default=str).decode() + "\n")
        self.out.flush()

    def run(self) -> ExitCode:
        live: Live | None = None
        if not self.json_lines:
            live = Live(get_renderable=self._table, console=Console(), refresh_per_second=4)
            live.start()
        try:
            first = True
            while True:
                for row in self.rows:
                    changed = False
                    if row.job.response_id is not None and (not row.done or not row.fetched):
                        changed = self._refresh(row)
                    if self.json_lines and (changed or first):
                        self._emit("job", row.fields())
                first = False
                if all(row.done for row in self.rows):
                    break
                time.sleep(self.interval)
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
        finally:
            if live is not None:
                live.stop()
        if self.json_lines:
            counts: dict[str, int] = {}
            for row in self.rows:
                counts[row.status] = counts.get(row.status, 0) + 1
            self._emit("watch_end", {"jobs": len(self.rows), "counts": counts})
        return ExitCode.COMPLETED
