"""What the runtime tells a conversation, as data. Surfaces render these (``bot/messages.py``
has the words); the runtime composes no chat text.

Every notice about a recorded step carries an :class:`AuditRef`: the record's id and the
first characters of its chain hash, so that the channel itself witnesses the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from bot.outcomes import Outcome

SHORT_HASH = 12


@dataclass(frozen=True)
class AuditRef:
    id: str
    hash: str = ""

    @property
    def short(self) -> str:
        return self.hash[:SHORT_HASH]


@dataclass(frozen=True)
class Refused:
    """Refused before anything ran: bad arguments, unknown target, busy target."""

    command: str
    reason: str
    audit: AuditRef
    usage: str = ""  # shown when the arguments did not fit


@dataclass(frozen=True)
class Denied:
    """The policy said no."""

    command: str
    reason: str
    audit: AuditRef


@dataclass(frozen=True)
class Asked:
    """A confirmation (by the requester) or an approval (by someone else) is needed."""

    approval: bool  # False: the requester's own confirmation
    who: str  # the requester as shown (@alice, rule x for alert y)
    command: str
    request_id: str
    minutes: int
    environment: str
    approver_roles: tuple[str, ...]
    audit: AuditRef
    prefix: str = "!"


@dataclass(frozen=True)
class Decided:
    request_id: str
    granted: bool
    by: str
    audit: AuditRef


@dataclass(frozen=True)
class DecisionRefused:
    """A decision that was not taken (own request, not an approver, unknown, expired)."""

    reason: str
    audit: AuditRef | None = None


@dataclass(frozen=True)
class Expired:
    request_id: str
    audit: AuditRef


@dataclass(frozen=True)
class Abandoned:
    """A request still pending when the bot stopped: it can no longer be decided."""

    request_id: str
    command: str
    audit: AuditRef


@dataclass(frozen=True)
class Accepted:
    command: str
    job_id: str


@dataclass(frozen=True)
class Running:
    command: str
    job_id: str
    progress: str = ""
    audit: AuditRef | None = None


@dataclass(frozen=True)
class Finished:
    """The final word on a run: what, for whom, how it ended, its outcome."""

    command: str
    who: str
    status: str  # the final audit event: succeeded, failed, cancelled, timed out, interrupted
    outcome: Outcome
    seconds: float | None
    job_id: str
    audit: AuditRef


Notice: TypeAlias = (
    Refused
    | Denied
    | Asked
    | Decided
    | DecisionRefused
    | Expired
    | Abandoned
    | Accepted
    | Running
    | Finished
)
