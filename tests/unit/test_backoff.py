"""The one back-off: for tenacity's Retrying, for the reconnect loop, and in the outbox."""

import itertools
import random
import time

import pytest
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from bot.mattermost.backoff import Backoff, wait_jittered_exponential
from bot.mattermost.outbox import Outbox

CEILINGS = [1, 2, 4, 8, 8, 8]  # base 1 s, cap 8 s


def within_upper_half(delays, ceilings):
    return all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_backoff_grows_with_jitter_and_is_capped():
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    assert within_upper_half(delays, CEILINGS)
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def server_down():
    raise OSError("down")


def test_retrying_waits_the_same_way():
    slept = []
    retrying = Retrying(
        wait=wait_jittered_exponential(1.0, 8.0, random.Random(2)),
        retry=retry_if_exception_type(OSError),
        stop=stop_after_attempt(7),
        sleep=slept.append,
        reraise=True,
    )
    with pytest.raises(OSError):
        retrying(server_down)
    assert within_upper_half(slept, CEILINGS)


def test_outbox_retries_are_spaced_by_the_back_off():
    calls = []

    def job():
        calls.append(time.monotonic())
        if len(calls) < 4:
            response = requests.Response()
            response.status_code = 503
            raise requests.HTTPError("503", response=response)
        return "ok"

    box = Outbox(workers=1, max_backoff=0.2)  # steps 0.2 s (0.25 s capped): waits >= 0.1 s
    try:
        assert box.submit("k", job).result(5) == "ok"
    finally:
        box.close()
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(calls))
