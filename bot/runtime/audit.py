"""The audit log: one tamper-evident record per lifecycle event of every action.

Records live in one SQLite file (``audit.sqlite3`` under ``OPSROOM_DATA_DIR``) and are only
ever appended. Each record carries the SHA-256 of the record before it (``prev_hash``) and its
own SHA-256 (``hash``) over a canonical JSON serialization of all its other fields, so that an
edited, deleted, inserted or reordered record breaks the chain at a precise place that
:meth:`AuditStore.verify` reports.

Durability: ``append`` commits (WAL, ``synchronous=FULL``, so the WAL is fsync'ed) before it
returns. The runtime reports an action done only after its record is appended, so a record
the operator was told about cannot be lost by a crash.

Two layers of protection against edits:

* SQLite triggers abort every UPDATE and DELETE of the records table. This stops accidents
  (a stray script, a wrong ``sqlite3`` session), not an attacker, who can drop the triggers.
* The hash chain. Anyone can still rewrite the file, but not without recomputing every hash
  from the edited record to the end; an export shipped elsewhere (or just its last hash) then
  no longer matches. See ``docs/audit.md``.

This module knows nothing about chat; it is used by the action runtime and the ``opsroom
audit`` command.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from bot.errors import AuditError

FILENAME = "audit.sqlite3"
GENESIS_HASH = "0" * 64
SCHEMA_VERSION = 1


class AuditEvent(StrEnum):
    """A step in the life of one action invocation."""

    REQUESTED = "requested"
    DENIED = "denied"
    CONFIRMATION_REQUESTED = "confirmation_requested"
    APPROVAL_REQUESTED = "approval_requested"
    GRANTED = "granted"
    REJECTED = "rejected"
    EXPIRED = "expired"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"


#: Events that end a started invocation; a STARTED record without one after it is unfinished.
TERMINAL_EVENTS = frozenset(
    {
        AuditEvent.SUCCEEDED,
        AuditEvent.FAILED,
        AuditEvent.CANCELLED,
        AuditEvent.TIMED_OUT,
        AuditEvent.INTERRUPTED,
    }
)

# Column order of the records table; also the field order of AuditRecord.
FIELDS = (
    "id",
    "seq",
    "time",
    "event",
    "action",
    "target",
    "actor_id",
    "actor_name",
    "trigger",
    "channel_id",
    "post_id",
    "parameters",
    "outcome",
    "duration_ms",
    "correlation_id",
    "prev_hash",
    "hash",
)
_COLUMNS = ", ".join(FIELDS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    seq            INTEGER PRIMARY KEY,  -- 1, 2, 3 ... assigned under the write lock
    id             TEXT NOT NULL UNIQUE,
    time           TEXT NOT NULL,
    event          TEXT NOT NULL,
    action         TEXT NOT NULL,
    target         TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    actor_name     TEXT NOT NULL,
    trigger        TEXT NOT NULL,
    channel_id     TEXT NOT NULL,
    post_id        TEXT NOT NULL,
    parameters     TEXT NOT NULL,        -- canonical JSON object
    outcome        TEXT NOT NULL,
    duration_ms    INTEGER,
    correlation_id TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (time);
CREATE INDEX IF NOT EXISTS audit_records_correlation ON audit_records (correlation_id, seq);
CREATE INDEX IF NOT EXISTS audit_records_started ON audit_records (seq)
    WHERE event = 'started';
CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only: UPDATE refused');
END;
CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only: DELETE refused');
END;
"""


