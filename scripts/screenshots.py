#!/usr/bin/env python3
"""Make the dashboard screenshots in docs/screenshots/ against a real `bgmode serve`.

Starts a server on a temporary SQLite store (simulated model, loopback, a free port), creates a
few responses of every kind with the official `openai` SDK, then photographs the list page and
one response page with headless Chromium (Debian's `/usr/bin/chromium`, driven by Playwright).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from openai import OpenAI
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def populate(client: OpenAI) -> str:
    """A handful of responses; returns the id of one still streaming."""
    quick = {"sim_output_tokens": "60", "sim_token_delay_ms": "1"}
    done = []
    for i, model in enumerate(["gpt-4.1-mini", "gpt-4.1", "o4-mini", "gpt-4.1-mini"]):
        r = client.responses.create(
            model=model, input=f"Summarise report {i}", instructions="Summarise", background=True, metadata=quick
        )
        done.append(r.id)
    failed = client.responses.create(
        model="gpt-4.1", input="flaky", background=True, metadata={**quick, "sim_fail_after_tokens": "5"}
    )
    done.append(failed.id)
    short = client.responses.create(
        model="o4-mini", input="long essay", background=True, max_output_tokens=16, metadata=quick
    )
    done.append(short.id)
    cancelled = client.responses.create(
        model="gpt-4.1", input="never mind", background=True, metadata={"sim_token_delay_ms": "2000"}
    )
    wait(lambda: client.responses.retrieve(cancelled.id).status == "in_progress", "in_progress")
    client.responses.cancel(cancelled.id)
    for rid in done:
        wait(lambda rid=rid: client.responses.retrieve(rid).status != "in_progress", f"{rid} to finish")
    client.responses.create(
        model="gpt-4.1-mini", input="later", background=True, metadata={"sim_token_delay_ms": "60000"}
    )
    live = client.responses.create(
        model="gpt-4.1",
        input="Explain durable background jobs",
        instructions="Explain durable background jobs",
        background=True,
        metadata={"sim_output_tokens": "400", "sim_token_delay_ms": "60"},
    )
    return live.id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    opts = ap.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        # 2 worker slots: the overview shows a queue as well as running work
        cmd = [sys.executable, "-m", "bgmode", "serve", "--port", str(port), "--workers", "2", "--grace-seconds", "1"]
        cmd += ["--store", f"sqlite:///{tmp}/bgmode.db", "--log-level", "warning"]
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            wait(lambda: _ready(url), "the server")
            client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            live = populate(client)
            for _ in range(3):  # queued behind the two busy slots
                client.responses.create(
                    model="o4-mini", input="batch item", background=True, metadata={"sim_token_delay_ms": "1"}
                )
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=opts.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 860}, device_scale_factor=1)
                page.goto(f"{url}/dashboard")
                page.wait_for_selector("#responses-body tr")
                expect(page.locator("#count-finished")).not_to_have_text("–")
                page.wait_for_timeout(2500)  # one live refresh, so the picture shows a settled page
                page.screenshot(path=str(out / "dashboard-list.png"))
                page.goto(f"{url}/dashboard/responses/{live}")
                # the page's CSP forbids evaluated strings: wait with locators
                expect(page.locator("#events-body tr[data-type='response.output_text.delta']")).to_be_visible()
                expect(page.locator("#output .part.text").first).to_have_text(re.compile(r".{400}"), timeout=60_000)
                page.screenshot(path=str(out / "dashboard-response.png"))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"wrote {out / 'dashboard-list.png'} and {out / 'dashboard-response.png'}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
