"""The dashboard in a real headless Chromium (Debian's `/usr/bin/chromium`, driven by Playwright
for Python; Playwright's own browser downloads are never used), against a real `bgmode serve`
that requires API keys. Everything is asserted as a person sees it: the key prompt, the list
with its filters, live counts and "load more", a response page whose text streams in and
resumes after a dropped connection, and the Cancel button.

Without Chromium these tests skip, unless `CI` or `BGMODE_TEST_REQUIRE_BROWSER` is set: then
they fail (`.ci/install_browser.sh` installs it)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from openai import OpenAI

from tests.faulty_proxy import FaultyProxy
from tests.serving import BgmodeServer

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

CHROMIUM = os.environ.get("BGMODE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEYS = "key-alice:alice,key-bob:bob"
TERMINAL = {"completed", "failed", "cancelled", "incomplete"}


def _required() -> bool:
    return any(os.environ.get(v, "").lower() not in ("", "0", "false") for v in ("CI", "BGMODE_TEST_REQUIRE_BROWSER"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        msg = f"Chromium not found at {CHROMIUM} (run .ci/install_browser.sh or set BGMODE_TEST_CHROMIUM)"
        if _required():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    context.close()


@pytest.fixture
def server(make_server: type[BgmodeServer]) -> BgmodeServer:
    return make_server(args=["--workers", "4", "--api-keys", KEYS]).start()


def sdk(base_url: str, key: str) -> OpenAI:
    return OpenAI(base_url=base_url, api_key=key, max_retries=0)


def wait_terminal(client: OpenAI, rid: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (status := client.responses.retrieve(rid).status) not in TERMINAL:
        assert time.monotonic() < deadline, f"{rid} still {status}"
        time.sleep(0.05)  # polling for a condition with a deadline
    return str(status)


def enter_key(page: Any, key: str) -> None:
    expect(page.get_by_role("heading", name="API key required")).to_be_visible()
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Continue").click()


def row(page: Any, rid: str) -> Any:
    return page.locator(f"#responses-body tr[data-id='{rid}']")


def listed_ids(page: Any) -> list[str]:
    return [str(x) for x in page.locator("#responses-body tr").evaluate_all("rows => rows.map(r => r.dataset.id)")]


def test_key_prompt_list_filters_counts_and_load_more(server: BgmodeServer, page: Any) -> None:
    alice, bob = sdk(server.base_url, "key-alice"), sdk(server.base_url, "key-bob")
    quick = {"sim_output_tokens": "5", "sim_token_delay_ms": "0"}
    done = [
        alice.responses.create(model="sim-a" if i % 2 else "sim-b", input=f"q{i}", background=True, metadata=quick).id
        for i in range(20)
    ]
    failed = alice.responses.create(
        model="sim-a", input="x", background=True, metadata={**quick, "sim_fail_after_tokens": "1"}
    ).id
    theirs = bob.responses.create(model="sim-a", input="bob's", background=True, metadata=quick).id
    for rid in [*done, failed]:
        wait_terminal(alice, rid)
    wait_terminal(bob, theirs)

    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r))
    page.goto(f"{server.url}/dashboard")
    # the server has keys: the page asks for one and shows nothing else
    expect(page.locator("#main")).to_be_hidden()
    enter_key(page, "key-mallory")
    expect(page.locator("#key-error")).to_contain_text("not accepted")
    page.get_by_label("API key", exact=True).fill("key-alice")
    page.get_by_role("button", name="Continue").click()

    # newest first, 20 to a page, only alice's
    expect(page.locator("#responses-body tr")).to_have_count(20)
    newest_first = [failed, *done[::-1]]
    assert listed_ids(page) == newest_first[:20]
    expect(row(page, failed).locator(".badge")).to_have_text("failed")
    expect(page.locator("#count-finished")).to_have_text("21")
    expect(page.locator("#count-queued")).to_have_text("0")
    expect(page.locator("#webhooks-empty")).to_contain_text("No webhooks configured")
    # "load more" follows the cursor to the last one, then goes away
    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#responses-body tr")).to_have_count(21)
    assert listed_ids(page) == newest_first
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()
    assert row(page, theirs).count() == 0

    # a response created now shows up without a reload, and the counts follow it
    slow = alice.responses.create(model="sim-c", input="slow", background=True, metadata={"sim_token_delay_ms": "5000"})
    expect(row(page, slow.id)).to_be_visible()
    assert listed_ids(page)[0] == slow.id
    expect(row(page, slow.id).locator(".badge")).to_have_text(re.compile("queued|in_progress"))
    expect(page.locator("#count-in_progress")).to_have_text("1")
    alice.responses.cancel(slow.id)
    expect(row(page, slow.id).locator(".badge")).to_have_text("cancelled")

    # filters: status, model, both, cleared
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#responses-body tr")).to_have_count(1)
    assert listed_ids(page) == [failed]
    page.get_by_label("Status").select_option("")
    page.get_by_label("Model").fill("sim-b")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#responses-body tr")).to_have_count(10)
    assert listed_ids(page) == [rid for i, rid in enumerate(done) if i % 2 == 0][::-1]
    page.get_by_label("Status").select_option("cancelled")
    page.get_by_label("Model").fill("sim-c")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#responses-body tr")).to_have_count(1)
    assert listed_ids(page) == [slow.id]
    page.get_by_label("Model").fill("no-such-model")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_text("No responses match.")).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#responses-body tr")).to_have_count(20)

    # the key stayed in the tab: sent as a header, never in a URL
    assert page.evaluate("() => sessionStorage.getItem('bgmode.apiKey')") == "key-alice"
    api_calls = [r for r in requests if "/v1/" in r.url or "/dashboard/api/" in r.url]
    assert api_calls
    assert all("key-alice" not in r.url and "key-mallory" not in r.url for r in requests)
    assert any(r.headers.get("authorization") == "Bearer key-alice" for r in api_calls)


def test_response_page_streams_resumes_and_cancels(server: BgmodeServer, page: Any) -> None:
    alice = sdk(server.base_url, "key-alice")
    proxy = FaultyProxy(server.url).start()
    try:
        # the first two streams the page opens are cut: it must resume where it stopped
        proxy.cut_streams(1, after_events=12, mode="abort")
        proxy.cut_streams(1, after_events=9, mode="close")
        resp = alice.responses.create(
            model="sim-a",
            input="stream me",
            instructions="<b>bold</b> <img src=x>",
            background=True,
            metadata={"sim_output_tokens": "3000", "sim_token_delay_ms": "40"},
        )
        page.goto(f"http://127.0.0.1:{proxy.port}/dashboard/responses/{resp.id}")
        enter_key(page, "key-alice")
        expect(page.locator("#resp-id")).to_have_text(resp.id)
        expect(page.locator("#resp-model")).to_have_text("sim-a")
        expect(page.locator("#resp-status")).to_have_text("in_progress")
        out = page.locator("#output .part.text").first
        expect(out).to_have_text(re.compile(r"\S"))
        # the text grows while we watch
        first = len(out.text_content() or "")
        expect(out).to_have_text(re.compile(rf"^[\s\S]{{{first + 40},}}$"))
        expect(page.locator("#events-body tr[data-type='response.output_text.delta']")).to_be_visible()
        # the untrusted output is text, never markup
        expect(out).to_contain_text("<b>bold</b> <img src=x>")
        assert page.locator("#output b, #output img").count() == 0

        # both cuts happened, and each resume asked for what followed the last event it saw
        streams = [r for r in proxy.matching("GET", f"/v1/responses/{resp.id}") if "stream" in r.query]
        deadline = time.monotonic() + 20
        while len(streams) < 3:
            assert time.monotonic() < deadline, [r.query for r in streams]
            time.sleep(0.05)  # polling for a condition with a deadline
            streams = [r for r in proxy.matching("GET", f"/v1/responses/{resp.id}") if "stream" in r.query]
        # an aborted connection may lose what was in flight (the page resumes after what it saw,
        # possibly nothing); a stream ended cleanly after 9 events resumes exactly 9 further on
        cursors = [int(r.query["starting_after"][0]) for r in streams]
        assert cursors[0] == -1 and -1 <= cursors[1] <= 11 and cursors[2] == cursors[1] + 9, cursors
        assert all("key-alice" not in r.path and "key-alice" not in str(r.query) for r in proxy.requests)
        # the event log shows every event once, in order, no gaps from the cuts
        seqs = page.locator("#events-body tr").evaluate_all("rows => rows.map(r => Number(r.dataset.seq))")
        assert seqs[:5] == [0, 1, 2, 3, 4]

        # Cancel turns it cancelled on the page and for the API
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#resp-status")).to_have_text("cancelled")
        expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
        assert alice.responses.retrieve(resp.id).status == "cancelled"
        # the stream's terminal event arrives and the output settles to the stored one
        expect(page.locator("#events-body tr[data-type='response.failed']")).to_be_visible()
        final = alice.responses.retrieve(resp.id)
        expect(out).to_have_text(final.output_text)
        expect(page.locator("#usage-output")).to_have_text(str(final.usage.output_tokens if final.usage else "–"))
        # every event exactly once: as many as the terminal event's sequence_number + 1
        last = int(page.locator("#events-body tr[data-type='response.failed']").get_attribute("data-seq"))
        expect(page.locator("#events-count")).to_have_text(f"({last + 1})")
        assert last > 20
    finally:
        proxy.stop()


def test_another_tenant_cannot_open_a_response(server: BgmodeServer, page: Any) -> None:
    alice = sdk(server.base_url, "key-alice")
    rid = alice.responses.create(model="sim-a", input="mine", background=True).id
    wait_terminal(alice, rid)
    page.goto(f"{server.url}/dashboard/responses/{rid}")
    enter_key(page, "key-bob")
    expect(page.locator("#page-error")).to_contain_text("not found")
    expect(page.locator("#output")).not_to_contain_text("the")


def test_pages_have_a_strict_content_security_policy(server: BgmodeServer, page: Any) -> None:
    for path in ("/dashboard", "/dashboard/responses/resp_x", "/dashboard/static/dashboard.js"):
        resp = page.request.get(server.url + path)
        assert resp.status == 200
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert page.request.get(server.url + "/dashboard/static/nope.js").status == 404
    # the overview is tenant-scoped and needs a key
    assert page.request.get(server.url + "/dashboard/api/overview").status == 401
