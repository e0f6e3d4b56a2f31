"""Confirmations and two-person approvals, bound to the exact action and arguments.

A *confirmation* is asked of the requester (a change on a protected environment); an
*approval* must come from a different person who holds an approving role (a dangerous
action). Either way the request records a digest of the action and its validated arguments;
what finally runs is checked against that digest, so an approval can never be stretched to
a different command. Requests expire (policy ``approvals.expire_after``, 15 minutes by
default). The book is in memory: a restart forgets pending requests, which then simply
have to be asked again (the audit log keeps their history). Decided and expired requests
are kept a while (the last hour, a thousand at most) so that a late ``!approve`` is told
who decided; then they are forgotten.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.errors import ApprovalError
from bot.runtime.policy import Principal

__all__ = ["ApprovalBook", "ApprovalError", "Kind", "Request", "State"]

ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: ids are typed by people
KEEP_DECIDED_SECONDS = 3600.0  # how long a decided or expired request is remembered
KEEP_DECIDED_MAX = 1000  # and how many of them at most


class Kind(StrEnum):
    CONFIRMATION = "confirmation"
    APPROVAL = "approval"


class State(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass
class Request:
    id: str
    kind: Kind
    action: str
    arguments: dict[str, Any]
    digest: str
    requester: Principal
    created: float
    expires: float
    context: dict[str, Any] = field(default_factory=dict)  # channel, post, correlation id
    state: State = State.PENDING
    decided_by: Principal | None = None
    decided: float | None = None  # when it was granted, rejected or marked expired
    post_id: str = ""  # the bot's request message, for decisions by reaction

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.expires - (now if now is not None else time.time()))


class ApprovalBook:
    """Pending confirmation and approval requests, and the recently decided ones.
    Thread-safe.

    A request stays while pending (until :meth:`expire` marks it), then ``keep_decided``
    seconds after its decision, among the ``keep_max`` most recent decisions; after that
    :meth:`get` returns None and deciding it again says it is unknown.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        keep_decided: float = KEEP_DECIDED_SECONDS,
        keep_max: int = KEEP_DECIDED_MAX,
    ) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, Request] = {}
        self._decided: deque[Request] = deque()  # decided or expired, in decision order
        self._clock = clock
        self._keep_decided = keep_decided
        self._keep_max = keep_max

    def _new_id(self) -> str:
        while True:
            candidate = "R-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(5))
            if candidate not in self._requests:
                return candidate

    def open(
        self,
        kind: Kind,
        action: str,
        arguments: dict[str, Any],
        digest: str,
        requester: Principal,
        ttl: float,
        context: dict[str, Any] | None = None,
    ) -> Request:
        now = self._clock()
        with self._lock:
            self._forget_old(now)
            request = Request(
                id=self._new_id(),
                kind=kind,
                action=action,
                arguments=arguments,
                digest=digest,
                requester=requester,
                created=now,
                expires=now + ttl,
                context=context or {},
            )
            self._requests[request.id] = request
        return request

    def get(self, request_id: str) -> Request | None:
        with self._lock:
            return self._requests.get(request_id.strip().upper())

    def by_post(self, post_id: str) -> Request | None:
        """The request whose chat message is ``post_id`` (decisions by reaction)."""
        with self._lock:
            return next((r for r in self._requests.values() if r.post_id == post_id), None)

    def pending(self) -> list[Request]:
        with self._lock:
            return [r for r in self._requests.values() if r.state is State.PENDING]

    def decide(
        self,
        request_id: str,
        who: Principal,
        grant: bool,
        may_approve: Callable[[Principal, str], bool],
    ) -> Request:
        """Grant or reject a pending request, enforcing who may decide it.

        Confirmations are decided by the requester only. Approvals by anyone but the
        requester who ``may_approve`` the action (a requester may still withdraw, i.e.
        reject, their own request).
        """
        with self._lock:
            request = self._requests.get(request_id.strip().upper())
            if request is None:
                raise ApprovalError(f"no request {request_id}")
            if request.state is State.EXPIRED:
                raise ApprovalError(f"request {request.id} expired; ask again")
            if request.state is not State.PENDING:
                by = f" by @{request.decided_by.username}" if request.decided_by else ""
                raise ApprovalError(f"request {request.id} was already {request.state}{by}")
            if self._clock() >= request.expires:
                # left pending: expire() marks it, so that it is recorded exactly once
                raise ApprovalError(f"request {request.id} expired; ask again")
            own = who.user_id == request.requester.user_id
            if request.kind is Kind.CONFIRMATION and not own:
                raise ApprovalError(
                    f"only @{request.requester.username} can confirm their own request"
                )
            if request.kind is Kind.APPROVAL and grant:
                if own:
                    raise ApprovalError("you cannot approve your own request")
                if not may_approve(who, request.action):
                    raise ApprovalError(f"you may not approve {request.action}")
            request.state = State.GRANTED if grant else State.REJECTED
            request.decided_by = who
            now = self._clock()
            self._mark_decided(request, now)
            self._forget_old(now)
            return request

    def expire(self) -> list[Request]:
        """Mark and return the requests whose time ran out."""
        now = self._clock()
        expired = []
        with self._lock:
            for request in self._requests.values():
                if request.state is State.PENDING and now >= request.expires:
                    request.state = State.EXPIRED
                    expired.append(request)
            for request in expired:
                self._mark_decided(request, now)
            self._forget_old(now)
        return expired

    # The two below run with self._lock held.

    def _mark_decided(self, request: Request, now: float) -> None:
        request.decided = now
        self._decided.append(request)

    def _forget_old(self, now: float) -> None:
        """Drop decided requests older than ``keep_decided`` or beyond ``keep_max``."""
        decided = self._decided
        while decided and (
            len(decided) > self._keep_max or now - (decided[0].decided or 0) >= self._keep_decided
        ):
            del self._requests[decided.popleft().id]

    @staticmethod
    def check_binding(request: Request, digest: str) -> None:
        """Refuse to run anything but exactly what was granted."""
        if request.state is not State.GRANTED:
            raise ApprovalError(f"request {request.id} is {request.state}, not granted")
        if request.digest != digest:
            raise ApprovalError(
                f"request {request.id} was granted for different arguments; nothing was run"
            )
