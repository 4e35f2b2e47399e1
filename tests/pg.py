"""PostgreSQL for tests: a URL from the environment, or a throwaway local cluster.

`postgres_url` (session): `BGMODE_TEST_POSTGRES_URL` if set (a database the tests may
create and drop databases on); else a temporary cluster started with the local
`initdb`/`pg_ctl` (fsync off, trust auth, loopback, a free port), stopped at the end of
the session; else the test is skipped. With `CI` or `BGMODE_TEST_REQUIRE_POSTGRES` set,
a missing PostgreSQL fails instead of skipping.

`pg_database_url` (function): a fresh, empty database on that server, dropped afterwards.

Test modules opt in with `pytest_plugins = ("tests.pg",)`.
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

T = TypeVar("T")

ENV_URL = "BGMODE_TEST_POSTGRES_URL"


def _required() -> bool:
    return any(os.environ.get(v, "").lower() not in ("", "0", "false") for v in ("CI", "BGMODE_TEST_REQUIRE_POSTGRES"))


def _unavailable(reason: str) -> NoReturn:
    if _required():
        pytest.fail(f"PostgreSQL is required here but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason} (set {ENV_URL} or run .ci/install_postgres.sh)")


def _bin_dir() -> str | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(found))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return os.path.dirname(versions[-1]) if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalCluster:
    """A throwaway PostgreSQL cluster in a temporary directory."""

    bin_dir: str
    root: str
    port: int
    user: pwd.struct_passwd | None

    @property
    def data(self) -> str:
        return os.path.join(self.root, "data")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self.user is not None:  # PostgreSQL refuses to run as root
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "HOME": self.root}
        return subprocess.run(
            [os.path.join(self.bin_dir, args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **kw,
        )

    def start(self) -> None:
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.root, 0o700)
        r = self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stdout}{r.stderr}")
        opts = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-c unix_socket_directories={self.root}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=300",
            ]
        )
        r = self._run(
            "pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"), "-w", "-t", "60", "-o", opts, "start"
        )
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}{self.log()}")

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


def start_local_cluster() -> LocalCluster:
    """initdb and start a cluster; raises `LookupError` when it cannot be done here."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise LookupError("no initdb/pg_ctl found")
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise LookupError("running as root and there is no 'postgres' user to run the cluster as") from None
    cluster = LocalCluster(bin_dir, tempfile.mkdtemp(prefix="bgmode-pg-"), _free_port(), user)
    try:
        cluster.start()
    except Exception:
        shutil.rmtree(cluster.root, ignore_errors=True)
        raise
    return cluster


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on its own loop in a thread (safe inside a running loop)."""
    out: list[T] = []
    err: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as exc:
            err.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if err:
        raise err[0]
    return out[0]


async def admin(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=30)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server URL on which the tests may create and drop databases."""
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        _unavailable("asyncpg is not installed")
    url = os.environ.get(ENV_URL)
    if url:
        yield url
        return
    try:
        cluster = start_local_cluster()
    except LookupError as exc:
        _unavailable(str(exc))
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def pg_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh empty database (dropped at the end, even with clients still connected)."""
    name = f"bgmode_test_{uuid.uuid4().hex[:12]}"
    run_sync(admin(postgres_url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(postgres_url, name)
    finally:
        run_sync(admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
