"""The local ledger: every submitted response id, recorded before anything else happens.

A small SQLite file under the user's state directory (platformdirs), or at
`$BGMODE_LEDGER_PATH`. Several processes may use it at once (one follows a job while
another cancels it), so every operation opens its own short transaction.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import platformdirs

ENV_LEDGER_PATH = "BGMODE_LEDGER_PATH"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    response_id TEXT UNIQUE,
    idempotency_key TEXT UNIQUE,
    model TEXT,
    prompt_summary TEXT,
    base_url TEXT NOT NULL,
    stream INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS batch_lines (
    batch_key TEXT NOT NULL,
    line INTEGER NOT NULL,
    line_sha TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    response_id TEXT,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (batch_key, line)
);
"""

_COLUMNS = "id, response_id, idempotency_key, model, prompt_summary, base_url, stream, status, created_at, updated_at"


def default_ledger_path() -> Path:
    """`$BGMODE_LEDGER_PATH`, else `<user state dir>/bgmode/ledger.sqlite3`."""
    env = os.environ.get(ENV_LEDGER_PATH)
    if env:
        return Path(env).expanduser()
    return platformdirs.user_state_path("bgmode", appauthor=False) / "ledger.sqlite3"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Job:
    """One ledger row."""

    id: int
    response_id: str | None
    idempotency_key: str | None
    model: str | None
    prompt_summary: str | None
    base_url: str
    stream: bool
    status: str
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, object]:
        return {
            "response_id": self.response_id,
            "status": self.status,
            "model": self.model,
            "prompt_summary": self.prompt_summary,
            "base_url": self.base_url,
            "stream": self.stream,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One input line of a `bgmode batch` run: which create it became."""

    line: int
    line_sha: str
    idempotency_key: str
    response_id: str | None
    status: str


def _job(row: tuple[object, ...]) -> Job:
    (id_, rid, key, model, summary, base_url, stream, status, created, updated) = row
    return Job(
        id=int(str(id_)),
        response_id=None if rid is None else str(rid),
        idempotency_key=None if key is None else str(key),
        model=None if model is None else str(model),
        prompt_summary=None if summary is None else str(summary),
        base_url=str(base_url),
        stream=bool(stream),
        status=str(status),
        created_at=str(created),
        updated_at=str(updated),
    )


class Ledger:
    """The jobs this user submitted (or followed), newest last."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout = 10000")
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def record_submitting(
        self, *, idempotency_key: str, model: str, prompt_summary: str, base_url: str, stream: bool
    ) -> None:
        """Note a create that is about to be sent (status `submitting`, no id yet)."""
        now = _now()
        with self._tx() as db:
            # a key seen before (a batch line resubmitted after a crash) keeps its row
            db.execute(
                "INSERT OR IGNORE INTO jobs (idempotency_key, model, prompt_summary, base_url, stream, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'submitting', ?, ?)",
                (idempotency_key, model, prompt_summary, base_url, int(stream), now, now),
            )

    def record_submitted(self, *, idempotency_key: str, response_id: str, status: str) -> None:
        """Attach the server's response id to the pending row (or add a row)."""
        now = _now()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET response_id = ?, status = ?, updated_at = ? WHERE idempotency_key = ?",
                (response_id, status, now, idempotency_key),
            )
            if cur.rowcount == 0:
                self._upsert(db, response_id, status, None, now)

    def record_submit_failed(self, *, idempotency_key: str, status: str = "submit_failed") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET status = ?, updated_at = ? WHERE idempotency_key = ? AND response_id IS NULL",
                (status, _now(), idempotency_key),
            )

    def update_status(self, response_id: str, status: str, *, base_url: str | None = None) -> None:
        """Record the last known status of `response_id`, adding it if it is not listed yet."""
        with self._tx() as db:
            self._upsert(db, response_id, status, base_url, _now())

    @staticmethod
    def _upsert(db: sqlite3.Connection, response_id: str, status: str, base_url: str | None, now: str) -> None:
        cur = db.execute("UPDATE jobs SET status = ?, updated_at = ? WHERE response_id = ?", (status, now, response_id))
        if cur.rowcount == 0 and base_url is not None:
            db.execute(
                "INSERT INTO jobs (response_id, base_url, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (response_id, base_url, status, now, now),
            )

    # ------------------------------------------------------------- batches

    def batch_lines(self, batch_key: str) -> dict[int, BatchLine]:
        """What `bgmode batch` recorded for the input identified by `batch_key`, by line number."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT line, line_sha, idempotency_key, response_id, status FROM batch_lines WHERE batch_key = ?",
                (batch_key,),
            ).fetchall()
        return {
            int(r[0]): BatchLine(
                line=int(r[0]),
                line_sha=str(r[1]),
                idempotency_key=str(r[2]),
                response_id=None if r[3] is None else str(r[3]),
                status=str(r[4]),
            )
            for r in rows
        }

    def batch_line_submitting(self, batch_key: str, line: int, line_sha: str, idempotency_key: str) -> None:
        """Committed before the create is sent: a crash after this point resubmits with the same key."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO batch_lines (batch_key, line, line_sha, idempotency_key, response_id, status, updated_at)"
                " VALUES (?, ?, ?, ?, NULL, 'submitting', ?) ON CONFLICT (batch_key, line) DO UPDATE SET"
                " line_sha = excluded.line_sha, idempotency_key = excluded.idempotency_key, response_id = NULL,"
                " status = 'submitting', updated_at = excluded.updated_at",
                (batch_key, line, line_sha, idempotency_key, _now()),
            )

    def batch_line_update(self, batch_key: str, line: int, *, status: str, response_id: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE batch_lines SET status = ?, response_id = COALESCE(?, response_id), updated_at = ?"
                " WHERE batch_key = ? AND line = ?",
                (status, response_id, _now(), batch_key, line),
            )

    def get(self, response_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE response_id = ?", (response_id,)).fetchone()
        return None if row is None else _job(row)

    def last(self) -> Job | None:
        """The newest job that has a response id."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE response_id IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else _job(row)

    def newest(self, limit: int | None = None) -> list[Job]:
        """Jobs, newest first."""
        with self._tx() as db:
            if limit is None:
                rows = db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id DESC").fetchall()
            else:
                rows = db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [_job(r) for r in rows]

    def list(self, limit: int | None = None) -> list[Job]:
        """Jobs, oldest first (the newest `limit` when given)."""
        with self._tx() as db:
            if limit is None:
                rows = db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY id").fetchall()
            else:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM (SELECT * FROM jobs ORDER BY id DESC LIMIT ?) ORDER BY id",
                    (limit,),
                ).fetchall()
        return [_job(r) for r in rows]
