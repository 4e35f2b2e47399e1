"""The worker: claim queued responses, run them on their backend, persist their events.

One `Worker` per process runs up to `concurrency` responses at once:

- **claim loop**: wakes on an in-process signal (a create in this process) or the store's
  `wait_for_work`, and claims as many queued responses as it has free slots;
- **flusher**: the only task that writes events. Runners hand it `Write`s; it merges
  everything waiting into one `store.write` (group commit), then publishes the committed
  events to live readers through the hub;
- **heartbeat**: renews all of this process's leases in one statement, and learns of
  cancels requested through other processes;
- **reaper**: finds responses whose worker was lost (lease expired): requeues those that
  had produced no output, fails the others with `server_error`.

Shutdown (`stop`): stop claiming, give running responses `grace` seconds to finish, then
hand the rest back: requeued if they had no output yet, else failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from bgmode import metrics
from bgmode.backends.base import Backend, BackendError, Checkpoint, Finish, ModelRequest, estimate_input_tokens
from bgmode.context import model_request
from bgmode.errors import APIError
from bgmode.events import ResponseBuilder, Sealer, replay
from bgmode.hub import Hub
from bgmode.ids import new_id
from bgmode.logs import state_change
from bgmode.records import ResponseRecord, Status, StoredEvent
from bgmode.routing import Router
from bgmode.sealing import Sealer as ReasoningSealer
from bgmode.store.base import ConversationAppend, Store, Write, WriteResult

log = logging.getLogger("bgmode.worker")

#: how often a running response's Response snapshot (for polls) is rewritten
SNAPSHOT_INTERVAL = 0.2
#: flush pacing: after a write that carried at least `PACE_WRITES` responses, the next round
#: waits until as long as that write took (at most `PACE_MAX` seconds) has passed. Each
#: flush dirties about one page per response it carries, so fewer, fuller rounds write much
#: less; a small write (a first token, a lone response) still goes out at once.
PACE_WRITES = 16
PACE_MAX = 0.010
#: a round's writes go to the store in transactions of at most this many responses: a create
#: (or any other write) queued meanwhile waits for one part, not for the whole round
WRITE_CHUNK = 32


@dataclass
class Job:
    response_id: str
    builder: ResponseBuilder | None = None
    task: asyncio.Task[Finish] | None = None
    cancelled: bool = False
    fenced: bool = False
    stopping: bool = False
    last_snapshot: float = 0.0
    #: events made but not yet handed to the flusher (it takes them on its next round)
    buf: list[StoredEvent] = field(default_factory=list)
    #: the poll snapshot is due with the next write
    snapshot_due: bool = False
    #: how many times a worker has started this response (this run included)
    attempts: int = 0
    dirty: bool = False
    #: the conversation this response is a turn of, and the turn's input items (appended to it,
    #: with the output, by the finishing write)
    conversation: str | None = None
    turn_input: list[dict[str, Any]] = field(default_factory=list)
    #: for metrics and logs: the model asked for, when the response was created (epoch
    #: seconds), its tenant, and whether its first output was seen yet
    model: str = ""
    created_at: float = 0.0
    tenant: str = ""
    first_output: bool = False
    #: resumable backends: the latest checkpoint token, and how many buffered events it
    #: covers (-1: no checkpoint seen, every buffered event may be written)
    resume: dict[str, Any] | None = None
    covered: int = -1
    #: the checkpoint changed since the last write that carried it
    resume_due: bool = False

    def take(self, everything: bool = False) -> list[StoredEvent]:
        """Buffered events to write: all of them, or (after a checkpoint) those the latest
        checkpoint covers, so that the token written with them matches them exactly."""
        if everything or self.covered < 0:
            buf, self.buf = self.buf, []
            if self.covered > 0:
                self.covered = 0
            return buf
        buf = self.buf[: self.covered]
        del self.buf[: self.covered]
        self.covered = 0
        return buf

    def put_back(self, events: list[StoredEvent]) -> None:
        """Undo a `take` whose write failed."""
        self.buf[:0] = events
        if self.covered >= 0:
            self.covered += len(events)
        if self.resume is not None:
            self.resume_due = True


@dataclass
class _Pending:
    write: Write
    job: Job | None
    done: asyncio.Future[WriteResult] | None = None


@dataclass
class WorkerConfig:
    concurrency: int = 16
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 0.5
    poll_seconds: float = 0.5
    grace_seconds: float = 30.0


def seal_for(rec: ResponseRecord, sealer: ReasoningSealer | None) -> Sealer | None:
    """The builder's reasoning sealer, when the client asked for `reasoning.encrypted_content`."""
    if sealer is not None and "reasoning.encrypted_content" in (rec.request.get("include") or ()):
        return sealer.seal
    return None


