"""Run actions as jobs: a bounded pool of threads apart from Errbot's command threads.

A job is a function run with a :class:`JobContext`. It can report progress, is listed and
cancelled by id, has a timeout, and holds a per-target lock so that two jobs never act on
the same host or service at once.

Cancellation is cooperative. Python cannot stop a thread, so cancelling (by a person, by
the timeout watchdog or by shutdown) does three things: it decides the job's final status
at once, runs the callbacks the job registered with :meth:`JobContext.on_cancel` (a
connector closes its SSH channel or stops the remote command there, which also unblocks a
thread waiting on it), and makes :meth:`JobContext.check` and :meth:`JobContext.wait` raise
:class:`JobCancelled`. The job's function must therefore call ``ctx.check()`` or
``ctx.wait()`` between steps. Its worker thread, and its target, are released only when
the function returns or raises, so the next job on that target never overlaps with a
remote command that is still running.

Callbacks never run on the timer thread that watches every job's timeout: ``on_done`` runs
on the job's worker thread when its function returned, and otherwise (cancelled, timed out,
shut down, even while the function is still stuck) on one of the executor's completion
threads, as do cancel callbacks and progress held back by the interval. A slow callback
(an audit write, a chat message waiting for its acknowledgement) therefore delays neither
other jobs' timeouts nor the person who cancelled.

Finished jobs stay listed (:meth:`JobExecutor.jobs`, :meth:`JobExecutor.get`) until
``history`` newer ones have finished; a finished job no longer holds its function or its
callbacks, and ``on_forget(job)`` tells the submitter when it has left the history.

Example::

    executor = JobExecutor()

    def restart(ctx: JobContext) -> str:
        for host in ("web1", "web2"):
            ctx.check()
            ctx.progress(f"restarting {host}")
            ctx.wait(2)
        return "restarted"

    job = executor.submit(restart, name="restart web", target="web", timeout=60)
    job.wait(10)  # -> JobStatus.SUCCEEDED
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any, Literal

from bot.errors import ActionFailed, JobCancelled, OpsroomError, TargetBusy

__all__ = [
    "ActionFailed",
    "ExecutorClosed",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobExecutor",
    "JobStatus",
    "TargetBusy",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_WORKERS = 16
DEFAULT_PROGRESS_INTERVAL = 1.0
DEFAULT_HISTORY = 1000
COMPLETION_GRACE = 10.0  # shutdown waits at least this long for cancelled jobs' on_done


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed out"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class ExecutorClosed(OpsroomError):
    """A job was submitted after :meth:`JobExecutor.shutdown`."""


class Job:
    """One submitted job. Its attributes are written by the executor only; read them."""

    def __init__(
        self,
        executor: JobExecutor,
        job_id: str,
        fn: Callable[[JobContext], Any],
        name: str,
        target: str | None,
        timeout: float | None,
        on_progress: Callable[[Job, str], Any] | None,
        on_done: Callable[[Job], Any] | None,
        on_forget: Callable[[Job], Any] | None,
    ) -> None:
        self.id = job_id
        self.name = name
        self.target = target
        self.timeout = timeout
        self.status = JobStatus.QUEUED
        self.created_at = datetime.now(UTC)
        self.started_at: datetime | None = None
        self.finished_at: datetime | None = None
        self.result: Any = None
        self.error = ""
        self.progress = ""
        self.cancelled_by = ""
        self._executor = executor
        # The function and callbacks are dropped once used, so that a finished job kept in
        # history does not keep alive what they refer to.
        self._fn: Callable[[JobContext], Any] | None = fn
        self._on_done = on_done
        self._on_forget = on_forget
        self._deadline: float | None = None  # time.monotonic() once running with a timeout
        self._timer: _Timer | None = None  # the timeout, withdrawn when the job finishes
        self._finished = threading.Event()  # set after on_done has returned
        self._cancelled = threading.Event()
        self._cancel_callbacks: list[Callable[[], Any]] = []
        self.context = JobContext(self, on_progress, executor.progress_interval)

    @property
    def queue_position(self) -> int | None:
        """1 for the next job to start, counted among jobs waiting for the same target or,
        with no target in the way, among jobs waiting for a free worker; None unless
        QUEUED."""
        return self._executor._queue_position(self)

    def cancel(self, by: str = "") -> bool:
        """Cancel the job; False if it had already finished. ``by`` names who cancelled.

        The status is final when this returns; cancel callbacks and ``on_done`` run on a
        completion thread (:meth:`wait` for them)."""
        return self._executor._cancel(self, JobStatus.CANCELLED, by)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Wait until the job has finished and its ``on_done`` has run; return the status."""
        self._finished.wait(timeout)
        return self.status

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name!r} target={self.target!r} {self.status}>"


