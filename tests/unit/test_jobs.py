import gc
import re
import threading
import time
import weakref

import pytest

from bot.runtime.jobs import (
    ExecutorClosed,
    JobContext,
    JobExecutor,
    JobStatus,
    TargetBusy,
    _Timers,
)


@pytest.fixture
def executor():
    ex = JobExecutor(max_workers=4, progress_interval=0.2)
    yield ex
    ex.shutdown(wait=0)


def until(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.005)


def stuck_until_cancelled(ctx: JobContext):
    """Like a connector call that only returns when its channel is closed: no polling."""
    closed = threading.Event()
    ctx.on_cancel(closed.set)
    closed.wait(60)


class Recorder:
    """Collects on_done calls, thread-safely."""

    def __init__(self):
        self.lock = threading.Lock()
        self.done = []

    def on_done(self, job):
        with self.lock:
            self.done.append((job.id, job.status))


def test_success_and_failure_results(executor):
    rec = Recorder()
    ok = executor.submit(lambda ctx: 42, name="answer", on_done=rec.on_done)
    bad = executor.submit(lambda ctx: 1 / 0, name="divide", on_done=rec.on_done)
    assert ok.wait(2) is JobStatus.SUCCEEDED
    assert bad.wait(2) is JobStatus.FAILED
    assert ok.result == 42 and ok.error == ""
    assert bad.result is None and bad.error == "ZeroDivisionError: division by zero"
    assert ok.created_at <= ok.started_at <= ok.finished_at
    assert sorted(rec.done) == sorted([(ok.id, JobStatus.SUCCEEDED), (bad.id, JobStatus.FAILED)])


def test_a_failing_callback_does_not_break_the_job(executor):
    def broken(job):
        raise RuntimeError("audit down")

    job = executor.submit(lambda ctx: "ok", name="x", on_done=broken)
    assert job.wait(2) is JobStatus.SUCCEEDED
    assert executor.submit(lambda ctx: 1, name="next").wait(2) is JobStatus.SUCCEEDED


def test_progress_is_throttled_and_the_latest_text_is_delivered():
    executor = JobExecutor(progress_interval=3600)  # no interval ends during the test
    seen = []

    def chatty(ctx: JobContext):
        for i in range(1000):
            ctx.progress(f"step {i}")
        ctx.progress("last step")

    job = executor.submit(chatty, name="chatty", on_progress=lambda j, text: seen.append(text))
    assert job.wait(10) is JobStatus.SUCCEEDED
    # the first at once, the rest held back; the latest delivered before on_done
    assert seen == ["step 0", "last step"] and job.progress == "last step"
    executor.shutdown(wait=0)


def test_progress_held_back_is_delivered_when_the_interval_ends():
    executor = JobExecutor(progress_interval=0.05)
    seen = []
    delivered = threading.Event()

    def on_progress(job, text):
        seen.append(text)
        if text == "copying files":
            delivered.set()

    def slow(ctx: JobContext):
        ctx.progress("starting")
        ctx.progress("copying files")  # within the interval: held back
        return delivered.wait(10)  # delivered while the job still runs

    job = executor.submit(slow, name="slow", on_progress=on_progress)
    assert job.wait(20) is JobStatus.SUCCEEDED and job.result is True
    assert seen == ["starting", "copying files"]
    executor.shutdown(wait=0)


def test_cancel_running_job_fires_callbacks_and_frees_the_target(executor):
    rec = Recorder()
    fired = []
    running = threading.Event()

    def long(ctx: JobContext):
        ctx.on_cancel(lambda: fired.append("closed channel"))
        running.set()
        ctx.wait(30)

    job = executor.submit(long, name="long", target="web1", on_done=rec.on_done)
    follower = executor.submit(lambda ctx: "ran", name="next", target="web1")
    assert running.wait(10)
    assert job.cancel(by="alice") is True
    assert job.status is JobStatus.CANCELLED  # decided at once
    assert job.cancelled_by == "alice" and job.error == "cancelled by alice"
    assert job.wait(10) is JobStatus.CANCELLED
    assert fired == ["closed channel"]
    assert follower.wait(10) is JobStatus.SUCCEEDED  # the target was released
    assert job.cancel(by="bob") is False
    assert fired == ["closed channel"]
    assert rec.done == [(job.id, JobStatus.CANCELLED)]


def test_cancel_returns_at_once_while_a_slow_on_done_runs(executor):
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def slow_ack(job):  # e.g. an audit write and a chat edit waiting for its acknowledgement
        entered.set()
        release.wait(30)
        returned.set()

    job = executor.submit(stuck_until_cancelled, name="stuck", on_done=slow_ack)
    until(lambda: job.status is JobStatus.RUNNING)
    try:
        assert job.cancel(by="alice") is True
        assert not returned.is_set()  # the canceller did not wait for on_done
        assert entered.wait(10)
    finally:
        release.set()
    assert job.wait(10) is JobStatus.CANCELLED and returned.is_set()