class Worker:
    def __init__(self, store: Store, router: Router, hub: Hub, config: WorkerConfig | None = None) -> None:
        self.store = store
        self.router = router
        self.hub = hub
        self.config = config or WorkerConfig()
        #: seals reasoning items' encrypted_content (set by the server once the store is open)
        self.sealer: ReasoningSealer | None = None
        #: host:pid:process start:random, so a restarted server on the same host can tell
        #: that the process holding a lease is gone (see `reap_orphans`)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}:{new_id('w')[2:14]}"
        self.jobs: dict[str, Job] = {}
        self._runners: set[asyncio.Task[None]] = set()
        self._pending: list[_Pending] = []
        self._pending_ready = asyncio.Event()
        #: jobs with buffered events (one entry per job, however many events it made)
        self._dirty: list[Job] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._claiming = True
        self._slots_free = asyncio.Event()
        #: slots promised to responses being created in this process (see `reserve`)
        self._reserved = 0
        #: the last claim found the queue empty: nothing older waits
        self._queue_empty = False

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="bgmode-flusher"),
            asyncio.create_task(self._heartbeat_loop(), name="bgmode-heartbeat"),
        ]
        if self.config.concurrency > 0:
            self._tasks += [
                asyncio.create_task(self._claim_loop(), name="bgmode-claim"),
                asyncio.create_task(self._reap_loop(), name="bgmode-reaper"),
            ]

    def stop_claiming(self) -> None:
        self._claiming = False
        self.hub.wake_workers()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let running responses finish for `grace` seconds, hand back the rest."""
        self.stop_claiming()
        grace = self.config.grace_seconds if grace is None else grace
        if self._runners:
            _, still = await asyncio.wait(set(self._runners), timeout=grace)
            for job in list(self.jobs.values()):
                job.stopping = True
                if job.task is not None:
                    job.task.cancel()
            if still:
                await asyncio.wait(still, timeout=10)
        await self._drain_writes()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []

    async def _drain_writes(self) -> None:
        """Wait until everything handed to the flusher so far is written."""
        while self._pending or self._dirty:
            fut: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
            self._pending.append(_Pending(Write("", []), None, fut))
            self._pending_ready.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(fut, 10)

    # -- writing ----------------------------------------------------------------------------

    def submit(self, job: Job | None, write: Write) -> None:
        """Queue a write for the flusher (fire and forget: a fenced write cancels the job)."""
        self._pending.append(_Pending(write, job))
        if not self._pending_ready.is_set():
            self._pending_ready.set()

    def submit_and_wait(self, job: Job | None, write: Write) -> asyncio.Future[WriteResult]:
        """Queue a write and get a future for its result."""
        fut: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(write, job, fut))
        if not self._pending_ready.is_set():
            self._pending_ready.set()
        return fut

    async def _flush_loop(self) -> None:
        backoff = 0.0
        loop = asyncio.get_running_loop()
        #: paced after a big write: the next round starts no earlier than this (loop time)
        paced_until = 0.0
        while True:
            if backoff:  # the last write failed: the store is down or full; try again soon
                await asyncio.sleep(backoff)
            await self._pending_ready.wait()
            if paced_until:
                delay = paced_until - loop.time()
                paced_until = 0.0
                if delay > 0:  # let this round gather more events per response
                    await asyncio.sleep(delay)
            self._pending_ready.clear()
            batch, self._pending = self._pending, []
            dirty, self._dirty = self._dirty, []
            if not batch and not dirty:
                continue
            merged: list[_Pending] = []
            open_by_id: dict[str, _Pending] = {}
            waiters: list[tuple[_Pending, _Pending]] = []
            for p in batch:
                w = p.write
                if not w.response_id:  # a drain marker
                    waiters.append((p, p))
                    continue
                cur = open_by_id.get(w.response_id)
                # a finishing write stays its own write: if the store refuses it (a cancel came
                # first), the events merged before it must still be written
                if cur is not None and cur.write.finish is None and w.finish is None:
                    cur.write.events.extend(w.events)
                    if w.body is not None:
                        cur.write.body = w.body
                    waiters.append((p, cur))
                    continue
                m = _Pending(
                    Write(w.response_id, list(w.events), w.body, w.finish, w.force, w.conversation, w.resume), p.job
                )
                open_by_id[w.response_id] = m
                merged.append(m)
                waiters.append((p, m))
            # explicit writes first: a job's buffered deltas always follow its in_progress
            # event, and its finishing write takes what is left in its buffer itself
            taken: list[tuple[Job, list[StoredEvent]]] = []
            for job in dirty:
                job.dirty = False
                if not job.buf or job.builder is None:
                    continue
                events = job.take()
                if not events:
                    continue  # nothing covered by a checkpoint yet: the next one marks it dirty
                body = None
                if job.snapshot_due:
                    job.snapshot_due = False
                    body = job.builder.snapshot()
                resume = None
                if job.resume_due:
                    job.resume_due = False
                    resume = job.resume
                taken.append((job, events))
                cur = open_by_id.get(job.response_id)
                if cur is not None and cur.write.finish is None:
                    cur.write.events.extend(events)
                    if body is not None:
                        cur.write.body = body
                    if resume is not None:
                        cur.write.resume = resume
                    continue
                m = _Pending(Write(job.response_id, list(events), body, resume=resume), job)
                open_by_id[job.response_id] = m
                merged.append(m)
            results: dict[int, WriteResult] = {}
            took = 0.0
            for start in range(0, len(merged), WRITE_CHUNK):
                part = merged[start : start + WRITE_CHUNK]
                t0 = time.perf_counter()
                try:
                    out = await self.store.write(self.worker_id, [m.write for m in part])
                except Exception as exc:
                    metrics.STORE_WRITE_ERRORS.inc()
                    # Nothing of this part was written (one transaction). A store error is not
                    # a lost lease: put this part and the ones after it back in order and retry,
                    # so no response is left running with nobody writing it (a full disk, a
                    # database restart).
                    backoff = min(max(backoff * 2, 0.05), 2.0)
                    log.error("writing %d event batches failed (%s); retrying in %.2fs", len(part), exc, backoff)
                    unwritten = {id(m) for m in merged[start:]}
                    for job, events in reversed(taken):
                        if id(open_by_id[job.response_id]) in unwritten:
                            job.put_back(events)
                            job.snapshot_due = True
                            if not job.dirty:
                                job.dirty = True
                                self._dirty.append(job)
                    self._pending[:0] = [p for p, m in waiters if m is p or id(m) in unwritten]
                    waiters = [(p, m) for p, m in waiters if m is not p and id(m) not in unwritten]
                    self._pending_ready.set()
                    break
                backoff = 0.0
                part_took = time.perf_counter() - t0
                took += part_took
                metrics.STORE_WRITE_SECONDS.observe(part_took)
                persisted = 0
                for m, res in zip(part, out, strict=True):
                    results[id(m)] = res
                    if res is WriteResult.OK:
                        if m.write.events:
                            persisted += len(m.write.events)
                            self.hub.publish(m.write.response_id, m.write.events)
                    elif res is WriteResult.FENCED and m.job is not None and not m.job.fenced:
                        m.job.fenced = True
                        if m.job.task is not None:
                            m.job.task.cancel()
                if persisted:
                    metrics.EVENTS_PERSISTED.inc(persisted)
            if len(merged) >= PACE_WRITES and not backoff:
                paced_until = loop.time() + min(took, PACE_MAX)
            for p, m in waiters:
                if p.done is not None and not p.done.done():
                    p.done.set_result(results.get(id(m), WriteResult.OK))

    # -- claiming ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while self._claiming:
            free = self.config.concurrency - len(self._runners) - self._reserved
            if free <= 0:
                self._slots_free.clear()
                await self._slots_free.wait()
                continue
            self.hub.work.clear()
            try:
                records = await self.store.claim(self.worker_id, free, self.config.lease_seconds)
            except Exception:
                log.exception("claiming failed")
                records = []
            self._queue_empty = len(records) < free
            for rec in records:
                self._spawn(rec)
            if records and len(records) == free:
                continue
            if not self._claiming:
                break
            waiter = asyncio.create_task(self.store.wait_for_work(self.config.poll_seconds))
            local = asyncio.create_task(self.hub.work.wait())
            _, pending = await asyncio.wait({waiter, local}, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()

    def reserve(self) -> bool:
        """Promise a slot to a response this process is creating, if one is free and nothing
        older waits in the queue: it is then created already leased to this worker and runs
        at once, with no claim round trip (see `Service.create`). Settle with `run_reserved`."""
        if not self._claiming or not self._queue_empty:
            return False
        if len(self._runners) + self._reserved >= self.config.concurrency:
            return False
        self._reserved += 1
        return True

    def run_reserved(self, rec: ResponseRecord | None) -> None:
        """Run the response a `reserve` was for (None: it was not created; free the slot)."""
        self._reserved -= 1
        if rec is not None:
            self._spawn(rec)
        else:
            self._slots_free.set()

    def _spawn(self, rec: ResponseRecord) -> None:
        # registered before the task first runs: a reader or a cancel arriving in between
        # already finds the response running here
        model = str(rec.request.get("model") or rec.body.get("model"))
        job = Job(rec.id, attempts=rec.attempts, model=model, created_at=rec.created_at, tenant=rec.tenant)
        self.jobs[rec.id] = job
        metrics.WORKER_RUNNING.set(len(self.jobs))
        self.hub.register_job(rec.id, lambda: self._cancel_local(job))
        t = asyncio.create_task(self._run(job, rec), name=f"bgmode-run-{rec.id}")
        self._runners.add(t)
        t.add_done_callback(self._runner_done)

    def _runner_done(self, t: asyncio.Task[None]) -> None:
        self._runners.discard(t)
        self._slots_free.set()
        if not t.cancelled() and t.exception() is not None:
            log.error("runner crashed", exc_info=t.exception())

    # -- running one response ---------------------------------------------------------------

    async def _run(self, job: Job, rec: ResponseRecord) -> None:
        try:
            await self._execute(job, rec)
        finally:
            self.jobs.pop(rec.id, None)
            metrics.WORKER_RUNNING.set(len(self.jobs))
            self.hub.unregister_job(rec.id)

    def _cancel_local(self, job: Job) -> None:
        job.cancelled = True
        if job.task is not None:
            job.task.cancel()

    async def _execute(self, job: Job, rec: ResponseRecord) -> None:
        if rec.resume is not None:
            # taken over from a lost worker: go on from the stored log and its checkpoint
            builder = replay(rec.body, await _all_events(self.store, rec.id), seal_for(rec, self.sealer))
            job.resume, job.covered = rec.resume, 0
            job.first_output = builder.output_started
        else:
            builder = ResponseBuilder(rec.body, rec.last_seq + 1, seal_for(rec, self.sealer))
        job.builder = builder
        job.conversation = rec.request.get("conversation")
        if job.conversation is not None:
            job.turn_input = rec.input_items
        builder.set_status(Status.IN_PROGRESS.value)
        request: ModelRequest | None = None
        error: dict[str, Any] | None = None
        try:
            request = model_request(rec, self.sealer)
            builder.input_tokens_estimate = estimate_input_tokens(request)
        except APIError as exc:  # e.g. a reasoning token that no longer verifies (key changed)
            error = {"code": "invalid_prompt", "message": exc.message}
        if rec.last_seq < 2:  # created, queued: in_progress not yet announced
            self.submit(job, Write(rec.id, [builder.lifecycle("response.in_progress")], builder.body))
        metrics.response_started(job.model, rec.created_at, time.time())
        state_change(
            rec.id, Status.IN_PROGRESS.value, job.model, tenant=rec.tenant, attempt=rec.attempts, worker=self.worker_id
        )
        if rec.cancel_requested:
            job.cancelled = True

        status: Status
        reason: str | None = None
        route = self.router.resolve(rec.request["model"])
        if job.cancelled:
            status, error = Status.CANCELLED, None
        elif request is None:
            status = Status.FAILED
        elif route is None:
            status = Status.FAILED
            error = {"code": "server_error", "message": f"No backend serves model '{request.model}'."}
        else:
            job.task = asyncio.create_task(self._consume(job, builder, route.backend, request, rec.resume))
            try:
                fin = await job.task
                status, reason = ResponseBuilder.finish_status(fin)
            except asyncio.CancelledError:
                if job.fenced:
                    return
                if job.cancelled:
                    status = Status.CANCELLED
                elif job.stopping:
                    await self._hand_back(job, builder)
                    return
                else:
                    raise
            except BackendError as exc:
                status = Status.FAILED
                error = {"code": exc.code, "message": exc.message}
            except Exception as exc:
                log.exception("backend crashed on %s", rec.id)
                status = Status.FAILED
                error = {
                    "code": "server_error",
                    "message": f"The model backend failed: {type(exc).__name__}.",
                }
            if job.cancelled:
                status, error, reason = Status.CANCELLED, None, None

        await self._finish(job, builder, status, error, reason)
        if status is Status.CANCELLED and job.resume is not None and route is not None:
            await route.backend.cancel(job.resume)  # the upstream's own response too

    async def _consume(
        self,
        job: Job,
        builder: ResponseBuilder,
        backend: Backend,
        request: ModelRequest,
        resume: dict[str, Any] | None = None,
    ) -> Finish:
        stream = backend.stream(request) if resume is None else backend.resume(request, resume)
        try:
            async for ev in stream:
                if isinstance(ev, Finish):
                    return ev
                if type(ev) is Checkpoint:
                    # everything buffered so far is covered by this token (see `Job.take`)
                    job.resume, job.covered, job.resume_due = ev.token, len(job.buf), True
                    if job.buf and not job.dirty:
                        job.dirty = True
                        self._dirty.append(job)
                        if not self._pending_ready.is_set():
                            self._pending_ready.set()
                    continue
                events = builder.feed(ev)
                if events:
                    if not job.first_output:
                        job.first_output = True
                        metrics.first_token(job.model, job.created_at, time.time())
                    job.buf.extend(events)
                    now = time.monotonic()
                    if now - job.last_snapshot >= SNAPSHOT_INTERVAL:
                        job.last_snapshot = now
                        job.snapshot_due = True
                    if not job.dirty:
                        job.dirty = True
                        self._dirty.append(job)
                        if not self._pending_ready.is_set():
                            self._pending_ready.set()
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        return Finish()

    async def _finish(
        self,
        job: Job,
        builder: ResponseBuilder,
        status: Status,
        error: dict[str, Any] | None,
        reason: str | None,
    ) -> None:
        unflushed = job.take(everything=True)
        events = unflushed + builder.terminal(status, error=error, incomplete_reason=reason)
        res = await self.submit_and_wait(
            job,
            Write(job.response_id, events, builder.body, status.value, conversation=turn_items(job, builder, status)),
        )
        if res is WriteResult.OK:
            self._finished(job, status.value, builder.body.get("usage"), error, reason)
        if res is WriteResult.CANCEL_REQUESTED and status != Status.CANCELLED:
            # the cancel committed first: finish cancelled instead (the refused write wrote
            # nothing). The builder already holds the refused terminal, so the cancelled one is
            # built from the log as it stands: everything committed (all this job's earlier
            # writes were settled before this one) plus what this write carried unflushed.
            alt = await self._rebuild(job, builder, unflushed)
            events = unflushed + alt.terminal(Status.CANCELLED)
            res = await self.submit_and_wait(
                job,
                Write(
                    job.response_id,
                    events,
                    alt.body,
                    Status.CANCELLED.value,
                    force=True,
                    conversation=turn_items(job, alt, Status.CANCELLED),
                ),
            )
            if res is WriteResult.OK:
                self._finished(job, Status.CANCELLED.value, alt.body.get("usage"), None, None)

    async def _rebuild(self, job: Job, builder: ResponseBuilder, unflushed: list[StoredEvent]) -> ResponseBuilder:
        """A builder positioned where `builder` was before its terminal events: replayed from the
        stored log and `unflushed` (only for the rare finish refused by a cancel, so that no
        finish pays for a copy of its output in advance)."""
        alt = replay(builder.body, [*await _all_events(self.store, job.response_id), *unflushed], builder.seal)
        alt.input_tokens_estimate = builder.input_tokens_estimate
        alt._usage = builder._usage  # reported by the backend (not in the log)
        return alt

    def _finished(self, job: Job, status: str, usage: Any, error: dict[str, Any] | None, reason: str | None) -> None:
        """Count and log a terminal write this worker made."""
        now = time.time()
        metrics.response_finished(job.model, status, job.created_at, now, usage)
        route = self.router.resolve(job.model)
        state_change(
            job.response_id,
            status,
            job.model,
            tenant=job.tenant,
            attempt=job.attempts,
            worker=self.worker_id,
            route=route.kind if route is not None else "none",
            error=error,
            reason=reason,
            duration_ms=(now - job.created_at) * 1000,
        )

    async def _hand_back(self, job: Job, builder: ResponseBuilder) -> None:
        """Shutdown: requeue a response with no output; fail one whose output had begun,
        unless its backend can resume it: that one stays leased (its checkpoint written), for
        the next process on this host, or any worker once the lease lapses, to take over."""
        await self._drain_writes()
        if job.resume is not None and not job.fenced:
            log.info("response %s: left to be resumed after the checkpoint", job.response_id)
            return
        if not builder.output_started:
            if await self.store.release(job.response_id, self.worker_id):
                state_change(
                    job.response_id,
                    Status.QUEUED.value,
                    job.model,
                    tenant=job.tenant,
                    attempt=job.attempts,
                    worker=self.worker_id,
                    reason="shutdown",
                )
                return
        await self._finish(
            job,
            builder,
            Status.FAILED,
            {"code": "server_error", "message": "The server shut down before the response finished."},
            None,
        )

    # -- leases -----------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            if not self.jobs:
                continue
            try:
                cancelled = await self.store.heartbeat(self.worker_id, self.config.lease_seconds, list(self.jobs))
            except Exception:
                log.exception("heartbeat failed")
                continue
            for rid in cancelled:
                job = self.jobs.get(rid)
                if job is not None and not job.cancelled:
                    self._cancel_local(job)

    async def _reap_loop(self) -> None:
        interval = max(1.0, self.config.lease_seconds / 3)
        while self._claiming:
            try:
                await self.reap_orphans()
                await self.reap()
            except Exception:
                log.exception("reaping lost responses failed")
            await asyncio.sleep(interval)

    async def reap_orphans(self) -> int:
        """Settle, without waiting for their leases, the responses of a process on this host
        that is gone (its pid is not alive, or belongs to a process started since)."""
        n = 0
        prefix = self.worker_id.split(":", 1)[0] + ":"
        for rec in await self.store.leased(prefix, 100):
            owner = rec.lease_owner
            if owner is None or owner == self.worker_id or not process_gone(owner):
                continue
            taken = await self.store.takeover(rec.id, self.worker_id, self.config.lease_seconds, owner=owner)
            if taken is None:
                continue
            n += 1
            log.warning("response %s: its worker %s is gone; settling it now", rec.id, owner)
            await self._settle_taken(taken)
        return n

    async def reap(self) -> int:
        """Settle responses whose worker was lost; returns how many."""
        n = 0
        for stale in await self.store.expired(100):
            if stale.id in self.jobs:
                continue  # ours, still running: its lease lapsed while the store was unwritable
            rec = await self.store.takeover(stale.id, self.worker_id, self.config.lease_seconds)
            if rec is None:
                continue
            n += 1
            await self._settle_taken(rec)
        return n

    async def _settle_taken(self, rec: ResponseRecord) -> None:
        """A response just taken over: resumed here when its backend left a checkpoint, else
        settled (`settle_lost`)."""
        route = self.router.resolve(str(rec.request.get("model")))
        resumable = route is not None and type(route.backend).resume is not Backend.resume
        if rec.resume is not None and not rec.cancel_requested and resumable and self._claiming:
            log.warning("response %s: resuming after its backend checkpoint", rec.id)
            self._spawn(rec)
            return
        await self.settle_lost(rec, self.worker_id, self.store, self.sealer, router=self.router)

    @staticmethod
    async def settle_lost(
        rec: ResponseRecord,
        worker_id: str,
        store: Store,
        sealer: ReasoningSealer | None,
        cancel: bool = False,
        router: Router | None = None,
    ) -> None:
        """After a takeover: requeue (no output yet) or finish failed/cancelled from the stored
        log; a cancelled one with a backend checkpoint is cancelled at the model server too."""
        events = await _all_events(store, rec.id)
        builder = replay(rec.body, events, seal_for(rec, sealer))
        if not cancel and not builder.output_started and not rec.cancel_requested:
            if await store.release(rec.id, worker_id):
                state_change(
                    rec.id,
                    Status.QUEUED.value,
                    rec.request.get("model") or rec.body.get("model"),
                    tenant=rec.tenant,
                    attempt=rec.attempts,
                    worker=worker_id,
                    reason="worker_lost",
                )
            return
        if cancel or rec.cancel_requested:
            status, error = Status.CANCELLED, None
        else:
            status = Status.FAILED
            error = {"code": "server_error", "message": "The worker running this response was lost."}
        out = builder.terminal(status, error=error)
        res = await store.write(worker_id, [Write(rec.id, out, builder.body, status.value, force=True)])
        route = router.resolve(str(rec.request.get("model"))) if router is not None else None
        if status is Status.CANCELLED and rec.resume is not None and route is not None:
            await route.backend.cancel(rec.resume)
        if res and res[0] is WriteResult.OK:
            model = rec.request.get("model") or rec.body.get("model")
            now = time.time()
            metrics.response_finished(model, status.value, rec.created_at, now, builder.body.get("usage"))
            state_change(
                rec.id,
                status.value,
                model,
                tenant=rec.tenant,
                attempt=rec.attempts,
                worker=worker_id,
                error=error,
                duration_ms=(now - rec.created_at) * 1000,
            )


def turn_items(job: Job, builder: ResponseBuilder, status: Status) -> ConversationAppend | None:
    """What a finishing response appends to its conversation: its input and output items when
    it ends completed or incomplete; nothing when it failed or was cancelled (the turn did not
    happen: retry it). Either way the finishing write ends the turn."""
    if job.conversation is None:
        return None
    if status in (Status.COMPLETED, Status.INCOMPLETE):
        return ConversationAppend(job.conversation, [*job.turn_input, *(builder.body.get("output") or ())])
    return ConversationAppend(job.conversation, [])


def _start_ticks(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, from /proc), or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat.rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return ""


def process_gone(owner: str) -> bool:
    """Whether the worker `owner` (host:pid:start:random, on this host) no longer runs."""
    parts = owner.split(":")
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's: compare start times below
    started = parts[2] if len(parts) >= 4 else ""
    return bool(started) and _start_ticks(pid) not in ("", started)


async def _all_events(store: Store, response_id: str) -> list[Any]:
    out: list[Any] = []
    after = -1
    while True:
        page = await store.events_after(response_id, after, 1000)
        out.extend(page)
        if len(page) < 1000:
            return out
        after = page[-1].seq
