"""Outgoing REST calls: ordered per key, parallel across keys, retried until delivered.

Every post, edit, reaction and upload goes through the :class:`Outbox`. Work items that share
an *order key* (by default the channel) run one after another in submission order; items with
different keys run in parallel on a bounded pool of workers.

Delivery rules, so that nothing is dropped:

* HTTP 429: every worker pauses until the server's ``Retry-After`` / ``X-RateLimit-Reset``
  has passed (Mattermost rate-limits per token, so one 429 concerns all workers), then the
  same item is retried.
* HTTP 5xx, timeouts and connection errors: retried with the shared back-off
  (:mod:`bot.mattermost.backoff`), from 0.25 s up to ``max_backoff``.
  Posts carry a ``pending_post_id`` that Mattermost uses to de-duplicate, so a retry after a
  lost response cannot post twice.
* HTTP 401: the token is no longer valid; ``on_unauthorized`` is called and the item fails.
* Any other 4xx: the request can never succeed; it is logged and its future fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception

from bot.errors import ChatError
from bot.mattermost.backoff import wait_jittered_exponential
from bot.mattermost.rest import status_of

log = logging.getLogger(__name__)

Job = Callable[[], Any]

FIRST_RETRY_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 30.0
DEFAULT_RATE_LIMIT_PAUSE = 1.0


class OutboxClosed(ChatError):
    """The outbox no longer accepts work (the bot is shutting down)."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limited, server error, or no answer at all."""
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    status = status_of(exc)
    return status is not None and (status == 429 or status >= 500)


def rate_limit_delay(exc: BaseException) -> float | None:
    """Seconds to wait after a 429, from ``Retry-After`` or ``X-RateLimit-Reset``."""
    if status_of(exc) != 429:
        return None
    headers = exc.response.headers  # type: ignore[attr-defined]
    for name in ("Retry-After", "X-RateLimit-Reset"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        # X-RateLimit-Reset is seconds until reset in Mattermost, but some proxies send an
        # epoch timestamp: treat anything that far out as one.
        if seconds > 10**9:
            seconds = seconds - time.time()
        return max(seconds, 0.0)
    return DEFAULT_RATE_LIMIT_PAUSE


class Outbox:
    """Ordered, retried, parallel delivery of REST calls."""

    def __init__(
        self,
        workers: int = 8,
        on_unauthorized: Callable[[], None] | None = None,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        mutex = threading.Lock()
        self._lock = threading.Condition(mutex)  # workers wait on it for ready keys
        self._drained = threading.Condition(mutex)  # close() waits on it
        self._queues: dict[str, deque[tuple[Job, Future, str]]] = {}
        self._ready: deque[str] = deque()  # keys with work and no worker on them
        self._busy: set[str] = set()
        self._pending = 0
        self._closed = False
        self._stop = threading.Event()
        self._paused_until = 0.0
        self._on_unauthorized = on_unauthorized
        self._backoff = wait_jittered_exponential(FIRST_RETRY_SECONDS, max_backoff)
        self._threads = [
            threading.Thread(target=self._work, name=f"mattermost-outbox-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, key: str, job: Job, what: str = "request") -> Future:
        """Queue ``job`` behind earlier jobs with the same ``key``; returns its future."""
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise OutboxClosed("the bot is shutting down; nothing more can be sent")
            queue = self._queues.setdefault(key, deque())
            queue.append((job, future, what))
            self._pending += 1
            if key not in self._busy and len(queue) == 1:
                self._ready.append(key)
                self._lock.notify()
        return future

    @property
    def pending(self) -> int:
        """Items queued or in flight."""
        with self._lock:
            return self._pending

    def close(self, timeout: float = 10.0) -> bool:
        """Stop accepting work and wait up to ``timeout`` s for the queue to drain.

        Returns True when everything was delivered.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            while self._pending and time.monotonic() < deadline:
                self._drained.wait(deadline - time.monotonic())
            drained = self._pending == 0
        if not drained:
            log.error("shutting down with %d message(s) not yet delivered", self._pending)
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=2)
        return drained

    # --- workers ---------------------------------------------------------------------------
    def _next_key(self) -> str | None:
        with self._lock:
            while not self._ready and not self._stop.is_set():
                self._lock.wait()
            if self._stop.is_set():
                return None
            key = self._ready.popleft()
            self._busy.add(key)
            return key

    def _work(self) -> None:
        while (key := self._next_key()) is not None:
            with self._lock:
                job, future, what = self._queues[key][0]
            if future.set_running_or_notify_cancel():
                self._run(job, future, what)
            with self._lock:
                queue = self._queues[key]
                queue.popleft()
                self._pending -= 1
                self._busy.discard(key)
                if queue:
                    self._ready.append(key)
                    self._lock.notify()
                else:
                    del self._queues[key]
                if not self._pending:
                    self._drained.notify_all()

    def _run(self, job: Job, future: Future, what: str) -> None:
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=self._wait,
            stop=lambda _state: self._stop.is_set(),
            sleep=self._sleep,
            before_sleep=lambda state: log.warning(
                "%s failed (%s); retry %d in %.1fs",
                what,
                state.outcome.exception() if state.outcome else "?",
                state.attempt_number,
                state.next_action.sleep if state.next_action else 0,
            ),
            reraise=True,
        )
        try:
            future.set_result(retrying(self._paused(job)))
        except Exception as exc:  # delivered to the future; logged here once
            if status_of(exc) == 401 and self._on_unauthorized:
                self._on_unauthorized()
            log.error("%s not delivered: %s", what, exc)
            future.set_exception(exc)

    def _paused(self, job: Job) -> Job:
        """Wrap ``job`` so that it first waits out any rate-limit pause."""

        def run() -> Any:
            while (delay := self._paused_until - time.monotonic()) > 0:
                if self._stop.wait(delay):
                    break
            return job()

        return run

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        limited = rate_limit_delay(exc) if exc else None
        if limited is not None:
            with self._lock:
                self._paused_until = max(self._paused_until, time.monotonic() + limited)
            return 0.0  # the wrapped job waits for the shared pause itself
        return self._backoff(state)

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)