def test_cancel_callback_registered_after_cancel_runs_at_once(executor):
    fired = []
    gate = threading.Event()

    def late(ctx: JobContext):
        gate.wait(2)
        ctx.on_cancel(lambda: fired.append(1))

    job = executor.submit(late, name="late")
    until(lambda: job.status is JobStatus.RUNNING)
    job.cancel()
    gate.set()
    until(lambda: fired == [1])


def test_a_slow_on_done_does_not_delay_other_jobs_timeouts(executor):
    entered, release = threading.Event(), threading.Event()

    def slow_ack(job):  # an audit write, then waiting for the chat acknowledgement
        entered.set()
        release.wait(30)

    first = executor.submit(stuck_until_cancelled, name="first", timeout=0.01, on_done=slow_ack)
    try:
        assert entered.wait(10)  # the first job timed out; its on_done now blocks
        second = executor.submit(stuck_until_cancelled, name="second", timeout=0.01)
        # The second job never checks for cancellation itself: only the timeout watchdog
        # can end it, and it must not be stuck behind the first job's on_done.
        assert second.wait(10) is JobStatus.TIMED_OUT
        assert second.error == "timed out after 0.01 s"
        assert first.status is JobStatus.TIMED_OUT
    finally:
        release.set()
    assert first.wait(10) is JobStatus.TIMED_OUT


def test_a_slow_progress_delivery_does_not_delay_other_jobs_timeouts():
    executor = JobExecutor(max_workers=4, progress_interval=0.01)
    entered, release = threading.Event(), threading.Event()

    def slow_edit(job, text):  # the second delivery is held back, then blocks
        if text == "second":
            entered.set()
            release.wait(30)

    def chatty(ctx: JobContext):
        ctx.progress("first")
        ctx.progress("second")
        release.wait(30)

    chatty_job = executor.submit(chatty, name="chatty", on_progress=slow_edit)
    try:
        assert entered.wait(10)
        other = executor.submit(stuck_until_cancelled, name="other", timeout=0.01)
        assert other.wait(10) is JobStatus.TIMED_OUT
    finally:
        release.set()
    assert chatty_job.wait(10) is JobStatus.SUCCEEDED
    executor.shutdown(wait=0)


def test_on_done_runs_at_once_when_a_timed_out_job_ignores_cancellation(executor):
    unstick = threading.Event()
    threads = []
    job = executor.submit(
        lambda ctx: unstick.wait(30),
        name="deaf",
        timeout=0.01,
        on_done=lambda job: threads.append(threading.current_thread().name),
    )
    try:
        assert job.wait(10) is JobStatus.TIMED_OUT  # while its function is still stuck
        assert not unstick.is_set()
        # not on the timer thread, where it would hold up every other job's timeout
        assert len(threads) == 1 and threads[0] != "opsroom-job-timers"
    finally:
        unstick.set()


def test_cancelled_queued_job_never_starts(executor):
    rec = Recorder()
    ran = []
    gate = threading.Event()
    first = executor.submit(lambda ctx: gate.wait(5), name="first", target="db")
    second = executor.submit(lambda ctx: ran.append(1), name="second", target="db")
    assert second.status is JobStatus.QUEUED and second.queue_position == 1
    assert second.cancel(by="carol") is True
    assert second.status is JobStatus.CANCELLED and second.started_at is None
    gate.set()
    assert first.wait(2) is JobStatus.SUCCEEDED
    third = executor.submit(lambda ctx: "free", name="third", target="db", on_done=rec.on_done)
    assert third.wait(2) is JobStatus.SUCCEEDED
    assert ran == []


def test_timeout_cancels_a_blocked_job_through_its_callback(executor):
    rec = Recorder()
    channel_closed = threading.Event()

    def blocked(ctx: JobContext):
        # A connector call that only returns when its channel is closed.
        ctx.on_cancel(channel_closed.set)
        channel_closed.wait(10)
        return "too late"

    start = time.monotonic()
    job = executor.submit(blocked, name="blocked", timeout=0.3, on_done=rec.on_done)
    assert job.wait(10) is JobStatus.TIMED_OUT
    assert time.monotonic() - start >= 0.3  # not before its time
    assert channel_closed.is_set()
    assert job.error == "timed out after 0.3 s" and job.result is None
    assert rec.done == [(job.id, JobStatus.TIMED_OUT)]