class JobContext:
    """What a job's function gets: progress reporting and cancellation."""

    def __init__(
        self,
        job: Job,
        on_progress: Callable[[Job, str], Any] | None,
        interval: float,
    ) -> None:
        self.job = job
        self._on_progress = on_progress
        self._interval = interval
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()  # one delivery at a time, in order
        self._pending: str | None = None
        self._next_delivery = 0.0  # monotonic time before which nothing is delivered
        self._flush_scheduled = False
        self._closed = False

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or timed out."""
        self._expire_if_overdue()
        return self.job._cancelled.is_set()

    def check(self) -> None:
        """Raise :class:`JobCancelled` if the job was cancelled or has timed out."""
        if self.cancelled:
            raise JobCancelled(self.job.error)

    def wait(self, seconds: float) -> None:
        """Sleep for ``seconds``; raise :class:`JobCancelled` as soon as the job is
        cancelled or reaches its timeout."""
        end = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            deadline = self.job._deadline
            until = end if deadline is None else min(end, deadline)
            if self.job._cancelled.wait(max(0.0, until - now)) or until < end:
                self.check()
            if time.monotonic() >= end:
                return

    def on_cancel(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once if the job is cancelled or times out (at once, in this
        thread, if it already was). It runs on a completion thread, before ``on_done``;
        its exceptions are logged."""
        with self.job._executor._lock:
            if not self.job._cancelled.is_set():
                self.job._cancel_callbacks.append(callback)
                return
        _safely(f"cancel callback of job {self.job.id}", callback)

    def progress(self, text: str) -> None:
        """Report progress. ``job.progress`` changes at once; ``on_progress`` is called at
        most once per interval, always with the latest text: text held back is delivered
        (on a completion thread) when the interval is over, and before ``on_done`` at the
        latest."""
        self.job.progress = text
        with self._lock:
            if self._closed or self._on_progress is None:
                return
            self._pending = text
        self._deliver()

    def _expire_if_overdue(self) -> None:
        # Makes the timeout exact even when the timer thread runs late.
        deadline = self.job._deadline
        if deadline is not None and time.monotonic() >= deadline:
            self.job._executor._expire(self.job)

    def _deliver(self, force: bool = False) -> None:
        """Call ``on_progress`` with the pending text if the interval allows (or
        ``force``), else make sure it is delivered when the interval is over."""
        with self._deliver_lock:
            with self._lock:
                on_progress = self._on_progress
                if self._closed or self._pending is None or on_progress is None:
                    return
                wait = self._next_delivery - time.monotonic()
                if wait > 0 and not force:
                    if not self._flush_scheduled:
                        self._flush_scheduled = True
                        self.job._executor._later(wait, self._scheduled_flush)
                    return
                text, self._pending = self._pending, None
                self._next_delivery = time.monotonic() + self._interval
            _safely(f"progress callback of job {self.job.id}", on_progress, self.job, text)

    def _scheduled_flush(self) -> None:
        with self._lock:
            self._flush_scheduled = False
        self._deliver()

    def _close(self) -> None:
        """Deliver what is pending and stop: no progress is delivered after this."""
        self._deliver(force=True)
        with self._lock:
            self._closed = True
            self._on_progress = None


def _safely(what: str, fn: Callable[..., Any], *args: Any) -> None:
    """Call a callback; log its exception rather than raise it into the executor."""
    try:
        fn(*args)
    except Exception:
        log.exception("error in %s", what)


class _Timer:
    """One scheduled callback; :meth:`_Timers.cancel` drops the callback (and what it
    refers to) at once, the entry itself when the heap is next compacted or reached."""

    __slots__ = ("callback", "due", "seq")

    def __init__(self, due: float, seq: int, callback: Callable[[], Any]) -> None:
        self.due = due
        self.seq = seq
        self.callback: Callable[[], Any] | None = callback

    def __lt__(self, other: _Timer) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)


