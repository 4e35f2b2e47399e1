"""Soak: mixed traffic against one `bgmode serve` for a long time, with a SIGKILL and restart
every few minutes; then every response is checked. Too long for CI.

    python bench/soak.py [--minutes 60] [--kill-every 180] [--clients 16] [--store sqlite:///...]

Traffic (each client loops): background creates of random length (some streamed and dropped
at a random event, then resumed with `starting_after`), polls, cancels of running responses,
foreground creates, tool-calling creates. Every `--kill-every` seconds the server is killed
with SIGKILL and started again on the same store. Every 10 s the server's RSS and open file
descriptors are sampled. At the end (after a drain of up to 120 s) each created response is
checked: lost (404), stuck (not terminal), log not 0..n without gaps or not ending with one
terminal event, completed output != its deltas. All four must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

import httpx
import orjson
from _procs import bgmode

TERMINAL = {"completed", "failed", "cancelled", "incomplete"}
TERMINAL_EVENTS = {"response.completed", "response.failed", "response.incomplete", "response.cancelled"}


@dataclass
class State:
    ids: list[str] = field(default_factory=list)
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    kills: int = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def sse_events(raw: bytes) -> list[dict[str, object]]:
    lines = (line for block in raw.split(b"\n\n") for line in block.split(b"\n"))
    return [orjson.loads(line[5:]) for line in lines if line.startswith(b"data:")]


async def client_loop(base: str, state: State, deadline: float, rng: random.Random) -> None:
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while time.monotonic() < deadline:
            state.requests += 1
            kind = rng.random()
            try:
                if kind < 0.45:
                    tokens = rng.choice([5, 40, 400, 2000])
                    body = {
                        "model": "sim",
                        "input": f"soak {rng.random()}",
                        "background": True,
                        "metadata": {
                            "sim_output_tokens": str(tokens),
                            "sim_token_delay_ms": str(rng.choice([0, 2, 10])),
                        },
                    }
                    if rng.random() < 0.3:
                        body["tools"] = tools
                        body["input"] = "call get_weather"
                    if rng.random() < 0.5:
                        body["stream"] = True
                        async with http.stream("POST", "/responses", json=body) as r:
                            got = b""
                            stop_after = rng.randint(1, 50)
                            async for chunk in r.aiter_bytes():
                                got += chunk
                                if got.count(b"\n\n") >= stop_after:
                                    break  # the client disconnects mid-stream
                        events = sse_events(got[: got.rfind(b"\n\n") + 2])
                        if events:
                            rid = str(events[0]["response"]["id"])  # type: ignore[index]
                            state.ids.append(rid)
                            last = int(events[-1]["sequence_number"])  # type: ignore[call-overload]
                            resume = await http.get(
                                f"/responses/{rid}", params={"stream": "true", "starting_after": last}
                            )
                            if resume.status_code != 200:
                                state.error(f"resume {resume.status_code}")
                    else:
                        r2 = await http.post("/responses", json=body)
                        if r2.status_code == 200:
                            state.ids.append(r2.json()["id"])
                        else:
                            state.error(f"create {r2.status_code}")
                elif kind < 0.75 and state.ids:
                    rid = rng.choice(state.ids)
                    r3 = await http.get(f"/responses/{rid}")
                    if r3.status_code != 200:
                        state.error(f"poll {r3.status_code}")
                elif kind < 0.85 and state.ids:
                    rid = rng.choice(state.ids[-50:])
                    r4 = await http.post(f"/responses/{rid}/cancel")
                    if r4.status_code not in (200, 400):
                        state.error(f"cancel {r4.status_code}")
                else:
                    r5 = await http.post(
                        "/responses", json={"model": "sim", "input": "fg", "metadata": {"sim_output_tokens": "5"}}
                    )
                    if r5.status_code != 200:
                        state.error(f"foreground {r5.status_code}")
            except (httpx.TransportError, httpx.StreamError):
                state.error("connection (server restarting)")
                await asyncio.sleep(0.2)


def sample(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def check(base: str, state: State, drain: float) -> dict[str, int]:
    result = {"responses": len(set(state.ids)), "lost": 0, "stuck": 0, "bad_log": 0, "bad_output": 0}
    deadline = time.monotonic() + drain
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        for rid in sorted(set(state.ids)):
            while True:
                r = await http.get(f"/responses/{rid}")
                if r.status_code == 404:
                    result["lost"] += 1
                    break
                body = r.json()
                if body["status"] in TERMINAL or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)  # draining: waiting for the server to finish work
            if r.status_code == 404:
                continue
            if body["status"] not in TERMINAL:
                result["stuck"] += 1
                continue
            log = await http.get(f"/responses/{rid}", params={"stream": "true"})
            events = sse_events(log.content)
            seqs = [e["sequence_number"] for e in events]
            terminal = [e for e in events if e["type"] in TERMINAL_EVENTS]
            if seqs != list(range(len(seqs))) or len(terminal) != 1 or terminal[0] is not events[-1]:
                result["bad_log"] += 1
            if body["status"] == "completed":
                text = "".join(str(e["delta"]) for e in events if e["type"] == "response.output_text.delta")
                out = "".join(
                    p.get("text", "") for it in body["output"] if it["type"] == "message" for p in it["content"]
                )
                if text != out:
                    result["bad_output"] += 1
    return result


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--kill-every", type=float, default=180)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--store", default=None)
    ap.add_argument("--port", type=int, default=8790)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bgmode-soak-")
    store = args.store or f"sqlite:///{tmp}/soak.db"
    base = f"http://127.0.0.1:{args.port}/v1"
    state = State()
    proc = bgmode(args.port, store, "--lease-seconds", "10")
    start = time.monotonic()
    deadline = start + args.minutes * 60
    rng = random.Random(1)
    clients = [
        asyncio.create_task(client_loop(base, state, deadline, random.Random(rng.random())))
        for _ in range(args.clients)
    ]
    next_kill = start + args.kill_every
    next_sample = start
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_sample:
            rss, fds = sample(proc.pid)
            state.samples.append((now - start, rss, fds))
            print(
                f"t={now - start:7.0f}s rss={rss / 1024:6.1f} MiB fds={fds:4d} requests={state.requests} responses={len(state.ids)}",
                flush=True,
            )
            next_sample += 10
        if now >= next_kill:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            state.kills += 1
            proc = bgmode(args.port, store, "--lease-seconds", "10")
            next_kill += args.kill_every
        await asyncio.sleep(1)
    await asyncio.gather(*clients)
    result = await check(base, state, 120)
    proc.terminate()
    proc.wait(60)
    first, last = state.samples[1] if len(state.samples) > 1 else state.samples[0], state.samples[-1]
    print(f"minutes={args.minutes} kills={state.kills} requests={state.requests} client_errors={state.errors}")
    print(
        f"rss MiB: first={first[1] / 1024:.1f} last={last[1] / 1024:.1f} max={max(s[1] for s in state.samples) / 1024:.1f}"
    )
    print(f"fds: first={first[2]} last={last[2]} max={max(s[2] for s in state.samples)}")
    print("result:", result)
    ok = all(result[k] == 0 for k in ("lost", "stuck", "bad_log", "bad_output"))
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    asyncio.run(main())
