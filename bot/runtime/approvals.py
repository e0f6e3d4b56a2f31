"""Confirmations and two-person approvals, bound to the exact action and arguments.

A *confirmation* is asked of the requester (a change on a protected environment); an
*approval* must come from a different person who holds an approving role (a dangerous
action). Either way the request records a digest of the action and its validated arguments;
what finally runs is checked against that digest, so an approval can never be stretched to
a different command. Requests expire (policy ``approvals.expire_after``, 15 minutes by
default). The book is in memory: a restart forgets pending requests, which then simply
have to be asked again (the audit log keeps their history).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.errors import ApprovalError
from bot.runtime.policy import Principal

__all__ = ["ApprovalBook", "ApprovalError", "Kind", "Request", "State"]

ID_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: ids are typed by people


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
    post_id: str = ""  # the bot's request message, for decisions by reaction

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.expires - (now if now is not None else time.time()))


class ApprovalBook:
    """Pending confirmation and approval requests. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, Request] = {}
        self._clock = clock

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
            if request.state is not State.PENDING:
                raise ApprovalError(f"request {request.id} is already {request.state}")
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
        return expired

    @staticmethod
    def check_binding(request: Request, digest: str) -> None:
        """Refuse to run anything but exactly what was granted."""
        if request.state is not State.GRANTED:
            raise ApprovalError(f"request {request.id} is {request.state}, not granted")
        if request.digest != digest:
            raise ApprovalError(
                f"request {request.id} was granted for different arguments; nothing was run"
            )
