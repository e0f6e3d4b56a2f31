"""Incidents in SQLite (``OPSROOM_DATA_DIR/incidents.sqlite3``, WAL): they survive restarts.

One row per incident (its fields as JSON, with the columns queries need) and one row per
timeline event. Thread-safe; every write is committed before it returns.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.incidents.model import (
    Actor,
    AlertRef,
    ChecklistItem,
    Event,
    EventKind,
    Incident,
    Status,
)

FILENAME = "incidents.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    channel_id   TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL,
    declared_at  TEXT NOT NULL,
    data         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_channel ON incidents (channel_id);
CREATE INDEX IF NOT EXISTS incidents_declared ON incidents (declared_at);
CREATE TABLE IF NOT EXISTS events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    actor_name  TEXT NOT NULL,
    human       INTEGER NOT NULL,
    text        TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    post_id     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_incident ON events (incident_id, id);
-- a post is pinned to an incident's timeline once
CREATE UNIQUE INDEX IF NOT EXISTS events_pinned ON events (incident_id, post_id)
    WHERE kind = 'pinned';
"""


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _actor(data: dict[str, Any]) -> Actor:
    return Actor(data["id"], data["name"], data.get("human", True))


def _to_json(incident: Incident) -> str:
    alert = incident.alert
    return json.dumps(
        {
            "title": incident.title,
            "severity": incident.severity,
            "service": incident.service,
            "kind": incident.kind,
            "declared_by": asdict(incident.declared_by),
            "started_at": _time(incident.started_at),
            "channel_name": incident.channel_name,
            "summary_post_id": incident.summary_post_id,
            "checklist_post_id": incident.checklist_post_id,
            "acknowledged_at": _time(incident.acknowledged_at),
            "mitigated_at": _time(incident.mitigated_at),
            "resolved_at": _time(incident.resolved_at),
            "last_update_at": _time(incident.last_update_at),
            "last_reminder_at": _time(incident.last_reminder_at),
            "alert": None
            if alert is None
            else {**asdict(alert), "started_at": _time(alert.started_at)},
            "roles": {role: asdict(actor) for role, actor in incident.roles.items()},
            "checklist": [asdict(item) for item in incident.checklist],
            "follow_ups": incident.follow_ups,
        }
    )


def _from_row(row: tuple[Any, ...]) -> Incident:
    id_, channel_id, status, declared_at, raw = row
    data = json.loads(raw)
    alert = data.get("alert")
    return Incident(
        id=id_,
        title=data["title"],
        severity=data["severity"],
        service=data["service"],
        kind=data["kind"],
        status=Status(status),
        declared_at=datetime.fromisoformat(declared_at),
        declared_by=_actor(data["declared_by"]),
        started_at=datetime.fromisoformat(data["started_at"]),
        channel_id=channel_id,
        channel_name=data["channel_name"],
        summary_post_id=data["summary_post_id"],
        checklist_post_id=data["checklist_post_id"],
        acknowledged_at=_parse(data["acknowledged_at"]),
        mitigated_at=_parse(data["mitigated_at"]),
        resolved_at=_parse(data["resolved_at"]),
        last_update_at=_parse(data["last_update_at"]),
        last_reminder_at=_parse(data["last_reminder_at"]),
        alert=None
        if alert is None
        else AlertRef(
            alert["fingerprint"], alert["name"], _parse(alert["started_at"]), alert["summary"]
        ),
        roles={role: _actor(actor) for role, actor in data["roles"].items()},
        checklist=[ChecklistItem(**item) for item in data["checklist"]],
        follow_ups=list(data.get("follow_ups", [])),
    )


class IncidentStore:
    """The incidents and their timelines."""

    COLUMNS = "id, channel_id, status, declared_at, data"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- incidents -------------------------------------------------------------------------
    def add(self, incident: Incident) -> Incident:
        """Store a new incident; its ``id`` is given here."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO incidents (channel_id, status, declared_at, data) VALUES (?, ?, ?, ?)",
                (
                    incident.channel_id,
                    incident.status.value,
                    _time(incident.declared_at),
                    _to_json(incident),
                ),
            )
        incident.id = int(cursor.lastrowid or 0)
        return incident

    def save(self, incident: Incident) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE incidents SET channel_id = ?, status = ?, data = ? WHERE id = ?",
                (incident.channel_id, incident.status.value, _to_json(incident), incident.id),
            )

    def forget(self, incident_id: int) -> None:
        """Remove an incident whose declaration failed before it existed anywhere else."""
        with self._lock:
            self._db.execute("DELETE FROM events WHERE incident_id = ?", (incident_id,))
            self._db.execute("DELETE FROM incidents WHERE id = ?", (incident_id,))

    def _select(self, where: str, args: tuple[Any, ...] = ()) -> list[Incident]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {self.COLUMNS} FROM incidents {where}", args
            ).fetchall()
        return [_from_row(row) for row in rows]

    def get(self, incident_id: int) -> Incident | None:
        found = self._select("WHERE id = ?", (incident_id,))
        return found[0] if found else None

    def by_channel(self, channel_id: str) -> Incident | None:
        found = self._select("WHERE channel_id = ? ORDER BY id DESC LIMIT 1", (channel_id,))
        return found[0] if found else None

    def open_incidents(self) -> list[Incident]:
        return self._select("WHERE status != ? ORDER BY id", (Status.RESOLVED.value,))

    def declared_between(self, since: datetime, until: datetime) -> list[Incident]:
        return self._select(
            "WHERE declared_at >= ? AND declared_at < ? ORDER BY declared_at",
            (_time(since), _time(until)),
        )

    # --- events ----------------------------------------------------------------------------
    def add_event(self, event: Event) -> bool:
        """Append a timeline event; False when it is a post already pinned to the timeline."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (incident_id, at, kind, actor_id, actor_name, "
                "human, text, job_id, post_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.incident_id,
                    _time(event.at),
                    event.kind.value,
                    event.actor.id,
                    event.actor.name,
                    int(event.actor.human),
                    event.text,
                    event.job_id,
                    event.post_id,
                ),
            )
        return cursor.rowcount == 1

    def events(self, incident_id: int) -> list[Event]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, incident_id, at, kind, actor_id, actor_name, human, text, job_id, "
                "post_id FROM events WHERE incident_id = ? ORDER BY id",
                (incident_id,),
            ).fetchall()
        return [
            Event(
                id=row[0],
                incident_id=row[1],
                at=datetime.fromisoformat(row[2]),
                kind=EventKind(row[3]),
                actor=Actor(row[4], row[5], bool(row[6])),
                text=row[7],
                job_id=row[8],
                post_id=row[9],
            )
            for row in rows
        ]