def test_ctx_wait_stops_at_the_timeout(executor):
    job = executor.submit(lambda ctx: ctx.wait(3600), name="sleepy", target="db", timeout=0.05)
    follower = executor.submit(lambda ctx: "ran", name="next", target="db")
    assert job.wait(10) is JobStatus.TIMED_OUT
    # the target is released only when the function returns: ctx.wait raised
    assert follower.wait(10) is JobStatus.SUCCEEDED


def test_jobs_on_one_target_run_one_at_a_time_in_order(executor):
    order = []
    gates = [threading.Event() for _ in range(3)]

    def step(n):
        def run(ctx: JobContext):
            order.append(n)
            gates[n].wait(30)

        return run

    jobs = [executor.submit(step(n), name=f"deploy {n}", target="web1") for n in range(3)]
    other = executor.submit(lambda ctx: "parallel", name="other", target="web2")
    assert other.wait(10) is JobStatus.SUCCEEDED  # web2 did not wait for web1
    until(lambda: order == [0])
    assert [j.status for j in jobs] == [JobStatus.RUNNING, JobStatus.QUEUED, JobStatus.QUEUED]
    assert [j.queue_position for j in jobs] == [None, 1, 2]
    for n, job in enumerate(jobs):
        assert order == list(range(n + 1))  # the next starts only once this one ended
        gates[n].set()
        assert job.wait(10) is JobStatus.SUCCEEDED
        if n < 2:
            until(lambda n=n: len(order) == n + 2)
    assert order == [0, 1, 2]


def test_refuse_policy_names_the_target_and_the_running_job(executor):
    gate = threading.Event()
    first = executor.submit(lambda ctx: gate.wait(5), name="restart", target="web1")
    with pytest.raises(TargetBusy) as err:
        executor.submit(lambda ctx: None, name="again", target="web1", lock_policy="refuse")
    assert err.value.target == "web1" and err.value.running_job_id == first.id
    assert str(err.value) == (
        f"web1 is busy: job {first.id} is working on it; wait for it to finish or cancel it"
    )
    assert executor.jobs() == [first]
    gate.set()
    first.wait(2)
    job = executor.submit(lambda ctx: 1, name="now", target="web1", lock_policy="refuse")
    assert job.wait(2) is JobStatus.SUCCEEDED


def test_pool_is_bounded(executor):
    before = set(threading.enumerate())
    gate = threading.Event()
    jobs = [executor.submit(lambda ctx: gate.wait(30), name=f"w{i}") for i in range(10)]
    until(lambda: sum(j.status is JobStatus.RUNNING for j in jobs) == 4)
    # the four workers are blocked: nothing else can start
    assert [j.status for j in jobs[4:]] == [JobStatus.QUEUED] * 6
    assert [j.queue_position for j in jobs[4:]] == [1, 2, 3, 4, 5, 6]
    gate.set()
    for job in jobs:
        assert job.wait(10) is JobStatus.SUCCEEDED
    workers = [
        t for t in set(threading.enumerate()) - before if re.fullmatch(r"opsroom-job-\d+", t.name)
    ]
    assert len(workers) == 4  # no thread per job


def test_200_long_jobs_do_not_block_the_submitter_and_shutdown_cancels_them():
    ex = JobExecutor(max_workers=16)
    rec = Recorder()
    jobs = [
        ex.submit(lambda ctx: ctx.wait(3600), name=f"long {i}", on_done=rec.on_done)
        for i in range(200)
    ]
    # A blocking submit would have returned only after a job's hour
    assert not any(j.status.finished for j in jobs)
    assert ex.jobs() == jobs
    until(lambda: sum(j.status is JobStatus.RUNNING for j in jobs) == 16)
    still_running = ex.shutdown(wait=0.1)
    assert len(still_running) == 16
    assert all(j.wait(10) is JobStatus.CANCELLED for j in jobs)
    assert ex.jobs() == []
    assert len(rec.done) == 200 and len({job_id for job_id, _ in rec.done}) == 200
    with pytest.raises(ExecutorClosed):
        ex.submit(lambda ctx: None, name="late")


def test_shutdown_lets_running_jobs_finish_within_the_wait(executor):
    gate = threading.Event()
    job = executor.submit(lambda ctx: gate.wait(30) and "done", name="short")
    until(lambda: job.status is JobStatus.RUNNING)
    result = []
    stopper = threading.Thread(target=lambda: result.append(executor.shutdown(wait=30)))
    stopper.start()
    gate.set()
    stopper.join(30)
    assert result == [[]]
    assert job.status is JobStatus.SUCCEEDED and job.result == "done"


