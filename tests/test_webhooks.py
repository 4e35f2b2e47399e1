"""Webhooks end to end: real `bgmode serve` processes (SQLite and PostgreSQL) sending to a real
receiver on 127.0.0.1, checked with the official SDK's `webhooks.unwrap`."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from openai import OpenAI

from bgmode.routing import Router
from bgmode.webhooks import Endpoint, load_endpoints
from tests.serving import BgmodeServer, free_port

pytest_plugins = ("tests.pg",)

SECRET = "whsec_" + base64.b64encode(b"bgmode-test-webhook-secret-32byt").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another-webhook-secret-of-32byte").decode()
SLOW = {"sim_output_tokens": "2000", "sim_token_delay_ms": "20"}
TERMINAL = ("completed", "failed", "cancelled", "incomplete")
sdk = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")


class Receiver:
    """An HTTP endpoint on 127.0.0.1 recording every request; answers 500 to the first
    `fail_first`, or never answers (`hang`), else 200."""

    def __init__(self, port: int | None = None, fail_first: int = 0, hang: bool = False) -> None:
        self.port = port or free_port()
        self.fail_first = fail_first
        self.hang = hang
        self.requests: list[tuple[int, bytes, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def app(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        with self._lock:
            n = len(self.requests) + 1
            status = 500 if n <= self.fail_first else 200
            self.requests.append((status, body, headers))
        if self.hang:
            if self._release is None:
                self._release = asyncio.Event()
            await self._release.wait()  # never answers while the test runs
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self) -> Receiver:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.01)  # polling for readiness
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(10)

    def delivered(self) -> list[tuple[bytes, dict[str, str]]]:
        with self._lock:
            return [(b, h) for s, b, h in self.requests if s == 200 and not self.hang]

    def received(self) -> list[tuple[int, bytes, dict[str, str]]]:
        with self._lock:
            return list(self.requests)


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    started: list[Receiver] = []
    yield started
    for r in started:
        r.stop()


@pytest.fixture
def receiver(receivers: list[Receiver]) -> Receiver:
    r = Receiver().start()
    receivers.append(r)
    return r


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bgmode.db'}"
    return str(request.getfixturevalue("pg_database_url"))


def config(tmp_path: Path, *tables: dict[str, Any]) -> str:
    """A config file with only [[webhook]] tables (the models stay simulated)."""
    lines = []
    for t in tables:
        lines.append("[[webhook]]")
        lines.extend(f"{k} = {json.dumps(v)}" for k, v in t.items())
    path = tmp_path / f"bgmode-{len(list(tmp_path.glob('bgmode-*.toml')))}.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bgmode.db'}"


def hook(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, "secret_env": "HOOK_SECRET", "backoff_seconds": 0.05, "max_backoff_seconds": 0.3, **kw}


ENV = {"HOOK_SECRET": SECRET, "OTHER_SECRET": OTHER_SECRET}


def client_for(server: BgmodeServer, key: str = "x") -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)


def eventually(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling for a condition, bounded


def wait_done(client: OpenAI, rid: str) -> str:
    status: list[str] = []

    def done() -> bool:
        s = client.responses.retrieve(rid).status
        status[:] = [str(s)]
        return s in TERMINAL

    eventually(done, f"{rid} to end")
    return status[0]


def deliveries(server: BgmodeServer, key: str = "x", **params: Any) -> dict[str, Any]:
    r = httpx.get(f"{server.base_url}/webhooks/deliveries", params=params, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def unwrap(body: bytes, headers: dict[str, str], secret: str = SECRET) -> Any:
    return sdk.webhooks.unwrap(body, headers, secret=secret)


# -- every event, signed so the official SDK accepts it -----------------------------------------


def test_each_outcome_sends_its_event_and_the_sdk_accepts_it(
    store_url: str, receiver: Receiver, make_server: type[BgmodeServer], tmp_path: Path
) -> None:
    server = make_server(
        store_url, args=["--workers", "1", "--config", config(tmp_path, hook(receiver.url, name="main"))], env=ENV
    ).start()
    c = client_for(server)
    running = c.responses.create(model="m", input="slow", background=True, metadata=SLOW)
    queued = c.responses.create(model="m", input="waits", background=True, metadata=SLOW)
    assert queued.status == "queued"
    assert c.responses.cancel(queued.id).status == "cancelled"  # cancelled while queued
    assert c.responses.cancel(running.id).status == "cancelled"  # cancelled while running
    completed = c.responses.create(model="m", input="hi", background=True)
    failed = c.responses.create(model="m", input="hi", background=True, metadata={"sim_fail_after_tokens": "2"})
    incomplete = c.responses.create(
        model="m", input="hi", background=True, max_output_tokens=16, metadata={"sim_output_tokens": "100"}
    )
    expected = {
        running.id: "response.cancelled",
        queued.id: "response.cancelled",
        completed.id: "response.completed",
        failed.id: "response.failed",
        incomplete.id: "response.incomplete",
    }
    for rid, kind in expected.items():
        assert wait_done(c, rid) == kind.split(".")[1]
    eventually(lambda: len(receiver.delivered()) >= 5, "5 deliveries")

    got = {}
    for body, headers in receiver.delivered():
        event = unwrap(body, headers)  # the official SDK verifies the signature and parses
        assert event.object == "event" and event.id == headers["webhook-id"] and event.id.startswith("evt_")
        payload = json.loads(body)
        assert set(payload) == {"id", "object", "type", "created_at", "data"} and payload["data"] == {
            "id": event.data.id
        }
        assert isinstance(payload["created_at"], int) and abs(payload["created_at"] - time.time()) < 120
        got[event.data.id] = event.type
        with pytest.raises(openai.InvalidWebhookSignatureError):
            unwrap(body, headers, secret=OTHER_SECRET)
    assert got == expected
    assert len(receiver.delivered()) == 5  # one event per response

    page = deliveries(server)
    assert page["object"] == "list" and page["has_more"] is False and len(page["data"]) == 5
    by_response = {d["response_id"]: d for d in page["data"]}
    for rid, kind in expected.items():
        d = by_response[rid]
        assert (d["type"], d["status"], d["attempts"], d["last_status_code"], d["endpoint"]) == (
            kind,
            "delivered",
            1,
            200,
            "main",
        )
        assert d["last_error"] is None and d["next_attempt_at"] is None and d["delivered_at"] >= d["created_at"]
    ids = {b[1]["webhook-id"] for b in receiver.delivered()}
    assert {d["event_id"] for d in page["data"]} == ids
    # filters and pages
    one = deliveries(server, response_id=completed.id)["data"]
    assert [d["response_id"] for d in one] == [completed.id]
    assert deliveries(server, status="pending")["data"] == []
    first = deliveries(server, limit=2)
    assert len(first["data"]) == 2 and first["has_more"] is True
    rest = deliveries(server, limit=10, after=first["data"][-1]["id"])
    assert len(rest["data"]) == 3 and rest["has_more"] is False
    assert [d["id"] for d in first["data"] + rest["data"]] == [d["id"] for d in page["data"]]
    # the secret is nowhere to be seen
    for text in (json.dumps(page), server.log()):
        assert SECRET not in text and SECRET[len("whsec_") :] not in text


def test_deliveries_api_rejects_bad_parameters(make_server: type[BgmodeServer], tmp_path: Path) -> None:
    server = make_server(sqlite(tmp_path), args=["--api-keys", "ka:alpha"]).start()
    base = f"{server.base_url}/webhooks/deliveries"
    auth = {"authorization": "Bearer ka"}
    for params, param in (
        ({"status": "done"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "asc"}, "order"),
    ):
        r = httpx.get(base, params=params, headers=auth)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error"
    assert httpx.get(base).status_code == 401
    assert httpx.get(base, headers=auth).json() == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


# -- retries ------------------------------------------------------------------------------------


def test_failing_endpoint_is_retried_with_the_same_webhook_id(
    receivers: list[Receiver], make_server: type[BgmodeServer], tmp_path: Path
) -> None:
    flaky = Receiver(fail_first=3).start()
    receivers.append(flaky)
    server = make_server(sqlite(tmp_path), args=["--config", config(tmp_path, hook(flaky.url))], env=ENV).start()
    c = client_for(server)
    r = c.responses.create(model="m", input="hi", background=True)
    assert wait_done(c, r.id) == "completed"
    eventually(lambda: len(flaky.delivered()) == 1, "the delivery after three failures")
    attempts = flaky.received()
    assert [s for s, _, _ in attempts] == [500, 500, 500, 200]
    assert len({h["webhook-id"] for _, _, h in attempts}) == 1  # the same id every time
    for _, body, headers in attempts:
        assert unwrap(body, headers).data.id == r.id  # each attempt freshly signed
    eventually(lambda: deliveries(server)["data"][0]["status"] == "delivered", "the outcome recorded")
    (d,) = deliveries(server)["data"]
    assert (d["attempts"], d["last_status_code"], d["event_id"]) == (4, 200, attempts[0][2]["webhook-id"])


def test_gives_up_after_retry_hours(receivers: list[Receiver], make_server: type[BgmodeServer], tmp_path: Path) -> None:
    down = Receiver(fail_first=1_000_000).start()
    receivers.append(down)
    server = make_server(
        sqlite(tmp_path), args=["--config", config(tmp_path, hook(down.url, retry_hours=0.0005))], env=ENV
    ).start()
    c = client_for(server)
    r = c.responses.create(model="m", input="hi", background=True)
    wait_done(c, r.id)
    eventually(lambda: deliveries(server)["data"][0]["status"] == "failed", "giving up")
    (d,) = deliveries(server)["data"]
    assert d["attempts"] >= 1 and d["last_status_code"] == 500 and d["last_error"] == "HTTP 500"
    assert d["next_attempt_at"] is None and d["delivered_at"] is None


# -- durability ---------------------------------------------------------------------------------


def test_a_crash_before_sending_loses_nothing(
    store_url: str, receivers: list[Receiver], make_server: type[BgmodeServer], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens yet: every attempt fails to connect
    cfg = config(tmp_path, hook(f"http://127.0.0.1:{port}/hook"))
    first = make_server(store_url, args=["--config", cfg], env=ENV).start()
    c = client_for(first)
    ids = [c.responses.create(model="m", input=f"hi {i}", background=True).id for i in range(3)]
    for rid in ids:
        assert wait_done(c, rid) == "completed"
    pending = deliveries(first)["data"]
    assert sorted(d["response_id"] for d in pending) == sorted(ids)
    assert all(d["status"] == "pending" and d["delivered_at"] is None for d in pending)
    first.kill()  # SIGKILL: nothing is sent on the way out

    up = Receiver(port=port).start()
    receivers.append(up)
    second = make_server(store_url, args=["--config", cfg], env=ENV).start()
    eventually(lambda: len(up.delivered()) >= 3, "the deliveries after the restart")
    got = {unwrap(b, h).data.id: h["webhook-id"] for b, h in up.delivered()}
    assert got == {d["response_id"]: d["event_id"] for d in pending}  # the same events, once each
    eventually(lambda: all(d["status"] == "delivered" for d in deliveries(second)["data"]), "outcomes recorded")


@pytest.mark.postgres
def test_two_servers_deliver_each_event_once(
    pg_database_url: str, receiver: Receiver, make_server: type[BgmodeServer], tmp_path: Path
) -> None:
    cfg = config(tmp_path, hook(receiver.url, max_concurrency=4))
    a = make_server(pg_database_url, args=["--config", cfg], env=ENV).start()
    b = make_server(pg_database_url, args=["--config", cfg], env=ENV).start()
    ids = [client_for(s).responses.create(model="m", input="hi", background=True).id for s in (a, b) * 10]
    eventually(
        lambda: sum(d["status"] == "delivered" for d in deliveries(a, limit=100)["data"]) == len(ids),
        "every delivery recorded",
    )
    got = [unwrap(body, h).data.id for body, h in receiver.delivered()]
    assert sorted(got) == sorted(ids)  # each exactly once
    assert len(receiver.received()) == len(ids)


def test_a_hanging_endpoint_does_not_delay_another(
    receivers: list[Receiver], make_server: type[BgmodeServer], tmp_path: Path
) -> None:
    stuck = Receiver(hang=True).start()
    fast = Receiver().start()
    receivers.extend([stuck, fast])
    cfg = config(
        tmp_path,
        hook(stuck.url, name="stuck", timeout=120, max_concurrency=1),
        hook(fast.url, name="fast"),
    )
    server = make_server(sqlite(tmp_path), args=["--config", cfg], env=ENV).start()
    c = client_for(server)
    ids = [c.responses.create(model="m", input="hi", background=True).id for _ in range(4)]
    for rid in ids:
        assert wait_done(c, rid) == "completed"  # the worker is never held up
    eventually(lambda: len(fast.delivered()) == 4, "the fast endpoint's deliveries")
    assert sorted(unwrap(b, h).data.id for b, h in fast.delivered()) == sorted(ids)
    assert len(stuck.received()) == 1  # one request hanging, the rest waiting their turn
    rows = deliveries(server, limit=100)["data"]
    assert sorted(d["status"] for d in rows if d["endpoint"] == "stuck") == ["pending"] * 4
    assert sorted(d["status"] for d in rows if d["endpoint"] == "fast") == ["delivered"] * 4


# -- filters ------------------------------------------------------------------------------------


def test_event_and_tenant_filters(receivers: list[Receiver], make_server: type[BgmodeServer], tmp_path: Path) -> None:
    only_alpha_completed = Receiver().start()
    only_beta = Receiver().start()
    receivers.extend([only_alpha_completed, only_beta])
    cfg = config(
        tmp_path,
        hook(only_alpha_completed.url, name="a", events=["response.completed"], tenants=["alpha"]),
        hook(only_beta.url, name="b", tenants=["beta"], secret_env="OTHER_SECRET"),
    )
    server = make_server(sqlite(tmp_path), args=["--config", cfg, "--api-keys", "ka:alpha,kb:beta"], env=ENV).start()
    ca, cb = client_for(server, "ka"), client_for(server, "kb")
    a_done = ca.responses.create(model="m", input="hi", background=True)
    a_failed = ca.responses.create(model="m", input="hi", background=True, metadata={"sim_fail_after_tokens": "1"})
    b_failed = cb.responses.create(model="m", input="hi", background=True, metadata={"sim_fail_after_tokens": "1"})
    for c, rid in ((ca, a_done.id), (ca, a_failed.id), (cb, b_failed.id)):
        wait_done(c, rid)
    eventually(lambda: len(only_alpha_completed.delivered()) == 1 and len(only_beta.delivered()) == 1, "deliveries")
    assert unwrap(*only_alpha_completed.delivered()[0]).data.id == a_done.id
    event = unwrap(*only_beta.delivered()[0], secret=OTHER_SECRET)  # each endpoint its own secret
    assert (event.type, event.data.id) == ("response.failed", b_failed.id)
    # each API key sees its own tenant's deliveries only
    assert [d["response_id"] for d in deliveries(server, "ka")["data"]] == [a_done.id]
    assert [(d["response_id"], d["endpoint"]) for d in deliveries(server, "kb")["data"]] == [(b_failed.id, "b")]


# -- configuration ------------------------------------------------------------------------------


def test_load_endpoints_from_file_and_environment(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        {"url": "https://example.test/a", "secret_env": "S1", "name": "alpha", "tenants": ["t1"]},
        {"url": "http://127.0.0.1:1/b", "secret_env": "S1", "events": ["response.failed"], "retry_hours": 1},
    )
    env = {
        "S1": SECRET,
        "BGMODE_WEBHOOK_URL": "http://127.0.0.1:2/c",
        "BGMODE_WEBHOOK_SECRET": OTHER_SECRET,
        "BGMODE_WEBHOOK_EVENTS": "response.completed, response.cancelled",
    }
    a, b, c = load_endpoints(cfg, env)
    assert (a.name, a.url, a.tenants, len(a.events), a.retry_hours) == (
        "alpha",
        "https://example.test/a",
        frozenset({"t1"}),
        4,
        72.0,
    )
    assert (b.name, b.events, b.tenants, b.retry_hours) == (
        "webhook-2",
        frozenset({"response.failed"}),
        frozenset[str](),
        1.0,
    )
    assert (c.name, c.url, c.events) == (
        "env",
        "http://127.0.0.1:2/c",
        frozenset({"response.completed", "response.cancelled"}),
    )
    assert a.secret == SECRET and c.secret == OTHER_SECRET
    assert SECRET not in repr(a) and OTHER_SECRET not in repr(c)
    assert load_endpoints(None, {}) == []
    # a file with only webhooks still routes every model to the simulator
    assert Router.from_config(cfg).describe() == "* -> sim"


@pytest.mark.parametrize(
    ("table", "env", "message"),
    [
        ({"url": "http://h/x", "secret": SECRET}, {}, "literal 'secret' is not accepted"),
        ({"url": "http://h/x", "secret_env": "NOPE"}, {}, "environment variable NOPE is not set"),
        ({"url": "http://h/x", "secret_env": "S"}, {"S": "not-whsec"}, "must start with 'whsec_'"),
        ({"url": "http://h/x", "secret_env": "S"}, {"S": "whsec_%%%"}, "base64"),
        ({"url": "ftp://h/x", "secret_env": "S"}, {"S": SECRET}, "http:// or https://"),
        ({"secret_env": "S"}, {"S": SECRET}, "'url' is required"),
        ({"url": "http://h/x", "secret_env": "S", "events": ["response.done"]}, {"S": SECRET}, "response.done"),
        ({"url": "http://h/x", "secret_env": "S", "events": []}, {"S": SECRET}, "non-empty list"),
        ({"url": "http://h/x", "secret_env": "S", "colour": 1}, {"S": SECRET}, "unknown key(s) colour"),
        ({"url": "http://h/x", "secret_env": "S", "retry_hours": -1}, {"S": SECRET}, "retry_hours"),
        ({"url": "http://h/x", "secret_env": "S", "max_concurrency": 0}, {"S": SECRET}, "max_concurrency"),
    ],
)
def test_bad_webhook_config_is_a_clear_error(
    tmp_path: Path, table: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match="webhook 1") as err:
        load_endpoints(config(tmp_path, table), env)
    assert message in str(err.value)
    assert SECRET not in str(err.value) and SECRET[6:] not in str(err.value)


def test_bad_webhook_environment_and_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be set together"):
        load_endpoints(None, {"BGMODE_WEBHOOK_URL": "http://h/x"})
    with pytest.raises(ValueError, match="BGMODE_WEBHOOK_EVENTS"):
        load_endpoints(
            None, {"BGMODE_WEBHOOK_URL": "http://h/x", "BGMODE_WEBHOOK_SECRET": SECRET, "BGMODE_WEBHOOK_EVENTS": "x"}
        )
    cfg = config(tmp_path, *[{"url": "http://h/x", "secret_env": "S", "name": "same"}] * 2)
    with pytest.raises(ValueError, match="'same' is used twice"):
        load_endpoints(cfg, {"S": SECRET})


def test_bad_webhook_config_stops_serve(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = config(tmp_path, {"url": "http://h/x", "secret_env": "MISSING_SECRET"})
    run = subprocess.run(
        [sys.executable, "-m", "bgmode", "serve", "--config", cfg, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2 and "MISSING_SECRET is not set" in run.stderr


def test_endpoint_repr_hides_the_secret() -> None:
    e = Endpoint("n", "http://h/x", SECRET)
    assert SECRET not in repr(e) and SECRET not in str(e)
