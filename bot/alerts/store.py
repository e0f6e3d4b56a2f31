"""The alerts' SQLite store (``OPSROOM_DATA_DIR/alerts.sqlite3``, WAL, synchronous=FULL).

- ``events``: every alert state a notification reported, once: unique on
  (fingerprint, startsAt, status). A receiver answers 2xx only after the insert is
  committed (:meth:`AlertStore.submit`: one writer thread commits what every request
  waiting at that moment brought in one transaction, one fsync for all of them), so a
  crash after the answer loses nothing; a byte-identical repeat (Alertmanager's
  ``repeat_interval``, or its re-send of a request still open) inserts nothing. ``processed``
  marks what the engine has handled; what it has not is picked up again after a restart.
- ``alerts``: the current state of each fingerprint (what ``!alerts list`` shows).
- ``group_posts``: the post of each (receiver, group, channel), edited in place.
- ``runs``: every remediation decision (run, dry run, frozen, skipped...), unique on
  (rule, event), so a re-processed event never runs a rule twice.
- ``rule_state``: failures in a row, breaker open, paused: per rule, surviving restarts.
- ``incident_links``: what a rule's ``incident:`` option did with each alert state of a
  group (declared, dry run, routed to the group's incident, pending, skipped), unique on
  (rule, event): the group's latest declaration names the incident's alert.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.alerts.model import Alert, Notification, Status

FILENAME = "alerts.sqlite3"
KEEP_PROCESSED_SECONDS = 7 * 24 * 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    status TEXT NOT NULL,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    ends_at TEXT NOT NULL,
    generator_url TEXT NOT NULL,
    received_at REAL NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0,
    UNIQUE (fingerprint, starts_at, status)
);
CREATE INDEX IF NOT EXISTS events_pending ON events (id) WHERE processed = 0;
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    ends_at TEXT NOT NULL,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    generator_url TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_group ON alerts (receiver, group_key, channel);
CREATE TABLE IF NOT EXISTS group_posts (
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    channel TEXT NOT NULL,
    post_id TEXT NOT NULL,
    PRIMARY KEY (receiver, group_key, channel)
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    alert_name TEXT NOT NULL,
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    command TEXT NOT NULL DEFAULT '',
    job_id TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL DEFAULT '',
    thread TEXT NOT NULL DEFAULT '',
    silence_id TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    verify_at REAL,
    UNIQUE (rule, event_id)
);
CREATE INDEX IF NOT EXISTS runs_rule ON runs (rule, started_at);
CREATE INDEX IF NOT EXISTS runs_open ON runs (state);
CREATE TABLE IF NOT EXISTS incident_links (
    id INTEGER PRIMARY KEY,
    rule TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    receiver TEXT NOT NULL,
    group_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL,
    UNIQUE (rule, event_id)
);
CREATE INDEX IF NOT EXISTS incident_links_group ON incident_links (rule, receiver, group_key);
CREATE TABLE IF NOT EXISTS rule_state (
    rule TEXT PRIMARY KEY,
    failures INTEGER NOT NULL DEFAULT 0,
    tripped INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT ''
);
"""

OPEN_STATES = ("started", "awaiting approval", "verifying")


@dataclass(frozen=True)
class Event:
    """A stored alert state, as the engine processes it."""

    id: int
    receiver: str
    group_key: str
    alert: Alert


@dataclass(frozen=True)
class Current:
    """An alert's current state."""

    alert: Alert
    receiver: str
    group_key: str
    channel: str
    updated_at: float


@dataclass(frozen=True)
class Run:
    id: int
    rule: str
    event_id: int
    fingerprint: str
    alert_name: str
    mode: str  # run, dry-run, frozen, skipped
    state: str  # started, awaiting approval, verifying, succeeded, failed, recovered, ...
    detail: str
    command: str
    job_id: str
    route: str  # the channel as the routes name it (for mentions)
    channel: str  # where the run's messages went: channel id and thread
    thread: str
    silence_id: str
    started_at: float
    verify_at: float | None