def test_shutdown_waits_for_the_on_done_of_the_jobs_it_cancels():
    ex = JobExecutor(max_workers=2)
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    channel_closed = threading.Event()

    def holder(ctx: JobContext):  # holds the target, so that the next job is queued
        ctx.on_cancel(channel_closed.set)
        channel_closed.wait(30)

    def audit_write(job):
        entered.set()
        release.wait(30)
        returned.set()

    running = ex.submit(holder, name="running", target="t")
    until(lambda: running.status is JobStatus.RUNNING)
    queued = ex.submit(lambda ctx: None, name="queued", target="t", on_done=audit_write)
    seen_on_return = []
    stopper = threading.Thread(
        target=lambda: seen_on_return.append((ex.shutdown(wait=0), returned.is_set()))
    )
    stopper.start()
    assert entered.wait(10)  # shutdown cancelled the queued job; its on_done is running
    assert channel_closed.wait(10)  # and then the running one: it has nothing left to do
    release.set()
    stopper.join(30)
    # the audit records of what shutdown cancelled are written before it returns
    assert seen_on_return == [([running], True)]
    assert queued.status is JobStatus.CANCELLED and queued.cancelled_by == "shutdown"


def test_job_ids_are_short_unique_and_found_however_typed(executor):
    jobs = [executor.submit(lambda ctx: None, name=f"n{i}") for i in range(300)]
    ids = [j.id for j in jobs]
    assert len(set(ids)) == 300
    assert all(re.fullmatch(r"J-[0-9A-F]{5}", job_id) for job_id in ids)
    job = jobs[7]
    assert executor.get(job.id) is job
    assert executor.get(job.id.lower()) is job
    assert executor.get(" " + job.id[2:].lower()) is job
    assert executor.get("J-XXXXX") is None
    for job in jobs:
        job.wait(10)
    assert executor.jobs() == []
    assert len(executor.jobs(active_only=False)) == 300


def test_history_is_bounded_and_on_forget_tells_when_a_job_left_it():
    ex = JobExecutor(max_workers=1, history=2)  # one worker: jobs finish in order
    events = []
    jobs = [
        ex.submit(
            lambda ctx: None,
            name=f"j{i}",
            on_done=lambda job: events.append(("done", job.id)),
            on_forget=lambda job: events.append(("forgotten", job.id)),
        )
        for i in range(5)
    ]
    for job in jobs:
        assert job.wait(10) is JobStatus.SUCCEEDED
    assert ex.jobs(active_only=False) == jobs[3:]
    assert ex.get(jobs[0].id) is None and ex.get(jobs[4].id) is jobs[4]
    assert [e for e in events if e[0] == "forgotten"] == [("forgotten", j.id) for j in jobs[:3]]
    for job in jobs[:3]:  # never before its own on_done
        assert events.index(("done", job.id)) < events.index(("forgotten", job.id))
    ex.shutdown(wait=0)


class Payload:
    """Stands for what a job's closures hold: a plugin, a run, a chat handle."""


def test_a_finished_job_in_history_holds_neither_its_function_nor_its_callbacks():
    ex = JobExecutor(max_workers=2)
    payload = Payload()
    held = weakref.ref(payload)
    gate = threading.Event()

    def fn(ctx, payload=payload):
        ctx.on_cancel(lambda: payload)
        ctx.progress("working")
        return "ok"

    def callbacks(payload=payload):
        return {
            "on_progress": lambda job, text: payload,
            "on_done": lambda job: payload,
        }  # not on_forget: it is kept, by design, until the job leaves the history

    blocker = ex.submit(lambda ctx: gate.wait(30), name="blocker", target="t")
    done = ex.submit(fn, name="done", timeout=3600, **callbacks())
    cancelled = ex.submit(fn, name="cancelled", target="t", timeout=3600, **callbacks())
    del fn, callbacks, payload
    assert done.wait(10) is JobStatus.SUCCEEDED
    assert cancelled.cancel() and cancelled.wait(10) is JobStatus.CANCELLED
    gate.set()
    assert blocker.wait(10) is JobStatus.SUCCEEDED
    gc.collect()
    assert held() is None
    assert ex.jobs(active_only=False) == [blocker, done, cancelled]  # still listed
    ex.shutdown(wait=0)


def test_a_job_that_left_the_history_is_freed_though_its_timeout_was_far_ahead():
    ex = JobExecutor(max_workers=1, history=1)
    old = ex.submit(lambda ctx: None, name="old", timeout=3600)
    assert old.wait(10) is JobStatus.SUCCEEDED
    assert ex.submit(lambda ctx: None, name="new").wait(10) is JobStatus.SUCCEEDED
    gone = weakref.ref(old)
    del old
    gc.collect()
    assert gone() is None
    ex.shutdown(wait=0)


def test_withdrawn_timers_do_not_pile_up():
    timers = _Timers()
    handles = [timers.schedule(3600, lambda: None) for _ in range(1000)]
    for handle in handles:
        timers.cancel(handle)
    assert len(timers._heap) <= _Timers.COMPACT_AT
    timers.stop()
