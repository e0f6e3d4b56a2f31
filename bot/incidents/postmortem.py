"""The post-mortem: one Markdown document (and its JSON twin) written from the record.

Summary, impact, timeline, actions taken (with audit ids and outcomes), participants, time
to acknowledge / mitigate / resolve, and follow-ups. Tables go through the one table
writer (:class:`bot.rendering.MarkdownRenderer`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bot.incidents.config import IncidentsConfig
from bot.incidents.model import EventKind, Incident
from bot.incidents.service import minutes, when
from bot.incidents.store import IncidentStore
from bot.incidents.timeline import (
    FINAL,
    Entry,
    first_line,
    record_time,
    related_records,
    timeline,
)
from bot.outcomes import Table
from bot.rendering import MarkdownRenderer
from bot.runtime.audit import AuditStore


def durations(incident: Incident) -> dict[str, timedelta | None]:
    """Time to acknowledge, mitigate and resolve, from the incident's start (the alert's
    start when an alert declared it)."""

    def since_start(moment: datetime | None) -> timedelta | None:
        return moment - incident.started_at if moment else None

    return {
        "acknowledge": since_start(incident.acknowledged_at),
        "mitigate": since_start(incident.mitigated_at),
        "resolve": since_start(incident.resolved_at),
    }


class PostMortem:
    """Everything a post-mortem says about one incident, gathered once."""

    def __init__(
        self,
        incident: Incident,
        config: IncidentsConfig,
        store: IncidentStore,
        audit: AuditStore | None,
    ) -> None:
        self.incident = incident
        self.config = config
        self.entries: list[Entry] = timeline(incident, store, audit)
        self.actions = [
            record
            for record in (related_records(incident, audit) if audit is not None else [])
            if record.event in FINAL
        ]
        self.updates = [e for e in store.events(incident.id) if e.kind is EventKind.UPDATE]
        people = {actor.name for actor in incident.roles.values() if actor.human}
        people |= {e.who.removeprefix("@") for e in self.entries if e.who.startswith("@")}
        self.participants = sorted(people)

    def as_dict(self) -> dict[str, Any]:
        incident = self.incident
        return {
            "id": incident.ref,
            "title": incident.title,
            "severity": incident.severity,
            "severity_label": self.config.severity_label(incident.severity),
            "service": incident.service,
            "type": incident.kind,
            "status": str(incident.status),
            "channel": incident.channel_name,
            "alert": None
            if incident.alert is None
            else {"fingerprint": incident.alert.fingerprint, "name": incident.alert.name},
            "started_at": incident.started_at.isoformat(),
            "declared_at": incident.declared_at.isoformat(),
            "declared_by": incident.declared_by.shown,
            "acknowledged_at": _iso(incident.acknowledged_at),
            "mitigated_at": _iso(incident.mitigated_at),
            "resolved_at": _iso(incident.resolved_at),
            "durations_seconds": {
                name: None if value is None else int(value.total_seconds())
                for name, value in durations(incident).items()
            },
            "roles": {role: actor.shown for role, actor in incident.roles.items()},
            "participants": self.participants,
            "timeline": [
                {
                    "at": entry.at.isoformat(),
                    "who": entry.who,
                    "what": entry.what,
                    "audit_id": entry.audit_id,
                    "kind": entry.kind,
                }
                for entry in self.entries
            ],
            "actions": [
                {
                    "at": record.time,
                    "action": record.action,
                    "target": record.target,
                    "by": record.actor_name,
                    "result": record.event.value,
                    "outcome": first_line(record.outcome),
                    "audit_id": record.id,
                    "job_id": record.job_id or "",
                }
                for record in self.actions
            ],
            "checklist": [
                {"title": item.title, "done": item.done, "by": item.done_by}
                for item in incident.checklist
            ],
            "follow_ups": list(incident.follow_ups),
        }

    def markdown(self) -> str:
        incident = self.incident
        md = MarkdownRenderer()
        times = durations(incident)
        commander = incident.roles.get("commander")
        done = sum(item.done for item in incident.checklist)
        impact = [u.text for u in self.updates]
        lines = [
            f"# Post-mortem {incident.ref}: {incident.title}",
            "",
            "## Summary",
            "",
            md.table(
                Table(
                    ("", ""),
                    [
                        ("severity", self.config.severity_label(incident.severity)),
                        ("service", incident.service or "—"),
                        ("status", str(incident.status)),
                        ("started", when(incident.started_at)),
                        (
                            "declared",
                            f"{when(incident.declared_at)} by {incident.declared_by.shown}",
                        ),
                        ("resolved", when(incident.resolved_at)),
                        ("commander", commander.shown if commander else "unassigned"),
                        ("channel", f"~{incident.channel_name}"),
                        (
                            "alert",
                            f"{incident.alert.name} ({incident.alert.fingerprint})"
                            if incident.alert
                            else "—",
                        ),
                        ("checklist", f"{done}/{len(incident.checklist)} done"),
                    ],
                )
            ),
            "",
            "## Impact",
            "",
            *([f"- {text}" for text in impact] or ["No status update was posted."]),
            "",
            "## Time to acknowledge, mitigate, resolve",
            "",
            md.table(
                Table(
                    ("measure", "time", "at"),
                    [
                        (
                            "acknowledge",
                            minutes(times["acknowledge"]),
                            when(incident.acknowledged_at),
                        ),
                        ("mitigate", minutes(times["mitigate"]), when(incident.mitigated_at)),
                        ("resolve", minutes(times["resolve"]), when(incident.resolved_at)),
                    ],
                )
            ),
            "",
            "## Timeline",
            "",
            md.table(
                Table(
                    ("time (UTC)", "who", "what", "audit"),
                    [
                        (entry.at.strftime("%H:%M:%S"), entry.who, entry.what, entry.audit_id)
                        for entry in self.entries
                    ],
                )
            ),
            "",
            "## Actions taken",
            "",
            md.table(
                Table(
                    ("time (UTC)", "action", "target", "by", "result", "outcome", "audit"),
                    [
                        (
                            record_time(record).strftime("%H:%M:%S"),
                            record.action,
                            record.target,
                            record.actor_name,
                            record.event.value,
                            first_line(record.outcome, 120),
                            record.id,
                        )
                        for record in self.actions
                    ],
                )
            ),
            "",
            "## Participants",
            "",
            ", ".join(f"@{name}" for name in self.participants) or "—",
            "",
            "## Follow-ups",
            "",
            *(
                [f"{n}. {text}" for n, text in enumerate(incident.follow_ups, 1)]
                or ["None recorded (`!incident followup <text>` adds one)."]
            ),
            "",
        ]
        return "\n".join(lines)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