@dataclass(frozen=True)
class Link:
    """What a rule's ``incident:`` option did with one alert state."""

    id: int
    rule: str
    event_id: int
    receiver: str
    group_key: str
    fingerprint: str  # for "declared": the alert the incident was declared for
    state: str  # declared, dry-run, pending, routed, skipped
    job_id: str  # for "declared": the incident.declare job
    detail: str
    at: float


@dataclass(frozen=True)
class RuleState:
    failures: int = 0
    tripped: bool = False
    paused: bool = False
    note: str = ""


def _alert(row: sqlite3.Row) -> Alert:
    return Alert(
        fingerprint=row["fingerprint"],
        status=Status(row["status"]),
        labels=json.loads(row["labels"]),
        annotations=json.loads(row["annotations"]),
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        generator_url=row["generator_url"],
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(row["id"], row["receiver"], row["group_key"], _alert(row))


class AlertStore:
    """Thread-safe (one connection behind a lock; SQLite serialises writes anyway)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a 2xx means on disk
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._writes: queue.SimpleQueue[tuple[list[Notification], float, Future[int]] | None]
        self._writes = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="opsroom-alert-store")
        self._writer.daemon = True
        self._writer.start()

    def close(self) -> None:
        self._writes.put(None)
        self._writer.join(10)
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(args)).fetchall()

    def writable(self) -> str | None:
        """None when a write transaction can be opened, else why not (for /readyz)."""
        try:
            with self._tx():
                pass
        except sqlite3.Error as exc:
            return f"alert store {self.path}: {exc}"
        return None

    # --- receiving ---------------------------------------------------------------------
    def submit(self, notifications: list[Notification], received_at: float) -> Future[int]:
        """:meth:`add` on the writer thread, committed together with whatever other
        requests are waiting (group commit); the future holds how many states were new
        once they are on disk."""
        result: Future[int] = Future()
        self._writes.put((notifications, received_at, result))
        return result

    def _write_loop(self) -> None:
        while True:
            first = self._writes.get()
            if first is None:
                return
            batch = [first]
            while True:
                try:
                    more = self._writes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._writes.put(None)  # stop after this batch
                    break
                batch.append(more)
            try:
                with self._tx() as db:
                    counts = [self._insert(db, n, at) for n, at, _ in batch]
            except BaseException as exc:
                for _, _, future in batch:
                    future.set_exception(exc)
                continue
            for (_, _, future), count in zip(batch, counts, strict=True):
                future.set_result(count)

    def add(self, notifications: Iterable[Notification], received_at: float) -> int:
        """Store every alert state not seen before, in one transaction; returns how many
        were new."""
        with self._tx() as db:
            return self._insert(db, notifications, received_at)

    @staticmethod
    def _insert(
        db: sqlite3.Connection, notifications: Iterable[Notification], received_at: float
    ) -> int:
        rows = [
            (
                a.fingerprint,
                a.starts_at,
                a.status.value,
                n.receiver,
                n.group_key,
                json.dumps(dict(a.labels), sort_keys=True),
                json.dumps(dict(a.annotations), sort_keys=True),
                a.ends_at,
                a.generator_url,
                received_at,
            )
            for n in notifications
            for a in n.alerts
        ]
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO events (fingerprint, starts_at, status, receiver, "
            "group_key, labels, annotations, ends_at, generator_url, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return db.total_changes - before

    def pending(self, limit: int = 1000) -> list[Event]:
        rows = self._query("SELECT * FROM events WHERE processed = 0 ORDER BY id LIMIT ?", (limit,))
        return [_event(r) for r in rows]

    def event(self, event_id: int) -> Event | None:
        rows = self._query("SELECT * FROM events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    def pending_count(self) -> int:
        return int(self._query("SELECT count(*) FROM events WHERE processed = 0")[0][0])

    def event_count(self) -> int:
        return int(self._query("SELECT count(*) FROM events")[0][0])

    # --- current state -----------------------------------------------------------------
    def apply(
        self, events: Iterable[tuple[Event, str]], now: float, processed: bool = True
    ) -> None:
        """Record each event (with the channel it was routed to; "" unrouted) as its
        alert's current state, unless the state known is newer (a later ``startsAt``, or
        the same one already resolved); mark the events processed unless told not to
        (the engine marks them once their remediations are decided)."""
        with self._tx() as db:
            for event, channel in events:
                a = event.alert
                db.execute(
                    "INSERT INTO alerts (fingerprint, status, starts_at, ends_at, receiver, "
                    "group_key, channel, labels, annotations, generator_url, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (fingerprint) DO UPDATE SET status = excluded.status, "
                    "starts_at = excluded.starts_at, ends_at = excluded.ends_at, "
                    "receiver = excluded.receiver, group_key = excluded.group_key, "
                    "channel = excluded.channel, labels = excluded.labels, "
                    "annotations = excluded.annotations, generator_url = excluded.generator_url, "
                    "updated_at = excluded.updated_at "
                    "WHERE excluded.starts_at > alerts.starts_at OR (excluded.starts_at = "
                    "alerts.starts_at AND alerts.status = 'firing')",
                    (
                        a.fingerprint,
                        a.status.value,
                        a.starts_at,
                        a.ends_at,
                        event.receiver,
                        event.group_key,
                        channel,
                        json.dumps(dict(a.labels), sort_keys=True),
                        json.dumps(dict(a.annotations), sort_keys=True),
                        a.generator_url,
                        now,
                    ),
                )
                if processed:
                    db.execute("UPDATE events SET processed = 1 WHERE id = ?", (event.id,))

    def mark_processed(self, ids: Iterable[int]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE events SET processed = 1 WHERE id = ?", [(i,) for i in ids])

    def _current(self, rows: list[sqlite3.Row]) -> list[Current]:
        return [
            Current(_alert(r), r["receiver"], r["group_key"], r["channel"], r["updated_at"])
            for r in rows
        ]

    def group(self, receiver: str, group_key: str, channel: str) -> list[Current]:
        return self._current(
            self._query(
                "SELECT * FROM alerts WHERE receiver = ? AND group_key = ? AND channel = ? "
                "ORDER BY status, labels",
                (receiver, group_key, channel),
            )
        )

    def current(self, fingerprint: str) -> Current | None:
        rows = self._current(
            self._query("SELECT * FROM alerts WHERE fingerprint = ?", (fingerprint,))
        )
        return rows[0] if rows else None

    def firing(self) -> list[Current]:
        return self._current(
            self._query("SELECT * FROM alerts WHERE status = 'firing' ORDER BY starts_at")
        )

    # --- group posts --------------------------------------------------------------------
    def group_post(self, receiver: str, group_key: str, channel: str) -> str | None:
        rows = self._query(
            "SELECT post_id FROM group_posts WHERE receiver = ? AND group_key = ? AND channel = ?",
            (receiver, group_key, channel),
        )
        return rows[0][0] if rows else None

    def set_group_post(self, receiver: str, group_key: str, channel: str, post_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO group_posts VALUES (?, ?, ?, ?)",
                (receiver, group_key, channel, post_id),
            )

    # --- remediation runs --------------------------------------------------------------
    def claim_run(
        self, rule: str, event: Event, mode: str, state: str, now: float, detail: str = ""
    ) -> int | None:
        """Record a decision for (rule, event); None when one exists (never decide twice)."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs (rule, event_id, fingerprint, alert_name, mode, "
                "state, detail, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rule,
                    event.id,
                    event.alert.fingerprint,
                    event.alert.name,
                    mode,
                    state,
                    detail,
                    now,
                ),
            )
            return cursor.lastrowid if cursor.rowcount else None

    def update_run(self, run_id: int, **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(f"UPDATE runs SET {names} WHERE id = ?", (*fields.values(), run_id))

    def _runs(self, where: str, args: Iterable[Any] = (), tail: str = "") -> list[Run]:
        rows = self._query(f"SELECT * FROM runs WHERE {where} {tail}", args)
        return [Run(**{key: row[key] for key in row.keys()}) for row in rows]  # noqa: SIM118

    def last_run(self, rule: str, fingerprint: str, modes: tuple[str, ...]) -> Run | None:
        marks = ", ".join("?" * len(modes))
        runs = self._runs(
            f"rule = ? AND fingerprint = ? AND mode IN ({marks})",
            (rule, fingerprint, *modes),
            "ORDER BY started_at DESC LIMIT 1",
        )
        return runs[0] if runs else None

    def runs_since(self, rule: str, since: float, mode: str = "run") -> int:
        rows = self._query(
            "SELECT count(*) FROM runs WHERE rule = ? AND mode = ? AND started_at >= ?",
            (rule, mode, since),
        )
        return int(rows[0][0])

    def history(self, rule: str, limit: int = 20) -> list[Run]:
        return self._runs("rule = ?", (rule,), f"ORDER BY id DESC LIMIT {int(limit)}")

    def open_runs(self) -> list[Run]:
        marks = ", ".join("?" * len(OPEN_STATES))
        return self._runs(f"state IN ({marks})", OPEN_STATES, "ORDER BY id")

    def run(self, run_id: int) -> Run | None:
        runs = self._runs("id = ?", (run_id,))
        return runs[0] if runs else None

    # --- incident links -----------------------------------------------------------------
    def claim_link(
        self, rule: str, event: Event, state: str, now: float, detail: str = ""
    ) -> int | None:
        """Record what ``rule`` does with ``event``; None when decided before."""
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO incident_links (rule, event_id, receiver, group_key, "
                "fingerprint, state, detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rule,
                    event.id,
                    event.receiver,
                    event.group_key,
                    event.alert.fingerprint,
                    state,
                    detail,
                    now,
                ),
            )
            return cursor.lastrowid if cursor.rowcount else None

    def update_link(self, link_id: int, **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE incident_links SET {names} WHERE id = ?", (*fields.values(), link_id)
            )

    def _links(self, where: str, args: Iterable[Any] = (), tail: str = "") -> list[Link]:
        rows = self._query(f"SELECT * FROM incident_links WHERE {where} {tail}", args)
        return [Link(**{key: row[key] for key in row.keys()}) for row in rows]  # noqa: SIM118

    def declaration(self, rule: str, receiver: str, group_key: str) -> Link | None:
        """The latest incident ``rule`` declared for the group."""
        links = self._links(
            "rule = ? AND receiver = ? AND group_key = ? AND state = 'declared'",
            (rule, receiver, group_key),
            "ORDER BY id DESC LIMIT 1",
        )
        return links[0] if links else None

    def pending_links(self) -> list[Link]:
        return self._links("state = 'pending'", (), "ORDER BY id")

    # --- rule state ---------------------------------------------------------------------
    def rule_state(self, rule: str) -> RuleState:
        rows = self._query("SELECT * FROM rule_state WHERE rule = ?", (rule,))
        if not rows:
            return RuleState()
        r = rows[0]
        return RuleState(r["failures"], bool(r["tripped"]), bool(r["paused"]), r["note"])

    def set_rule_state(self, rule: str, state: RuleState) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO rule_state VALUES (?, ?, ?, ?, ?)",
                (rule, state.failures, int(state.tripped), int(state.paused), state.note),
            )

    def prune(self, now: float) -> None:
        """Forget processed events older than a week (runs and state are kept)."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM events WHERE processed = 1 AND received_at < ?",
                (now - KEEP_PROCESSED_SECONDS,),
            )
