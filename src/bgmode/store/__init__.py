"""Stores by URL: `sqlite:///path.db` (default) or `postgresql://...` (many processes)."""

from __future__ import annotations

from bgmode.store.base import Store, Write, WriteResult

__all__ = ["Store", "Write", "WriteResult", "open_store"]


def open_store(url: str) -> Store:
    """The store for `url` (not yet opened). Drivers are imported lazily."""
    if url.startswith("sqlite:"):
        from bgmode.store.sqlite import SQLiteStore, path_from_url

        return SQLiteStore(path_from_url(url))
    if url.startswith(("postgres://", "postgresql://")):
        try:
            from bgmode.store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError(f"PostgreSQL needs asyncpg: pip install 'bgmode[postgres]' ({exc})") from exc
        return PostgresStore(url)
    raise ValueError(f"unsupported store URL {url!r}: use sqlite:///path.db or postgresql://...")