@dataclass(frozen=True)
class AuditRecord:
    """One stored audit record. ``parameters`` and ``outcome`` are already redacted."""

    id: str
    seq: int
    time: str
    event: AuditEvent
    action: str
    target: str
    actor_id: str
    actor_name: str
    trigger: str
    channel_id: str
    post_id: str
    parameters: dict[str, Any] = field(hash=False)
    outcome: str
    duration_ms: int | None
    correlation_id: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field (``event`` as its string value)."""
        data = asdict(self)
        data["event"] = self.event.value
        return data

    def to_json(self) -> str:
        """The record's canonical JSON, ``hash`` included: one line of a JSONL export."""
        return canonical_json(self.as_dict())


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of walking the chain. ``first_bad`` is None exactly when ``ok``."""

    ok: bool
    records: int
    first_bad: str | None
    reason: str


def record_id(seq: int) -> str:
    """``A-000042`` for sequence number 42 (more digits once past 999999)."""
    return f"A-{seq:06d}"


def canonical_json(data: Mapping[str, Any]) -> str:
    """The one serialization every hash is computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical serialization of all fields except ``hash``."""
    body = {key: value for key, value in fields.items() if key != "hash"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def utc_timestamp(when: datetime | None = None) -> str:
    """``2026-11-23T17:02:03.123Z``: the format of ``AuditRecord.time``. Naive means UTC."""
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_ready(parameters: Any) -> dict[str, Any]:
    """Parameters as they will read back from the store, so the hash computed at append
    time is the hash ``verify`` recomputes: non-JSON values become strings, tuples lists,
    keys strings."""
    if not isinstance(parameters, Mapping):
        raise TypeError(f"audit parameters must be a mapping, got {type(parameters).__name__}")
    return json.loads(json.dumps(dict(parameters), default=str, ensure_ascii=False))


def _row_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    fields = dict(zip(FIELDS, row, strict=True))
    fields["parameters"] = json.loads(fields["parameters"])
    return fields


def _row_record(row: tuple[Any, ...]) -> AuditRecord:
    fields = _row_fields(row)
    fields["event"] = AuditEvent(fields["event"])
    return AuditRecord(**fields)


def verify_chain(rows: Iterable[Mapping[str, Any]], *, from_start: bool = True) -> VerifyResult:
    """Walk records (dicts of every field, in sequence order) and report the first that
    does not verify.

    Used by :meth:`AuditStore.verify` and usable on a JSONL export shipped elsewhere. With
    ``from_start=False`` (an export made with ``--since``) the first record's ``seq`` and
    ``prev_hash`` are taken as given instead of requiring 1 and 64 zeros.

    Checks, in order, for each record: its ``seq`` follows the previous one (a gap means a
    deleted record), its ``prev_hash`` is the previous record's hash (else a record was
    deleted, inserted or reordered), its ``id`` matches its ``seq``, and its own hash.
    """
    count = 0
    prev_seq: int | None = None
    prev_hash = GENESIS_HASH
    bad: tuple[str, str] | None = None  # (record id, reason) of the first bad record
    for fields in rows:
        count += 1
        if bad is None:
            bad = _check(fields, prev_seq, prev_hash, from_start)
            if bad is None:
                prev_seq, prev_hash = fields["seq"], fields["hash"]
        # after the first bad record, keep counting: ``records`` is the size of the log
    if bad is None:
        return VerifyResult(ok=True, records=count, first_bad=None, reason="ok")
    return VerifyResult(ok=False, records=count, first_bad=bad[0], reason=bad[1])


def _check(
    fields: Mapping[str, Any], prev_seq: int | None, prev_hash: str, from_start: bool
) -> tuple[str, str] | None:
    """(record id, reason) when this record does not follow ``prev_seq``/``prev_hash``."""
    seq = fields.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return str(fields.get("id")), f"record unreadable: seq is {seq!r}"
    here = record_id(seq)
    if prev_seq is None:
        if from_start and seq != 1:
            return here, f"sequence gap: {record_id(1)} missing (record deleted)"
        if from_start and fields.get("prev_hash") != GENESIS_HASH:
            return here, "chain broken: the first record does not start the chain"
    else:
        if seq > prev_seq + 1:
            return here, f"sequence gap after {record_id(prev_seq)} (record deleted)"
        if seq != prev_seq + 1:
            return here, f"sequence out of order after {record_id(prev_seq)} (reordered)"
        if fields.get("prev_hash") != prev_hash:
            return here, (
                f"chain broken: prev_hash does not match record {record_id(prev_seq)} "
                "(record deleted or reordered)"
            )
    if fields.get("id") != here:
        return here, f"id {fields.get('id')!r} does not match its sequence number (edited)"
    try:
        computed = record_hash(fields)
    except (TypeError, ValueError) as exc:
        return here, f"record unreadable: {exc}"
    if computed != fields.get("hash"):
        return here, "hash mismatch (record edited)"
    return None


class AuditStore:
    """Append-only, hash-chained, thread-safe store of :class:`AuditRecord`.

    One connection serves appends and short reads under a lock; every append runs in
    ``BEGIN IMMEDIATE`` so that other processes writing the same file serialize with it and
    the chain stays linear. ``since`` and ``verify`` read through their own connection in one
    read transaction: a consistent snapshot that does not block appends while it is walked.
    """

    def __init__(
        self,
        path: Path,
        redact: Callable[[Any], Any] | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        """Open (and create, unless ``read_only``) the store at ``path``.

        ``redact(obj)`` returns ``obj`` with secrets scrubbed; it is applied to parameters
        and outcome before they are hashed and stored. ``read_only`` opens an existing file
        without writing to it (the ``opsroom audit`` command), and ``append`` is refused.
        """
        self.path = Path(path)
        self._redact = redact
        self._read_only = read_only
        self._lock = threading.Lock()
        self._closed = False
        if read_only:
            if not self.path.is_file():
                raise AuditError(f"no audit log at {self.path}")
            self._db = self._connect()
            tables = self._db.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                ("audit_records",),
            ).fetchone()[0]
            if not tables:
                self._db.close()
                raise AuditError(f"{self.path} is not an Opsroom audit log")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._connect()
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._db.close()
            raise AuditError(f"{self.path} was written by a newer Opsroom (schema {version})")
        self._db.execute("PRAGMA journal_mode=WAL")
        # Re-run at every open: also puts back triggers someone dropped.
        self._db.executescript(SCHEMA)
        if version < SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        if self._read_only:
            db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
                timeout=30,
            )
        else:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=30
            )
        # FULL: the WAL is fsync'ed at every commit, so a returned append survives a power
        # loss too, not only a crash of the process.
        db.execute("PRAGMA synchronous=FULL")
        return db

    # --- writing ---------------------------------------------------------------------------
    def append(
        self,
        event: AuditEvent | str,
        *,
        action: str,
        target: str = "",
        actor_id: str = "",
        actor_name: str = "",
        trigger: str = "chat",
        channel_id: str = "",
        post_id: str = "",
        parameters: Mapping[str, Any] | None = None,
        outcome: str = "",
        duration_ms: int | None = None,
        correlation_id: str,
    ) -> AuditRecord:
        """Append one record and return it once it is committed to disk."""
        event = AuditEvent(event)
        texts = {
            "action": action,
            "target": target,
            "actor_id": actor_id,
            "actor_name": actor_name,
            "trigger": trigger,
            "channel_id": channel_id,
            "post_id": post_id,
            "correlation_id": correlation_id,
        }
        for name, value in texts.items():
            if not isinstance(value, str):
                raise TypeError(f"audit {name} must be a string, got {type(value).__name__}")
        if not action:
            raise ValueError("audit action must not be empty")
        if not correlation_id:
            raise ValueError("audit correlation_id must not be empty")
        if duration_ms is not None:
            if isinstance(duration_ms, bool) or not isinstance(duration_ms, int | float):
                raise TypeError("audit duration_ms must be an int or None")
            duration_ms = round(duration_ms)
        if parameters is not None and not isinstance(parameters, Mapping):
            raise TypeError(f"audit parameters must be a mapping, got {type(parameters).__name__}")
        params: Any = dict(parameters or {})
        if self._redact is not None:
            params = self._redact(params)
            outcome = self._redact(outcome)
        params = _json_ready(params)
        outcome = str(outcome)

        with self._lock:
            self._check_writable()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute(
                    "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq = last[0] + 1 if last else 1
                fields: dict[str, Any] = {
                    "id": record_id(seq),
                    "seq": seq,
                    "time": utc_timestamp(),
                    "event": event.value,
                    **texts,
                    "parameters": params,
                    "outcome": outcome,
                    "duration_ms": duration_ms,
                    "prev_hash": last[1] if last else GENESIS_HASH,
                }
                fields["hash"] = record_hash(fields)
                row = {**fields, "parameters": canonical_json(params)}
                db.execute(
                    f"INSERT INTO audit_records ({_COLUMNS}) "
                    f"VALUES ({', '.join('?' * len(FIELDS))})",
                    tuple(row[name] for name in FIELDS),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        fields["event"] = event
        return AuditRecord(**fields)

    def _check_writable(self) -> None:
        if self._closed:
            raise AuditError("the audit store is closed")
        if self._read_only:
            raise AuditError("the audit store is open read-only")

    # --- reading ---------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[AuditRecord]:
        with self._lock:
            if self._closed:
                raise AuditError("the audit store is closed")
            rows = self._db.execute(sql, args).fetchall()
        return [_row_record(row) for row in rows]

    def last(self, n: int = 10) -> list[AuditRecord]:
        """The ``n`` newest records, newest last."""
        if n <= 0:
            return []
        records = self._query(
            f"SELECT {_COLUMNS} FROM audit_records ORDER BY seq DESC LIMIT ?", (n,)
        )
        return records[::-1]

    def get(self, record_id: str) -> AuditRecord | None:
        """The record with this id (``A-000042``), or None."""
        records = self._query(f"SELECT {_COLUMNS} FROM audit_records WHERE id = ?", (record_id,))
        return records[0] if records else None

    def by_correlation(self, correlation_id: str) -> list[AuditRecord]:
        """Every event of one action invocation, in order."""
        return self._query(
            f"SELECT {_COLUMNS} FROM audit_records WHERE correlation_id = ? ORDER BY seq",
            (correlation_id,),
        )

    def unfinished(self) -> list[AuditRecord]:
        """STARTED records with no terminal event for their correlation id after them.

        At start-up, the runtime records ``interrupted`` for each: those actions were running
        when the previous process died.
        """
        terminal = ", ".join(f"'{event.value}'" for event in sorted(TERMINAL_EVENTS))
        return self._query(
            f"SELECT {_COLUMNS} FROM audit_records AS s WHERE s.event = 'started' "
            "AND NOT EXISTS (SELECT 1 FROM audit_records AS t "
            "WHERE t.correlation_id = s.correlation_id AND t.seq > s.seq "
            f"AND t.event IN ({terminal})) ORDER BY s.seq"
        )

    def _snapshot(self) -> sqlite3.Connection:
        """A private connection in a read transaction: a stable view for long walks."""
        with self._lock:
            if self._closed:
                raise AuditError("the audit store is closed")
        db = self._connect()
        db.execute("BEGIN")
        return db

    def since(self, when: datetime | None) -> Iterator[AuditRecord]:
        """Records whose time is at or after ``when`` (naive means UTC), in sequence order;
        every record when ``when`` is None. Streams; safe to append while iterating."""
        db = self._snapshot()
        try:
            if when is None:
                cursor = db.execute(f"SELECT {_COLUMNS} FROM audit_records ORDER BY seq")
            else:
                # The time index finds the first matching record; from there rows are read
                # in sequence order (the time filter stays: a clock stepped back can leave
                # older times after it).
                stamp = utc_timestamp(when)
                # (INDEXED BY: left alone, SQLite computes min(seq) by walking the table in
                # rowid order from the oldest record.)
                first = db.execute(
                    "SELECT min(seq) FROM audit_records INDEXED BY audit_records_time "
                    "WHERE time >= ?",
                    (stamp,),
                ).fetchone()[0]
                if first is None:
                    return
                cursor = db.execute(
                    f"SELECT {_COLUMNS} FROM audit_records WHERE seq >= ? AND time >= ? "
                    "ORDER BY seq",
                    (first, stamp),
                )
            for row in cursor:
                yield _row_record(row)
        finally:
            db.close()

    def verify(self) -> VerifyResult:
        """Walk the whole chain (one consistent snapshot) and report the first bad record."""
        db = self._snapshot()
        try:
            cursor = db.execute(f"SELECT {_COLUMNS} FROM audit_records ORDER BY seq")
            return verify_chain(_safe_fields(row) for row in cursor)
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    """Row as fields for verification; a tampered ``parameters`` that is not JSON any more
    is kept as text, so that its hash fails instead of the walk crashing."""
    try:
        return _row_fields(row)
    except (ValueError, TypeError):
        return dict(zip(FIELDS, row, strict=True))
