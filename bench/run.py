"""The whole benchmark suite against its baselines, several rounds, in one run.

    python bench/run.py [--rounds 3] [--quick] [--only creates,polls,...] [--out bench/results]
                        [--litellm PATH]

Each round runs every selected benchmark, bgmode and its baseline one after the other (the
order alternates from round to round) so both see the same machine state:

- creates    durable background creates vs a bare Starlette no-op (wrk, 16/64/128 connections)
- polls      polls of a finished response vs a bare endpoint answering the same bytes
- relay      200 streams x 100 tokens relayed by bgmode vs read from the fake upstream
             directly (and through LiteLLM's proxy, chat and /v1/responses, when its
             `litellm` executable is found: --litellm PATH, see relay.py)
- relay500   the same with 500 tokens per stream
- seqcreates sequential creates while 200 relayed jobs run vs the same server idle
- rss        RSS per response with 1,000 queued + 200 running
- readers    10,000-event replay, 100 live tailers' lag, RSS per queued response
- store      events/s persisted through Store.write (SQLite; PostgreSQL when initdb exists)
- worker     events/s a worker generates and persists end to end

It writes `results.md` (a table: median [min-max] over the rounds, the ratio's median, the
target, met or not; the machine), `results.json` (every round's numbers) and the charts
`ttft.png`, `wall.png`, `throughput.png`, `rss.png` (matplotlib: `pip install -e '.[bench]'`).
`--quick`: 1 round, short durations (a smoke run, about 2-3 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import creates
import loaded
import polls
import readers
import relay
import store_events
import worker_events
from _procs import ROOT

BENCHES = ["creates", "polls", "relay", "relay500", "seqcreates", "rss", "readers", "store", "worker"]
WAYS_LABEL = {
    "direct": "direct upstream",
    "bgmode": "bgmode (background+stream)",
    "litellm": "LiteLLM proxy (chat)",
    "litellm_responses": "LiteLLM proxy (responses)",
}


# -- the machine ---------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    ram_kib = 0
    try:
        with open("/proc/meminfo") as f:
            ram_kib = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        pass

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "ram_gib": round(ram_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "loadavg_start": loadavg(),
        "wrk": shutil.which("wrk") is not None,
        "litellm": relay.litellm_version() if relay.litellm_available() else None,
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- the benchmarks, one round each --------------------------------------------------------


class Params:
    def __init__(self, quick: bool) -> None:
        self.wrk_seconds = 2 if quick else 10
        self.connections = [16, 64, 128]
        self.streams = 200
        self.seq_seconds = 4 if quick else 8
        self.store_events = 50_000 if quick else 200_000
        self.worker = (20, 500) if quick else (100, 2000)


def ordered(sides: Sequence[str], rnd: int) -> list[str]:
    """The sides in a different order each round (a rotation), so drift hits each one alike."""
    k = rnd % len(sides)
    return [*sides[k:], *sides[:k]]


def run_creates(p: Params, rnd: int) -> dict[str, Any]:
    return {side: creates.measure(side, p.wrk_seconds, p.connections) for side in ordered(["noop", "bgmode"], rnd)}


def run_polls(p: Params, rnd: int, state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in ordered(["bgmode", "bare"], rnd):
        if side == "bgmode":
            out["bgmode"], rid, body = polls.measure_bgmode(p.wrk_seconds, p.connections)
            state["polls"] = (rid, body)
        else:
            if "polls" not in state:  # the bare side serves bgmode's bytes: get them once
                _, rid, body = polls.measure_bgmode(1, [16])
                state["polls"] = (rid, body)
            rid, body = state["polls"]
            out["bare"] = polls.measure_bare(p.wrk_seconds, p.connections, rid, body)
    out["body_bytes"] = len(state["polls"][1])
    return out


def run_relay(p: Params, rnd: int, tokens: int) -> dict[str, Any]:
    ways = ["direct", "bgmode"] + (relay.LITELLM_WAYS if relay.litellm_available() else [])
    with relay.upstream(tokens, 20) as up:
        return {way: relay.measure(way, up, p.streams) for way in ordered(ways, rnd)}


def run_store(p: Params, rnd: int, state: dict[str, Any]) -> dict[str, Any]:
    import tempfile

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        out["sqlite"] = asyncio.run(store_events.bench(f"sqlite:///{d}/bench.db", p.store_events, 16, 25, 1))
    cluster = state.get("pg_cluster")
    if cluster is None and "pg_error" not in state:
        try:
            from tests.pg import admin, start_local_cluster

            cluster = state["pg_cluster"] = start_local_cluster()
            state["pg_admin"] = admin
        except Exception as exc:  # no PostgreSQL here: the table says why
            state["pg_error"] = f"{type(exc).__name__}: {exc}"
    if cluster is not None:
        from tests.pg import with_database

        asyncio.run(state["pg_admin"](cluster.url, f"CREATE DATABASE bench{rnd}"))
        out["postgresql"] = asyncio.run(
            store_events.bench(with_database(cluster.url, f"bench{rnd}"), p.store_events, 16, 25, 1)
        )
    else:
        out["postgresql_error"] = state["pg_error"]
    return out


def run_round(name: str, p: Params, rnd: int, state: dict[str, Any]) -> dict[str, Any]:
    if name == "creates":
        return run_creates(p, rnd)
    if name == "polls":
        return run_polls(p, rnd, state)
    if name == "relay":
        return run_relay(p, rnd, 100)
    if name == "relay500":
        return run_relay(p, rnd, 500)
    if name == "seqcreates":
        return loaded.seq_creates(p.streams, p.seq_seconds)
    if name == "rss":
        return loaded.rss_mixed(200, 1000)
    if name == "readers":
        return asyncio.run(readers.measure(10_000, 100, 1000))
    if name == "store":
        return run_store(p, rnd, state)
    if name == "worker":
        return worker_events.measure(*p.worker)
    raise ValueError(name)


# -- the table -----------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "not measured"
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} [{format(min(values), fmt)}-{format(max(values), fmt)}]"


class Row:
    """One metric over the rounds: bgmode's values, the baseline's, the per-round ratio."""

    def __init__(
        self,
        metric: str,
        fmt: str,
        target: str,
        ok: Callable[[float], bool] | None = None,
        baseline_name: str = "",
        ratio_fmt: str = ".2f",
    ) -> None:
        self.metric = metric
        self.fmt = fmt
        self.target = target
        self.ok = ok  # applied to the ratio's median when there is a baseline, else to bgmode's
        self.baseline_name = baseline_name
        self.ratio_fmt = ratio_fmt
        self.bgmode: list[float] = []
        self.baseline: list[float] = []
        self.ratio: list[float] = []
        self.note = ""

    def judged(self) -> float | None:
        vals = self.ratio if self.ratio else self.bgmode
        return statistics.median(vals) if vals else None

    def met(self) -> str:
        v = self.judged()
        if self.ok is None or v is None:
            return "-"
        return "yes" if self.ok(v) else "**no**"

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "bgmode": self.bgmode,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met(),
            "note": self.note,
        }

    def markdown(self) -> str:
        if self.note and not self.bgmode:
            return f"| {self.metric} | {self.note} | | | {self.target} | - |"
        base = spread(self.baseline, self.fmt) if self.baseline else "-"
        if self.baseline_name and self.baseline:
            base += f" ({self.baseline_name})"
        ratio = format(statistics.median(self.ratio), self.ratio_fmt) if self.ratio else "-"
        return f"| {self.metric} | {spread(self.bgmode, self.fmt)} | {base} | {ratio} | {self.target} | {self.met()} |"


def at_most(limit: float) -> Callable[[float], bool]:
    return lambda v: v <= limit


def rows(raw: dict[str, list[dict[str, Any]]], errors: dict[str, list[str]]) -> list[Row]:
    out: list[Row] = []

    def rounds(name: str) -> list[dict[str, Any]]:
        return raw.get(name, [])

    def missing(row: Row, name: str) -> None:
        if row.bgmode:
            return
        if name not in raw:
            row.note = "not run (see --only)"
        elif errors.get(name):
            row.note = f"failed: {errors[name][0]}"
        else:
            row.note = "not measured"

    r = Row("creates/s, 64 connections", ".0f", "ratio >= 0.60", lambda v: v >= 0.60, "no-op Starlette")
    p = Row("create p99 ms, 64 connections", ".1f", "<= 15 ms", lambda v: v <= 15, "no-op Starlette")
    for x in rounds("creates"):
        b, n = x["bgmode"]["64"], x["noop"]["64"]
        r.bgmode.append(b["rps"])
        r.baseline.append(n["rps"])
        r.ratio.append(b["rps"] / n["rps"])
        p.bgmode.append(b["p99_ms"])
        p.baseline.append(n["p99_ms"])
    for row in (r, p):
        missing(row, "creates")
    out += [r, p]

    r = Row("polls/s, 64 connections", ".0f", "ratio >= 0.70", lambda v: v >= 0.70, "bare endpoint, same bytes")
    for x in rounds("polls"):
        r.bgmode.append(x["bgmode"]["64"]["rps"])
        r.baseline.append(x["bare"]["64"]["rps"])
        r.ratio.append(r.bgmode[-1] / r.baseline[-1])
    missing(r, "polls")
    out.append(r)

    for name, tokens, limit in (("relay", 100, 1.10), ("relay500", 500, 1.05)):
        w = Row(f"200 streams x {tokens} tokens: wall s", ".2f", f"ratio <= {limit:.2f}", at_most(limit), "direct")
        t = Row(
            f"200 x {tokens}: median time to first token, ms",
            ".0f",
            "<= direct + 50 ms" if tokens == 100 else "",
            (lambda v: v <= 50) if tokens == 100 else None,
            "direct",
            "+.0f",
        )
        lrows = {
            way: (
                Row(f"200 x {tokens}: {WAYS_LABEL[way]} wall s", ".2f", "", None, "direct"),
                Row(
                    f"200 x {tokens}: {WAYS_LABEL[way]} median time to first token, ms",
                    ".0f",
                    "",
                    None,
                    "direct",
                    "+.0f",
                ),
            )
            for way in relay.LITELLM_WAYS
        }
        for x in rounds(name):
            d, b = x["direct"], x["bgmode"]
            w.bgmode.append(b["wall_s"])
            w.baseline.append(d["wall_s"])
            w.ratio.append(b["wall_s"] / d["wall_s"])
            bt, dt = statistics.median(b["ttft_s"]) * 1000, statistics.median(d["ttft_s"]) * 1000
            t.bgmode.append(bt)
            t.baseline.append(dt)
            t.ratio.append(bt - dt)
            for way, (lw, lt) in lrows.items():
                if way not in x:
                    continue
                lx = x[way]
                lw.bgmode.append(lx["wall_s"])
                lw.baseline.append(d["wall_s"])
                lw.ratio.append(lx["wall_s"] / d["wall_s"])
                lx_t = statistics.median(lx["ttft_s"]) * 1000
                lt.bgmode.append(lx_t)
                lt.baseline.append(dt)
                lt.ratio.append(lx_t - dt)
                if lx.get("version"):
                    lw.target = lt.target = f"(LiteLLM {lx['version']})"
        for row in (w, t):
            missing(row, name)
        out += [w, t]
        if rounds(name) and not relay.litellm_available() and tokens == 100:
            lw = Row("LiteLLM proxy (a third way in both relay benches)", ".2f", "")
            lw.note = relay.LITELLM_MISSING
            out.append(lw)
        for lw, lt in lrows.values():
            if lw.bgmode:
                out += [lw, lt]

    r = Row(
        "sequential create p99 ms while 200 relayed jobs run", ".1f", "<= 20 ms", lambda v: v <= 20, "same server idle"
    )
    for x in rounds("seqcreates"):
        r.bgmode.append(x["loaded"]["p99_ms"])
        r.baseline.append(x["idle"]["p99_ms"])
    missing(r, "seqcreates")
    out.append(r)

    r = Row("RSS per response, 1,000 queued + 200 running, KB", ".1f", "< 50 KB", lambda v: v < 50)
    for x in rounds("rss"):
        r.bgmode.append(x["per_response_bytes"] / 1024)
    missing(r, "rss")
    out.append(r)

    rp = Row("10,000-event replay, s", ".3f", "< 0.2 s", lambda v: v < 0.2)
    lag = Row("100 live tailers: lag p99, ms", ".1f", "< 50 ms", lambda v: v < 50)
    mem = Row("RSS per queued response (API only), KB", ".1f", "< 50 KB", lambda v: v < 50)
    for x in rounds("readers"):
        rp.bgmode.append(x["replay_s"])
        lag.bgmode.append(x["lag_ms"]["p99"])
        mem.bgmode.append(x["rss_per_queued_bytes"] / 1024)
    for row in (rp, lag, mem):
        missing(row, "readers")
    out += [rp, lag, mem]

    sq = Row("events/s persisted (Store.write, SQLite)", ",.0f", ">= 50,000", lambda v: v >= 50_000)
    pg = Row("events/s persisted (Store.write, PostgreSQL)", ",.0f", ">= 50,000", lambda v: v >= 50_000)
    for x in rounds("store"):
        sq.bgmode.append(x["sqlite"])
        if "postgresql" in x:
            pg.bgmode.append(x["postgresql"])
        else:
            pg.note = f"not measured: {x['postgresql_error']}"
    missing(sq, "store")
    if not pg.note:
        missing(pg, "store")
    out += [sq, pg]

    r = Row("events/s generated + persisted end to end (worker, SQLite)", ",.0f", "")
    for x in rounds("worker"):
        r.bgmode.append(x["events_per_s"])
    missing(r, "worker")
    out.append(r)
    return out


def throughput_table(raw: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| benchmark | connections | bgmode req/s | baseline req/s | ratio | bgmode p99 ms | baseline p99 ms |"]
    lines.append("|---|---|---|---|---|---|---|")
    for name, base in (("creates", "noop"), ("polls", "bare")):
        xs = raw.get(name, [])
        if not xs:
            continue
        for c in xs[0]["bgmode"]:
            b = [x["bgmode"][c]["rps"] for x in xs]
            n = [x[base][c]["rps"] for x in xs]
            ratio = statistics.median(bb / nn for bb, nn in zip(b, n, strict=True))
            bp = [x["bgmode"][c]["p99_ms"] for x in xs]
            np_ = [x[base][c]["p99_ms"] for x in xs]
            lines.append(
                f"| {name} | {c} | {spread(b, '.0f')} | {spread(n, '.0f')} | {ratio:.2f} "
                f"| {spread(bp, '.1f')} | {spread(np_, '.1f')} |"
            )
    return lines


def markdown(info: dict[str, Any], table: list[Row], raw: dict[str, list[dict[str, Any]]], a: Any) -> str:
    dirty = " (with uncommitted changes in the working tree)" if info["uncommitted_changes"] else ""
    lines = [
        "# bgmode benchmark results",
        "",
        f"`python bench/run.py --rounds {a.rounds}{' --quick' if a.quick else ''}"
        f"{' --only ' + ','.join(a.only) if a.only != BENCHES else ''}`, {info['date']}, "
        f"commit `{info['commit']}`{dirty}.",
        "",
        f"Machine: {info['cpu']}, {info['cpus']} CPUs, {info['ram_gib']} GiB RAM, {info['os']}, "
        f"Python {info['python']}. Load average at start {' / '.join(map(str, info['loadavg_start']))}, "
        f"at end {' / '.join(map(str, info['loadavg_end']))} (1/5/15 min): anything else running on the "
        "machine moves these numbers; ratios are measured within one round, bgmode and its baseline "
        "back to back.",
        "",
        f"Median over {a.rounds} round(s), [min-max] when more than one. The ratio is bgmode / baseline "
        "per round (for times to first token: bgmode minus baseline, in ms), its median shown; "
        "'met' judges that median (or bgmode's median where there is no baseline).",
        "",
        "| metric | bgmode | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
        *(row.markdown() for row in table),
        "",
    ]
    tt = throughput_table(raw)
    if len(tt) > 2:
        lines += ["## Throughput vs connections", "", *tt, ""]
    lines += [
        "## Charts",
        "",
        "![time to first token](ttft.png) ![wall time](wall.png)",
        "",
        "![throughput](throughput.png) ![RSS](rss.png)",
        "",
    ]
    if any(raw.get("seqcreates", [])):
        x = raw["seqcreates"][-1]
        lines += [
            f"Sequential creates (last round): idle {x['idle']['n']} creates p50 {x['idle']['p50_ms']:.1f} ms; "
            f"with {x['jobs']} relayed jobs running {x['loaded']['n']} creates p50 {x['loaded']['p50_ms']:.1f} ms "
            f"({x['running_at_end']} jobs still running at the end).",
            "",
        ]
    return "\n".join(lines)


# -- the charts ----------------------------------------------------------------------------


def charts(raw: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["charts skipped: matplotlib not installed (pip install -e '.[bench]')"]
    made: list[str] = []
    relays = [(n, t) for n, t in (("relay", 100), ("relay500", 500)) if raw.get(n)]

    def ways_of(name: str) -> list[str]:
        return [w for w in ("direct", "bgmode", *relay.LITELLM_WAYS) if w in raw[name][0]]

    def axis(ax: Any, title: str, xlabel: str | None, ylabel: str, legend: bool) -> None:
        ax.set_title(title)
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y" if xlabel is None else "both", alpha=0.3)
        if legend:
            ax.legend(fontsize=8)

    def save(fig: Any, fname: str) -> None:
        fig.tight_layout()
        fig.savefig(out / fname, dpi=100)
        plt.close(fig)
        made.append(fname)

    if relays:
        for fname, key, ylabel, scale in (
            ("ttft.png", "ttft_s", "time to first token (ms)", 1000),
            ("wall.png", "per_stream_s", "per-stream wall time (s)", 1),
        ):
            fig, axes = plt.subplots(1, len(relays), figsize=(6 * len(relays), 4.5), squeeze=False)
            for ax, (name, tokens) in zip(axes[0], relays, strict=True):
                ways = ways_of(name)
                data = [[v * scale for x in raw[name] for v in x[w][key]] for w in ways]
                ax.boxplot(data, showfliers=True)
                ax.set_xticks(range(1, len(ways) + 1), [WAYS_LABEL[w].replace(" (", "\n(") for w in ways], fontsize=8)
                if key == "per_stream_s":
                    for i, w in enumerate(ways, start=1):
                        walls = [x[w]["wall_s"] for x in raw[name]]
                        ax.plot([i + 0.3] * len(walls), walls, "rx", label="total wall, per round" if i == 1 else None)
                title = f"200 concurrent streams x {tokens} tokens (20 ms each), all rounds"
                axis(ax, title, None, ylabel, legend=key == "per_stream_s")
            save(fig, fname)

    tps = [(n, b, lbl) for n, b, lbl in (("creates", "noop", "no-op"), ("polls", "bare", "bare")) if raw.get(n)]
    if tps:
        fig, axes = plt.subplots(1, len(tps), figsize=(6 * len(tps), 4.5), squeeze=False)
        for ax, (name, base, label) in zip(axes[0], tps, strict=True):
            conns = list(raw[name][0]["bgmode"])
            for side, lbl in ((base, f"baseline ({label} Starlette)"), ("bgmode", "bgmode")):
                vals = [[x[side][c]["rps"] for x in raw[name]] for c in conns]
                med = [statistics.median(v) for v in vals]
                err = [
                    [m - min(v) for m, v in zip(med, vals, strict=True)],
                    [max(v) - m for m, v in zip(med, vals, strict=True)],
                ]
                ax.errorbar([int(c) for c in conns], med, yerr=err, marker="o", capsize=4, label=lbl)
            axis(ax, f"{name}: requests/s vs connections (median, min-max)", "wrk connections", "requests/s", True)
        save(fig, "throughput.png")

    series: list[tuple[str, list[list[float]]]] = []
    series.extend(
        (f"{WAYS_LABEL[w]}: 200 x {tokens} relay", raw[name][-1][w]["rss"])
        for name, tokens in relays
        for w in ("bgmode", *relay.LITELLM_WAYS)
        if raw[name][-1].get(w, {}).get("rss")
    )
    if raw.get("rss"):
        series.append(("bgmode: 200 running, then +1,000 queued", raw["rss"][-1]["rss"]))
    if series:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, samples in series:
            ax.plot([s[0] for s in samples], [s[1] / 1024 for s in samples], label=label)
        title = "server RSS over time (last round; sampled every 0.2 s)"
        axis(ax, title, "seconds since the server was ready", "RSS (MiB)", True)
        save(fig, "rss.png")
    return made


# -- main ----------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="1 round, short durations")
    ap.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--out", default=str(Path(ROOT) / "bench" / "results"))
    ap.add_argument("--litellm", metavar="PATH", help="LiteLLM's `litellm` executable, for the relay benches")
    a = ap.parse_args()
    if a.litellm is not None:
        if not relay.executable_file(a.litellm):
            ap.error(f"--litellm: {a.litellm} is not an executable file")
        relay.use_litellm(a.litellm)
    a.only = [x.strip() for x in a.only.split(",") if x.strip()]
    unknown = set(a.only) - set(BENCHES)
    if unknown:
        ap.error(f"--only: unknown benchmark(s) {', '.join(sorted(unknown))} (choose from {', '.join(BENCHES)})")
    if a.rounds is None:
        a.rounds = 1 if a.quick else 3
    if a.rounds < 1:
        ap.error("--rounds: at least 1")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    p = Params(a.quick)
    info = machine()
    print(f"machine: {info['cpu']} x{info['cpus']}, load {info['loadavg_start']}", flush=True)
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in a.only}
    errors: dict[str, list[str]] = {}
    loads: dict[str, list[list[float]]] = {}
    state: dict[str, Any] = {}
    t_start = time.monotonic()
    try:
        for rnd in range(a.rounds):
            for name in a.only:
                t0 = time.monotonic()
                print(f"round {rnd + 1}/{a.rounds}: {name} ...", end=" ", flush=True)
                loads.setdefault(name, []).append(loadavg())
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # the benches' own lines
                        raw[name].append(run_round(name, p, rnd, state))
                    print(f"{time.monotonic() - t0:.0f}s", flush=True)
                except Exception as exc:  # one failing benchmark must not lose the others' numbers
                    msg = f"{type(exc).__name__}: {exc}".strip()[:200]
                    errors.setdefault(name, []).append(msg)
                    print(f"FAILED ({msg})", flush=True)
                    traceback.print_exc()
    finally:
        if state.get("pg_cluster") is not None:
            state["pg_cluster"].stop()
    info["loadavg_end"] = loadavg()
    info["seconds"] = round(time.monotonic() - t_start)
    table = rows(raw, errors)
    (out / "results.md").write_text(markdown(info, table, raw, a))
    made = charts(raw, out)
    doc = {
        "machine": info,
        "args": {"rounds": a.rounds, "quick": a.quick, "only": a.only},
        "metrics": [row.as_dict() for row in table],
        "errors": errors,
        "loadavg_before_each": loads,
        "rounds": raw,
    }
    (out / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    print()
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {', '.join(made)} in {info['seconds']} s")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
