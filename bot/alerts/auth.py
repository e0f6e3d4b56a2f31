"""Authenticating a webhook request: a bearer token, or an HMAC-SHA256 of the body.

Alertmanager can only send ``Authorization: Bearer`` (or Basic) credentials; HMAC
signatures come from Grafana (and generic senders). Comparisons are constant-time. A
refused request is logged once per source and reason per interval (:class:`RefusalLog`):
Alertmanager re-sends a 4xx'd notification at every ``group_interval`` and ignores
``Retry-After``, so a misconfigured sender would otherwise fill the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from bot.alerts.config import Auth

log = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 300.0
MAX_REMEMBERED_SOURCES = 1000


class Unauthenticated(Exception):
    """The request's credential is missing or wrong; the message is the reason (logged,
    and told to the sender: it names what is wrong, never the expected value)."""


class Authenticator:
    """Checks one receiver's credential. Secrets are read once, at construction."""

    def __init__(self, auth: Auth, clock: Callable[[], float] = time.time) -> None:
        self._auth = auth
        self._clock = clock
        self._token = auth.bearer.token.read() if auth.bearer else b""
        self._key = auth.hmac.secret.read() if auth.hmac else b""

    def check(self, headers: Mapping[str, str], body: bytes) -> None:
        """Raise :class:`Unauthenticated` unless the request carries the credential."""
        if self._auth.bearer is not None:
            given = headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if not given:
                raise Unauthenticated("no Authorization header")
            if scheme.lower() != "bearer":
                raise Unauthenticated(f"Authorization scheme {scheme[:20]!r}, expected Bearer")
            if not hmac.compare_digest(token.strip().encode(), self._token):
                raise Unauthenticated("wrong bearer token")
            return
        spec = self._auth.hmac
        assert spec is not None
        signature = headers.get(spec.header, "")
        if not signature:
            raise Unauthenticated(f"no {spec.header} header")
        message = body
        if spec.timestamp_header:
            stamp = headers.get(spec.timestamp_header, "")
            try:
                skew = abs(self._clock() - float(stamp))
            except ValueError:
                raise Unauthenticated(f"no valid {spec.timestamp_header} header") from None
            if skew > spec.max_skew.total_seconds():
                raise Unauthenticated(f"{spec.timestamp_header} is {skew:.0f}s off")
            message = stamp.encode() + b":" + body
        expected = spec.prefix + hmac.new(self._key, message, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.strip().lower().encode(), expected.lower().encode()):
            raise Unauthenticated(f"wrong {spec.header} signature")


class RefusalLog:
    """Logs a refused request once per (source, receiver, reason) and interval."""

    def __init__(
        self, interval: float = LOG_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._last: OrderedDict[tuple[str, str, str], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def refused(self, source: str, receiver: str, status: int, reason: str) -> bool:
        """Note a refusal; True when it was logged (the first in its interval)."""
        key = (source, receiver, reason)
        now = self._clock()
        with self._lock:
            last, count = self._last.get(key, (None, 0))
            if last is not None and now - last < self._interval:
                self._last[key] = (last, count + 1)
                return False
            self._last[key] = (now, 0)
            self._last.move_to_end(key)
            while len(self._last) > MAX_REMEMBERED_SOURCES:
                self._last.popitem(last=False)
        also = f" (and {count} more since the last report)" if count else ""
        log.warning(
            "alert receiver %s refused a request from %s: HTTP %d, %s%s; logged once per %gs",
            receiver,
            source,
            status,
            reason,
            also,
            self._interval,
        )
        return True
