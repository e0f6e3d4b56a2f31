import re
import threading
import time

import pytest

from bot.runtime.jobs import (
    ExecutorClosed,
    JobContext,
    JobExecutor,
    JobStatus,
    TargetBusy,
)


@pytest.fixture
def executor():
    ex = JobExecutor(max_workers=4, progress_interval=0.2)
    yield ex
    ex.shutdown(wait=0)


def until(predicate, timeout=2.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.005)


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


def test_progress_is_throttled_and_the_latest_text_is_delivered(executor):
    seen = []

    def chatty(ctx: JobContext):
        end = time.monotonic() + 0.5
        i = 0
        while time.monotonic() < end:
            ctx.progress(f"step {i}")
            i += 1
            time.sleep(0.0005)
        ctx.progress("last step")
        return i

    job = executor.submit(chatty, name="chatty", on_progress=lambda j, text: seen.append(text))
    assert job.wait(3) is JobStatus.SUCCEEDED
    assert job.result > 100  # many progress calls...
    assert 2 <= len(seen) <= 5  # ...few deliveries, one per 0.2 s at most
    assert seen[-1] == "last step" == job.progress


def test_progress_held_back_is_delivered_when_the_interval_ends(executor):
    seen = []

    def slow(ctx: JobContext):
        ctx.progress("starting")
        ctx.progress("copying files")  # within the interval: held back
        ctx.wait(0.6)
        return time.monotonic()

    job = executor.submit(
        slow, name="slow", on_progress=lambda j, text: seen.append((text, time.monotonic()))
    )
    job.wait(3)
    assert [text for text, _ in seen] == ["starting", "copying files"]
    assert seen[1][1] < job.result  # delivered while the job was still running


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
    assert running.wait(2)
    assert job.cancel(by="alice") is True
    assert job.status is JobStatus.CANCELLED
    assert job.cancelled_by == "alice" and job.error == "cancelled by alice"
    assert fired == ["closed channel"]
    assert follower.wait(2) is JobStatus.SUCCEEDED  # the target was released
    assert job.cancel(by="bob") is False
    assert fired == ["closed channel"]
    assert rec.done == [(job.id, JobStatus.CANCELLED)]


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
    assert job.wait(3) is JobStatus.TIMED_OUT
    assert 0.25 < time.monotonic() - start < 1.5
    assert channel_closed.is_set()
    assert job.error == "timed out after 0.3 s" and job.result is None
    assert rec.done == [(job.id, JobStatus.TIMED_OUT)]


def test_ctx_wait_stops_at_the_timeout(executor):
    job = executor.submit(lambda ctx: ctx.wait(10), name="sleepy", timeout=0.2)
    start = time.monotonic()
    assert job.wait(3) is JobStatus.TIMED_OUT
    assert time.monotonic() - start < 1.0


def test_jobs_on_one_target_run_one_at_a_time_in_order(executor):
    order = []
    active = {"web1": 0}
    overlap = []
    lock = threading.Lock()

    def step(n):
        def run(ctx: JobContext):
            with lock:
                active["web1"] += 1
                overlap.append(active["web1"])
                order.append(n)
            ctx.wait(0.1)
            with lock:
                active["web1"] -= 1

        return run

    jobs = [executor.submit(step(n), name=f"deploy {n}", target="web1") for n in range(3)]
    other = executor.submit(lambda ctx: "parallel", name="other", target="web2")
    assert other.wait(1) is JobStatus.SUCCEEDED
    assert jobs[0].status is JobStatus.RUNNING  # web2 did not wait for web1
    assert [j.queue_position for j in jobs] == [None, 1, 2]
    assert [j.status for j in jobs[1:]] == [JobStatus.QUEUED] * 2
    for job in jobs:
        assert job.wait(2) is JobStatus.SUCCEEDED
    assert order == [0, 1, 2]
    assert max(overlap) == 1


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
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def work(ctx: JobContext):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        ctx.wait(0.15)
        with lock:
            state["now"] -= 1

    jobs = [executor.submit(work, name=f"w{i}") for i in range(10)]
    until(lambda: sum(j.status is JobStatus.RUNNING for j in jobs) == 4)
    assert sum(j.status is JobStatus.QUEUED for j in jobs) == 6
    assert [j.queue_position for j in jobs[4:]] == [1, 2, 3, 4, 5, 6]
    for job in jobs:
        assert job.wait(3) is JobStatus.SUCCEEDED
    assert state["max"] == 4
    assert threading.active_count() < 30  # no thread per job


def test_200_long_jobs_do_not_block_the_submitter_and_shutdown_cancels_them():
    ex = JobExecutor(max_workers=16)
    rec = Recorder()
    start = time.perf_counter()
    jobs = [
        ex.submit(lambda ctx: ctx.wait(60), name=f"long {i}", on_done=rec.on_done)
        for i in range(200)
    ]
    # A blocking submit would take 60 s (the jobs' length); a loaded 2-core CI machine
    # needs slack over the ~6 ms this takes when idle.
    assert time.perf_counter() - start < 1.0
    assert ex.jobs() == jobs
    until(lambda: sum(j.status is JobStatus.RUNNING for j in jobs) == 16)
    start = time.monotonic()
    still_running = ex.shutdown(wait=0.1)
    assert len(still_running) == 16
    assert all(j.wait(1) is JobStatus.CANCELLED for j in jobs)
    assert time.monotonic() - start < 1.0
    assert ex.jobs() == []
    assert len(rec.done) == 200 and len({job_id for job_id, _ in rec.done}) == 200
    with pytest.raises(ExecutorClosed):
        ex.submit(lambda ctx: None, name="late")


def test_shutdown_lets_running_jobs_finish_within_the_wait(executor):
    job = executor.submit(lambda ctx: ctx.wait(0.1) or "done", name="short")
    until(lambda: job.status is JobStatus.RUNNING)
    assert executor.shutdown(wait=2) == []
    assert job.status is JobStatus.SUCCEEDED and job.result == "done"


def test_on_done_fires_exactly_once_when_cancel_races_the_finish(executor):
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def count(job):
        with lock:
            counts[job.id] = counts.get(job.id, 0) + 1

    def finish_at(barrier):
        def run(ctx):
            barrier.wait()
            return "done"

        return run

    def cancel_at(barrier, job, results):
        barrier.wait()
        results.append(job.cancel(by="race"))

    for i in range(100):
        barrier = threading.Barrier(3)  # the job, a canceller thread and this thread
        job = executor.submit(finish_at(barrier), name=f"race {i}", on_done=count)
        results = []
        canceller = threading.Thread(target=cancel_at, args=(barrier, job, results))
        canceller.start()
        cancel_at(barrier, job, results)
        canceller.join()
        final = job.wait(2)
        assert final in (JobStatus.SUCCEEDED, JobStatus.CANCELLED)
        assert results.count(True) == (1 if final is JobStatus.CANCELLED else 0)
        assert job.result == ("done" if final is JobStatus.SUCCEEDED else None)
        with lock:
            assert counts[job.id] == 1
    assert len(counts) == 100 and set(counts.values()) == {1}


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
        job.wait(2)
    assert executor.jobs() == []
    assert len(executor.jobs(active_only=False)) == 300
