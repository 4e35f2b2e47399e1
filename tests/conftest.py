from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI

from tests.serving import BgmodeServer


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's keys, ledger or base URL."""
    monkeypatch.setenv("BGMODE_LEDGER_PATH", str(tmp_path / "ledger.db"))
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "BGMODE_STORE_URL", "BGMODE_API_KEYS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[type[BgmodeServer]]:
    """Start `bgmode serve` processes on a SQLite file in `tmp_path`; all are killed afterwards."""
    started: list[BgmodeServer] = []

    class _Server(BgmodeServer):
        def __init__(self, store_url: str | None = None, **kw: object) -> None:
            kw.setdefault("log_path", tmp_path / f"serve-{len(started)}.log")
            super().__init__(store_url or f"sqlite:///{tmp_path / 'bgmode.db'}", **kw)  # type: ignore[arg-type]
            started.append(self)

    yield _Server
    for s in started:
        s.kill()


@pytest.fixture(scope="session")
def bgmode_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BgmodeServer]:
    """One server for the session, simulated model, default settings: tests that need their own
    flags, a restart or a crash use `make_server` instead."""
    d = tmp_path_factory.mktemp("shared-server")
    server = BgmodeServer(f"sqlite:///{d / 'bgmode.db'}", log_path=d / "serve.log").start()
    yield server
    server.kill()


@pytest.fixture
def client(bgmode_server: BgmodeServer) -> OpenAI:
    return OpenAI(base_url=bgmode_server.base_url, api_key="test-key", max_retries=0)


@pytest.fixture
def aclient(bgmode_server: BgmodeServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=bgmode_server.base_url, api_key="test-key", max_retries=0)
