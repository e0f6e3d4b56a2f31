import threading
import time
from types import SimpleNamespace

import pytest
import requests

from bot.mattermost import outbox as outbox_module
from bot.mattermost.outbox import Outbox, OutboxClosed, rate_limit_delay


def http_error(status, **headers):
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    return requests.HTTPError(f"{status}", response=response)


class Flaky:
    """A job that fails with the given errors, then returns its value."""

    def __init__(self, value, *errors):
        self.value, self.errors, self.calls = value, list(errors), []

    def __call__(self):
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        return self.value


@pytest.fixture
def outbox():
    box = Outbox(workers=4, max_backoff=0.05)
    yield box
    box.close(timeout=5)


def test_rate_limit_pauses_then_delivers_once(outbox):
    job = Flaky("ok", http_error(429, **{"Retry-After": "0.3"}))
    assert outbox.submit("k", job).result(5) == "ok"
    assert len(job.calls) == 2
    assert job.calls[1] - job.calls[0] >= 0.3


def test_rate_limit_pause_holds_every_worker(outbox, caplog):
    limited = Flaky("a", http_error(429, **{"X-RateLimit-Reset": "0.4"}))
    other_calls = []
    started = time.monotonic()
    first = outbox.submit("k1", limited)
    # The retry is announced once the pause is set: submit the other job only then.
    deadline = time.monotonic() + 5
    while not any("retry 1" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the 429 was never retried"
        time.sleep(0.01)
    second = outbox.submit("k2", lambda: other_calls.append(time.monotonic()) or "b")
    assert first.result(5) == "a" and second.result(5) == "b"
    assert other_calls[0] - started >= 0.399  # the whole 0.4 s pause (float rounding aside)


def test_server_errors_and_network_errors_are_retried(outbox):
    job = Flaky("ok", http_error(502), http_error(503), requests.ConnectionError("reset"))
    assert outbox.submit("k", job).result(5) == "ok"
    assert len(job.calls) == 4


def test_client_errors_fail_without_retry(outbox):
    job = Flaky("never", http_error(400))
    with pytest.raises(requests.HTTPError):
        outbox.submit("k", job).result(5)
    assert len(job.calls) == 1


def test_unauthorized_is_reported():
    seen = threading.Event()
    box = Outbox(workers=1, on_unauthorized=seen.set)
    with pytest.raises(requests.HTTPError):
        box.submit("k", Flaky("x", http_error(401))).result(5)
    assert seen.is_set()
    box.close()


def test_same_key_keeps_order_while_other_keys_run_in_parallel(outbox):
    order = []
    gate = threading.Event()

    def slow_first():
        gate.wait(2)
        order.append("k1-a")

    futures = [
        outbox.submit("k1", slow_first),
        outbox.submit("k1", lambda: order.append("k1-b")),
        outbox.submit("k2", lambda: order.append("k2")),
    ]
    futures[2].result(2)
    assert order == ["k2"]  # k2 was not stuck behind k1
    gate.set()
    for f in futures:
        f.result(2)
    assert order == ["k2", "k1-a", "k1-b"]


def test_many_threads_submitting_lose_nothing(outbox):
    results = []
    lock = threading.Lock()

    def submitter(n):
        for i in range(50):
            key = f"k{i % 7}"
            outbox.submit(
                key, lambda n=n, i=i: (lock.acquire(), results.append((n, i)), lock.release())
            )

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5
    while outbox.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(results) == [(n, i) for n in range(20) for i in range(50)]


def test_close_drains_and_then_refuses():
    box = Outbox(workers=2)
    done = []
    for i in range(20):
        box.submit(f"k{i % 3}", lambda i=i: (time.sleep(0.01), done.append(i)))
    assert box.close(timeout=5) is True
    assert sorted(done) == list(range(20))
    with pytest.raises(OutboxClosed):
        box.submit("k", lambda: None)


def test_rate_limit_delay_reads_headers(monkeypatch):
    assert rate_limit_delay(http_error(429, **{"Retry-After": "2"})) == 2
    assert rate_limit_delay(http_error(429, **{"X-RateLimit-Reset": "3"})) == 3
    assert rate_limit_delay(http_error(429)) == 1.0
    assert rate_limit_delay(http_error(503)) is None
    now = 1_800_000_000.25
    monkeypatch.setattr(outbox_module, "time", SimpleNamespace(time=lambda: now))
    epoch = str(int(now) + 4)  # a proxy's epoch timestamp: 3.75 s from now
    assert rate_limit_delay(http_error(429, **{"X-RateLimit-Reset": epoch})) == 3.75
