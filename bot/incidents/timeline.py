"""The timeline that writes itself: the incident's own events merged with the audit log.

The incident records its declaration, roles, severity and status changes, updates, notes,
alerts and 📌 posts (with the job id of the command that made each change). Everything
else comes from the audit log, read by channel and by target: every runtime action and
approval in the incident's channel, or on the incident's service, while it was open. Each
entry carries the id of its audit record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.incidents.model import Incident
from bot.incidents.store import IncidentStore
from bot.runtime.audit import AuditEvent, AuditRecord, AuditStore

#: Audit events shown on a timeline (requests and starts are implied by what follows).
SHOWN = frozenset(
    {
        AuditEvent.DENIED,
        AuditEvent.CONFIRMATION_REQUESTED,
        AuditEvent.APPROVAL_REQUESTED,
        AuditEvent.GRANTED,
        AuditEvent.REJECTED,
        AuditEvent.EXPIRED,
        AuditEvent.SUCCEEDED,
        AuditEvent.FAILED,
        AuditEvent.CANCELLED,
        AuditEvent.TIMED_OUT,
        AuditEvent.INTERRUPTED,
    }
)
FINAL = frozenset(
    {
        AuditEvent.SUCCEEDED,
        AuditEvent.FAILED,
        AuditEvent.CANCELLED,
        AuditEvent.TIMED_OUT,
        AuditEvent.INTERRUPTED,
    }
)
SERVICE_PARAMETERS = ("service", "app", "application")
SLACK = timedelta(seconds=1)  # records written just before the declaration finished


@dataclass(frozen=True)
class Entry:
    at: datetime
    who: str
    what: str
    audit_id: str = ""
    kind: str = ""  # the incident's own event kind, or "action"


def record_time(record: AuditRecord) -> datetime:
    return datetime.fromisoformat(record.time.replace("Z", "+00:00"))


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def concerns(incident: Incident, record: AuditRecord) -> bool:
    """Was this record in the incident's channel, or about its service?"""
    if record.action.startswith("incident."):
        return False  # the incident's own commands are its events
    if incident.channel_id and record.channel_id == incident.channel_id:
        return True
    if not incident.service:
        return False
    values = [record.target, *(str(record.parameters.get(p, "")) for p in SERVICE_PARAMETERS)]
    return incident.service in values


def related_records(
    incident: Incident, audit: AuditStore, until: datetime | None = None
) -> list[AuditRecord]:
    """The audit records of actions and approvals concerning the incident while open."""
    end = until or incident.resolved_at
    found = []
    for record in audit.since(incident.declared_at - SLACK):
        if end is not None and record_time(record) > end + SLACK:
            break
        if record.event in SHOWN and concerns(incident, record):
            found.append(record)
    return found


def audit_id_of_job(audit: AuditStore | None, job_id: str) -> str:
    """The newest audit record of a job (its final one once it ended)."""
    if audit is None or not job_id:
        return ""
    records = audit.by_job(job_id)
    return records[-1].id if records else ""


def describe(record: AuditRecord) -> str:
    what = f"{record.action}"
    if record.target:
        what += f" on {record.target}"
    event = record.event.value.replace("_", " ")
    outcome = first_line(record.outcome)
    if record.decider_name:
        outcome = f"by @{record.decider_name}"
    return f"{what}: {event}" + (f" ({outcome})" if outcome else "")


def timeline(incident: Incident, store: IncidentStore, audit: AuditStore | None) -> list[Entry]:
    entries = [
        Entry(
            event.at,
            event.actor.shown,
            event.text,
            audit_id_of_job(audit, event.job_id),
            event.kind.value,
        )
        for event in store.events(incident.id)
    ]
    if audit is not None:
        for record in related_records(incident, audit):
            who = record.actor_name if ":" in record.actor_id else f"@{record.actor_name}"
            entries.append(Entry(record_time(record), who, describe(record), record.id, "action"))
    return sorted(entries, key=lambda entry: entry.at)
