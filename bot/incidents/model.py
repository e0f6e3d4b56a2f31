"""What an incident is: its record, its roles and checklist, and the events of its timeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum


class Status(StrEnum):
    ACTIVE = "active"
    MITIGATED = "mitigated"
    RESOLVED = "resolved"


class EventKind(StrEnum):
    """What a timeline entry recorded by the incident itself is about."""

    DECLARED = "declared"
    ALERT = "alert"
    ROLE = "role"
    SEVERITY = "severity"
    STATUS = "status"
    UPDATE = "update"
    NOTE = "note"
    PINNED = "pinned"
    CHECKLIST = "checklist"


@dataclass(frozen=True)
class Actor:
    """Who did it: a user id and username, or a rule (``rule:<name>``)."""

    id: str
    name: str
    human: bool = True

    @property
    def shown(self) -> str:
        return f"@{self.name}" if self.human else self.name


@dataclass(frozen=True)
class AlertRef:
    """The alert an incident was declared for (or that was routed to it)."""

    fingerprint: str
    name: str
    started_at: datetime | None = None
    summary: str = ""


@dataclass
class ChecklistItem:
    title: str
    action: str = ""
    args: str = ""
    assignee: str = ""  # username
    done_by: str = ""  # username
    done_at: str = ""  # ISO time
    job_id: str = ""  # the last run of its action
    outcome: str = ""  # the run's final event and audit id, e.g. "succeeded · audit A-000012"

    @property
    def done(self) -> bool:
        return bool(self.done_at)


@dataclass
class Incident:
    id: int
    title: str
    severity: int
    service: str
    kind: str  # the checklist template it was declared with
    status: Status
    declared_at: datetime
    declared_by: Actor
    started_at: datetime  # the alert's start, or the declaration
    channel_id: str = ""
    channel_name: str = ""
    summary_post_id: str = ""
    checklist_post_id: str = ""
    acknowledged_at: datetime | None = None
    mitigated_at: datetime | None = None
    resolved_at: datetime | None = None
    last_update_at: datetime | None = None
    last_reminder_at: datetime | None = None
    alert: AlertRef | None = None
    roles: dict[str, Actor] = field(default_factory=dict)
    checklist: list[ChecklistItem] = field(default_factory=list)
    follow_ups: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"INC-{self.id}"

    @property
    def open(self) -> bool:
        return self.status is not Status.RESOLVED

    def participants(self) -> list[str]:
        return sorted({actor.name for actor in self.roles.values()})


@dataclass(frozen=True)
class Event:
    """One line of the timeline that the incident recorded itself."""

    incident_id: int
    at: datetime
    kind: EventKind
    actor: Actor
    text: str
    job_id: str = ""  # the incident command's job: its audit records are found by it
    post_id: str = ""  # a pinned post, a status update
    id: int = 0


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_ref(text: str) -> int | None:
    """``INC-7``, ``inc-7`` or ``7`` as an incident number; None if it is none of these."""
    value = text.strip().upper().removeprefix("INC-")
    return int(value) if value.isdigit() and 0 < len(value) < 10 else None
