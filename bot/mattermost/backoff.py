"""The one back-off for everything that waits before trying Mattermost again.

Waits grow exponentially from ``base`` (doubling per attempt) up to ``cap``, and each wait is
drawn at random from the upper half of its step: many clients retrying at once spread out
(jitter), yet none comes back sooner than half a step, so a failing server is not hammered.

Built on tenacity: :class:`wait_jittered_exponential` is a tenacity wait strategy for
``Retrying`` (log-in at start-up, the outbox's retries); :class:`Backoff` gives the same waits
to a loop that is not one call being retried (the websocket's reconnect loop, which starts
over once a connection has stayed up).
"""

from __future__ import annotations

import random

from tenacity import RetryCallState, Retrying, wait_exponential


class wait_jittered_exponential(wait_exponential):  # tenacity's naming
    """``base * 2**(attempt - 1)`` capped at ``cap``, drawn from its upper half."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        super().__init__(multiplier=base, max=cap)
        self._rng = rng or random.Random()

    def __call__(self, retry_state: RetryCallState) -> float:
        ceiling = super().__call__(retry_state)
        return self._rng.uniform(ceiling / 2, ceiling)


class Backoff:
    """The same waits for a loop of attempts: ``next_delay`` after each failure."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self._retrying = Retrying(wait=wait_jittered_exponential(base, cap, rng))
        self._state = RetryCallState(self._retrying, None, (), {})
        self.attempts = 0

    def next_delay(self) -> float:
        self.attempts += 1
        self._state.attempt_number = self.attempts
        return self._retrying.wait(self._state)

    def reset(self) -> None:
        """Start again from ``base`` (after a connection stayed up)."""
        self.attempts = 0