class _Timers:
    """One thread running callbacks at given times (timeouts, progress flushes). The
    callbacks must be quick: the executor's only hand the work to another thread."""

    COMPACT_AT = 64  # withdrawn entries tolerated in the heap before it is rebuilt

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[_Timer] = []
        self._withdrawn = 0
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def schedule(self, delay: float, callback: Callable[[], Any]) -> _Timer:
        timer = _Timer(time.monotonic() + delay, next(self._seq), callback)
        with self._cond:
            if self._stopped:
                timer.callback = None
                return timer
            heapq.heappush(self._heap, timer)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="opsroom-job-timers", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return timer

    def cancel(self, timer: _Timer) -> None:
        with self._cond:
            if timer.callback is None:
                return
            timer.callback = None
            self._withdrawn += 1
            if self._withdrawn > max(self.COMPACT_AT, len(self._heap) // 2):
                self._heap = [t for t in self._heap if t.callback is not None]
                heapq.heapify(self._heap)
                self._withdrawn = 0

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._withdrawn = 0
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._due():
                    self._cond.wait(self._heap[0].due - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                timer = heapq.heappop(self._heap)
                callback, timer.callback = timer.callback, None
                if callback is None:
                    self._withdrawn -= 1
                    continue
            _safely("a job timer", callback)
            del callback  # not kept alive while waiting for the next timer

    def _due(self) -> bool:
        return bool(self._heap) and self._heap[0].due <= time.monotonic()


class _CompletionPool:
    """Daemon threads, started as needed up to a bound, running the callbacks that must not
    run on the timer thread or in the thread that cancelled: cancel callbacks, ``on_done``
    of jobs that did not finish by themselves, progress held back by the interval."""

    def __init__(self, bound: int) -> None:
        self._bound = bound
        self._cond = threading.Condition()
        self._tasks: deque[Callable[[], Any]] = deque()
        self._threads = 0
        self._idle = 0
        self._stopped = False

    def run(self, task: Callable[[], Any]) -> None:
        with self._cond:
            self._tasks.append(task)
            if len(self._tasks) > self._idle and self._threads < self._bound:
                self._threads += 1
                threading.Thread(
                    target=self._loop, name=f"opsroom-job-completion-{self._threads}", daemon=True
                ).start()
            else:
                self._cond.notify()

    def stop(self) -> None:
        """Let the threads exit once the tasks already given are done."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._tasks and not self._stopped:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if not self._tasks:
                    self._threads -= 1
                    return
                task = self._tasks.popleft()
            _safely("a job completion", task)
            del task  # not kept alive while idle


class JobExecutor:
    """A bounded pool of worker threads running jobs, with per-target locks.

    ``max_workers`` (default 16) bounds how many jobs run at once; more wait, QUEUED, in
    submission order. Sixteen suits jobs that mostly wait on remote hosts, Kubernetes and
    Jenkins; the threads are started as needed and never exceed the bound. As many
    completion threads, also started as needed, run the callbacks of jobs that did not
    finish by themselves (see the module's documentation).
    ``progress_interval`` is the least time between two ``on_progress`` calls of one job.
    ``history`` finished jobs are kept for :meth:`jobs` and :meth:`get`.
    """

    def __init__(
        self,
        max_workers: int = DEFAULT_MAX_WORKERS,
        *,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if history < 0:
            raise ValueError("history cannot be negative")
        self.max_workers = max_workers
        self.progress_interval = progress_interval
        self._history = history
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # workers wait for _ready
        self._changed = threading.Condition(self._lock)  # shutdown waits for jobs to end
        self._jobs: dict[str, Job] = {}  # every job not yet dropped from history
        self._finished_ids: deque[str] = deque()  # the history, oldest first
        self._completing = 0  # jobs settled whose on_done has not returned yet
        self._ready: deque[Job] = deque()  # may run: target held (or none), waiting a worker
        self._holders: dict[str, Job] = {}  # target -> the job holding its lock
        self._waiting: dict[str, deque[Job]] = {}  # target -> jobs waiting for its lock
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._timers = _Timers()
        self._completions = _CompletionPool(max_workers)
        # Ids are a permutation of a counter (an odd multiplier is a bijection modulo
        # 16**5), so they are unique for a million jobs yet do not look sequential; the
        # random offset keeps them apart from a previous run's in the audit log.
        self._counter = itertools.count(secrets.randbelow(16**5))

    def submit(
        self,
        fn: Callable[[JobContext], Any],
        *,
        name: str,
        target: str | None = None,
        timeout: float | None = None,
        lock_policy: Literal["queue", "refuse"] = "queue",
        on_progress: Callable[[Job, str], Any] | None = None,
        on_done: Callable[[Job], Any] | None = None,
        on_forget: Callable[[Job], Any] | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Queue ``fn(ctx)`` to run as a job and return the job at once.

        ``job_id`` is one given out before by :meth:`reserve_id` (so that records written
        before the job exists can name it); by default a new one.

        ``timeout`` counts from the start of the run, not from submission. With a
        ``target`` the job waits until no other job holds that target, or, with
        ``lock_policy="refuse"``, :class:`TargetBusy` is raised.

        ``on_progress(job, text)`` runs in the job's thread or on a completion thread.
        ``on_done(job)`` runs exactly once, after the final status is set: on the job's
        worker thread when its function returned, else on a completion thread; either
        may be slow (write to disk, wait for chat) without delaying other jobs' timeouts.
        ``on_forget(job)`` runs once the finished job has left the history (after its
        ``on_done``, when ``history`` newer jobs have finished; ``get`` then returns None):
        drop what you keep per job there. It runs in the thread finishing the newer job
        and must be quick.
        """
        with self._lock:
            if self._closed:
                raise ExecutorClosed("the job executor is shut down")
            if target is not None and lock_policy == "refuse" and target in self._holders:
                raise TargetBusy(target, self._holders[target].id)
            if job_id is not None and job_id in self._jobs:
                raise ValueError(f"job id {job_id} is already in use")
            job = Job(
                self,
                job_id or self._new_id(),
                fn,
                name,
                target,
                timeout,
                on_progress,
                on_done,
                on_forget,
            )
            self._jobs[job.id] = job
            if target is None:
                self._make_ready(job)
            elif target in self._holders:
                self._waiting.setdefault(target, deque()).append(job)
            else:
                self._holders[target] = job
                self._make_ready(job)
        log.debug("job %s %r queued (target %s)", job.id, name, target)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None once it has left the history; ``7f3a2``,
        ``j-7f3a2`` and ``J-7F3A2`` all name it."""
        key = job_id.strip().upper()
        if not key.startswith("J-"):
            key = "J-" + key
        with self._lock:
            return self._jobs.get(key)

    def jobs(self, active_only: bool = True) -> list[Job]:
        """Jobs in submission order: queued and running ones, or with ``active_only=False``
        also the finished ones still in history."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [j for j in jobs if not j.status.finished] if active_only else jobs

    def shutdown(self, wait: float = 15.0) -> list[Job]:
        """Stop: refuse new jobs, cancel queued ones, give running ones ``wait`` seconds to
        finish, then cancel them. Returns the jobs that were still running then, once the
        ``on_done`` callbacks of the jobs it cancelled have run (the audit records of what
        it cancelled are then written), or after ``wait`` more seconds
        (:data:`COMPLETION_GRACE` at least) if one is stuck.

        Worker threads are daemons: one whose function ignores cancellation does not keep
        the process alive.
        """
        with self._lock:
            self._closed = True
            queued = [j for j in self._jobs.values() if j.status is JobStatus.QUEUED]
        for job in queued:
            self._cancel(job, JobStatus.CANCELLED, "shutdown")
        deadline = time.monotonic() + wait
        with self._lock:
            while (left := deadline - time.monotonic()) > 0 and self._running():
                self._changed.wait(left)
            still_running = self._running()
        for job in still_running:
            self._cancel(job, JobStatus.CANCELLED, "shutdown")
        deadline = time.monotonic() + max(wait, COMPLETION_GRACE)
        with self._lock:
            while (left := deadline - time.monotonic()) > 0 and self._completing:
                self._changed.wait(left)
            self._work.notify_all()  # idle workers see _closed and exit
        self._timers.stop()
        self._completions.stop()
        return still_running

    def reserve_id(self) -> str:
        """A job id for a job to be submitted later (with ``job_id=``): ids never repeat
        within a process, so it cannot collide with another job's."""
        with self._lock:
            return self._new_id()

    # Everything below runs with self._lock held unless it says otherwise.

    def _new_id(self) -> str:
        while True:
            job_id = f"J-{next(self._counter) * 0x9E3B5 % 16**5:05X}"
            if job_id not in self._jobs:
                return job_id

    def _running(self) -> list[Job]:
        return [j for j in self._jobs.values() if j.status is JobStatus.RUNNING]

    def _make_ready(self, job: Job) -> None:
        self._ready.append(job)
        if len(self._ready) > self._idle and len(self._threads) < self.max_workers:
            thread = threading.Thread(
                target=self._worker, name=f"opsroom-job-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        else:
            self._work.notify()

    def _release_target(self, job: Job) -> None:
        """Hand the job's target to the next job waiting for it."""
        if job.target is None or self._holders.get(job.target) is not job:
            return
        waiting = self._waiting.get(job.target)
        if waiting:
            nxt = waiting.popleft()
            if not waiting:
                del self._waiting[job.target]
            self._holders[job.target] = nxt
            self._make_ready(nxt)
        else:
            del self._holders[job.target]

    def _queue_position(self, job: Job) -> int | None:
        with self._lock:
            if job.status is not JobStatus.QUEUED:
                return None
            waiting = self._waiting.get(job.target or "", ())
            queue = waiting if job in waiting else self._ready
            return list(queue).index(job) + 1

    def _settle(
        self, job: Job, status: JobStatus, *, result: Any = None, error: str = "", by: str = ""
    ) -> bool:
        """Give a job its final status, once. False if it already had one."""
        if job.status.finished:
            return False
        if job.status is JobStatus.QUEUED:
            if job in self._ready:
                self._ready.remove(job)
                self._release_target(job)
            elif job.target in self._waiting:
                self._waiting[job.target].remove(job)
                if not self._waiting[job.target]:
                    del self._waiting[job.target]
        job.status = status
        job.finished_at = datetime.now(UTC)
        job.result = result
        job.error = error
        job.cancelled_by = by
        job._fn = None  # a running job's worker holds its own reference
        if job._timer is not None:
            self._timers.cancel(job._timer)
            job._timer = None
        self._completing += 1
        self._changed.notify_all()
        return True

    # The methods below take the lock themselves and call back outside it.

    def _later(self, delay: float, task: Callable[[], Any]) -> None:
        """Run ``task`` on a completion thread in ``delay`` seconds."""
        self._timers.schedule(delay, partial(self._completions.run, task))

    def _cancel(self, job: Job, status: JobStatus, by: str) -> bool:
        if status is JobStatus.TIMED_OUT:
            error = f"timed out after {job.timeout:g} s"
        else:
            error = f"cancelled by {by}" if by else "cancelled"
        with self._lock:
            if not self._settle(job, status, error=error, by=by):
                return False
            job._cancelled.set()
            callbacks, job._cancel_callbacks = job._cancel_callbacks, []
        log.info("job %s %s", job.id, error)
        self._completions.run(partial(self._complete, job, callbacks))
        return True

    def _expire(self, job: Job) -> None:
        if not job.status.finished:
            self._cancel(job, JobStatus.TIMED_OUT, "")

    def _complete(self, job: Job, cancel_callbacks: list[Callable[[], Any]]) -> None:
        """After the final status: cancel callbacks, pending progress, ``on_done``; then
        the job joins the history, pushing the oldest out."""
        for callback in cancel_callbacks:
            _safely(f"cancel callback of job {job.id}", callback)
        job.context._close()
        on_done, job._on_done = job._on_done, None
        if on_done is not None:
            _safely(f"on_done of job {job.id}", on_done, job)
        forgotten = []
        with self._lock:
            self._completing -= 1
            self._finished_ids.append(job.id)
            while len(self._finished_ids) > self._history:
                forgotten.append(self._jobs.pop(self._finished_ids.popleft()))
            self._changed.notify_all()
        for old in forgotten:
            on_forget, old._on_forget = old._on_forget, None
            if on_forget is not None:
                _safely(f"on_forget of job {old.id}", on_forget, old)
        job._finished.set()

    def _worker(self) -> None:
        while True:
            with self._lock:
                while not self._ready and not self._closed:
                    self._idle += 1
                    self._work.wait()
                    self._idle -= 1
                if not self._ready:
                    return
                job = self._ready.popleft()
                fn, job._fn = job._fn, None
                job.status = JobStatus.RUNNING
                job.started_at = datetime.now(UTC)
                if job.timeout is not None:
                    job._deadline = time.monotonic() + job.timeout
                    job._timer = self._timers.schedule(job.timeout, partial(self._expire, job))
            assert fn is not None  # a job is made ready once, and settled only after this
            self._run(job, fn)
            del job, fn  # not kept alive while idle

    def _run(self, job: Job, fn: Callable[[JobContext], Any]) -> None:
        """Run one job's function in this worker thread, then free its target."""
        log.debug("job %s %r started", job.id, job.name)
        outcome: tuple[JobStatus, Any, str]
        try:
            job.context.check()  # cancelled between leaving the queue and this line
            result = fn(job.context)
        except JobCancelled:
            outcome = (JobStatus.CANCELLED, None, "cancelled")  # raised by the job itself
        except ActionFailed as exc:  # an expected failure, reported as the action says
            log.info("job %s %r failed: %s", job.id, job.name, str(exc).splitlines()[0])
            outcome = (JobStatus.FAILED, None, str(exc))
        except BaseException as exc:  # a job must never take its worker thread down
            log.exception("job %s %r failed", job.id, job.name)
            outcome = (JobStatus.FAILED, None, f"{type(exc).__name__}: {exc}")
        else:
            outcome = (JobStatus.SUCCEEDED, result, "")
        with self._lock:
            settled = self._settle(job, outcome[0], result=outcome[1], error=outcome[2])
            job._cancel_callbacks = []
            self._release_target(job)
        if settled:
            log.info("job %s %s", job.id, job.status)
            self._complete(job, [])
