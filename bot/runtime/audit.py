"""The audit log: one tamper-evident record per lifecycle event of every action.

Records live in one SQLite file (``audit.sqlite3`` under ``OPSROOM_DATA_DIR``) and are only
ever appended. Each record carries the SHA-256 of the record before it (``prev_hash``) and its
own SHA-256 (``hash``) over a canonical JSON serialization of all its other fields, so that an
edited, deleted, inserted or reordered record breaks the chain at a precise place that
:meth:`AuditStore.verify` reports.

Durability: ``append`` commits (WAL, ``synchronous=FULL``, so the WAL is fsync'ed) before it
returns. The runtime reports an action done only after its record is appended, so a record
the operator was told about cannot be lost by a crash.

What goes in: every text field is scrubbed with the store's redactor, made encodable
(a lone surrogate becomes the text ``\\ud800``), and only then bounded in length
(:data:`MAX_FIELD_CHARS`, :data:`MAX_OUTCOME_CHARS`, :data:`MAX_PARAMETER_CHARS`). Whatever a
caller passes, no secret and no unbounded value reaches the file, and ``append`` does not
fail on the content of a value.

Protection against edits, in layers:

* SQLite triggers abort every UPDATE and DELETE of the records table (accidents).
* The hash chain: an edit inside the log breaks it.
* The high-water mark ``audit.hwm`` next to the database: the newest record's checkpoint,
  kept outside the chained table. A cut tail, a deleted database or a rewritten last record
  no longer matches it, and record ids continue above it, so they never repeat.
* Outside evidence (``bot.runtime.audit_evidence``): checkpoints and echo references posted
  to chat, and an optional key that signs every record and checkpoint.

This module knows nothing about chat; it is used by the action runtime and the ``opsroom
audit`` command. See ``docs/audit.md``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from bot.errors import AuditError
from bot.redaction import Redactor, cut
from bot.runtime.audit_evidence import (
    GENESIS_HASH,
    NO_RECORD,
    SHORT_HASH_CHARS,
    AuditKey,
    Checkpoint,
    Witness,
    check_signature,
    record_id,
    reference,
)

__all__ = [
    "FIELDS",
    "FILENAME",
    "GENESIS_HASH",
    "AuditError",
    "AuditEvent",
    "AuditRecord",
    "AuditStore",
    "VerifyResult",
    "record_id",
    "verify_chain",
]

log = logging.getLogger(__name__)

FILENAME = "audit.sqlite3"
# The records of a job: those carrying its id and every other record of the same request
# (the request record is written before the request is authorized and given a job id).
OF_JOB = "correlation_id IN (SELECT correlation_id FROM audit_records WHERE job_id = ?)"
HIGH_WATER_SUFFIX = ".hwm"
SCHEMA_VERSION = 2

#: Bounds on what one record stores, applied after redaction. The outcome's bound is above
#: the runtime's own (3000), so that the store only ever cuts what a caller did not.
MAX_FIELD_CHARS = 1000
MAX_OUTCOME_CHARS = 4000
MAX_PARAMETER_CHARS = 1000  # each string (key or value) in ``parameters``
MAX_PARAMETER_NODES = 1000  # values (containers included) kept in ``parameters``
MAX_PARAMETER_DEPTH = 8
# The high-water mark is fsync'ed every this many appends (and at close); see _HighWater.
HIGH_WATER_SYNC_EVERY = 32


class AuditEvent(StrEnum):
    """A step in the life of one action invocation."""

    REQUESTED = "requested"
    DENIED = "denied"
    CONFIRMATION_REQUESTED = "confirmation_requested"
    APPROVAL_REQUESTED = "approval_requested"
    GRANTED = "granted"
    REJECTED = "rejected"
    REFUSED = "refused"
    EXPIRED = "expired"
    ABANDONED = "abandoned"
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
#: Events that open a question to a person; it stays pending until another event of the
#: invocation follows, except REFUSED (a decision refused leaves the question open).
REQUEST_EVENTS = frozenset({AuditEvent.CONFIRMATION_REQUESTED, AuditEvent.APPROVAL_REQUESTED})

# Fields added by schema 2: None in records written by schema 1, and then left out of the
# hashed body and of exports, so that those records keep their hashes.
V2_FIELDS = ("job_id", "decider_id", "decider_name")
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
    *V2_FIELDS,
    "signature",
)
_UNHASHED = ("hash", "signature")
_ADDED_COLUMNS = (*V2_FIELDS, "signature")

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
# Schema 2: columns added to a schema-1 table (NULL in its old records), then their index.
_JOB_INDEX = "CREATE INDEX IF NOT EXISTS audit_records_job ON audit_records (job_id, seq)"


@dataclass(frozen=True)
class AuditRecord:
    """One stored audit record; every text in it is already redacted and bounded.

    ``job_id`` is the job (``J-...``) once the invocation has one, ``""`` before; the
    ``decider_*`` pair is who granted, rejected or was refused a decision. The three are
    None in records written before schema 2. ``signature`` is the HMAC of ``hash`` when
    the store has a key.
    """

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
    job_id: str | None = None
    decider_id: str | None = None
    decider_name: str | None = None
    signature: str | None = None

    @property
    def short_hash(self) -> str:
        """The first 12 hex digits of ``hash``: what echoes show."""
        return self.hash[:SHORT_HASH_CHARS]

    @property
    def reference(self) -> str:
        """``audit A-000123 #3f0c9a1b2c3d``: put it in every echo of this record, so that
        the channel witnesses the log (``opsroom audit verify --online`` reads it back)."""
        return reference(self.id, self.hash)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field (``event`` as its string value); the fields
        a schema-1 record does not have, and an absent signature, are left out."""
        data = asdict(self)
        data["event"] = self.event.value
        for name in _ADDED_COLUMNS:
            if data[name] is None:
                del data[name]
        return data

    def to_json(self) -> str:
        """The record's canonical JSON, ``hash`` included: one line of a JSONL export."""
        return canonical_json(self.as_dict())


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a verification. ``first_bad`` is None exactly when ``ok``.

    ``witnessed`` counts the outside claims (checkpoints, echoes, the high-water mark) that
    were checked, ``signed`` the records whose signature was checked.
    """

    ok: bool
    records: int
    first_bad: str | None
    reason: str
    witnessed: int = 0
    signed: int = 0


def canonical_json(data: Mapping[str, Any]) -> str:
    """The one serialization every hash is computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical serialization of all fields except ``hash`` and
    ``signature`` (and the schema-2 fields a schema-1 record does not have)."""
    body = {
        key: value
        for key, value in fields.items()
        if key not in _UNHASHED and not (value is None and key in V2_FIELDS)
    }
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def utc_timestamp(when: datetime | None = None) -> str:
    """``2026-11-23T17:02:03.123Z``: the format of ``AuditRecord.time``. Naive means UTC."""
    when = when or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- making any value storable -------------------------------------------------------------


def encodable(text: str) -> str:
    """``text`` with every lone surrogate (``\\ud800``, which UTF-8 cannot encode) written
    out as the 6 characters ``\\ud800``: deterministic, so ``verify`` gets the same hash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _as_text(value: Any) -> str:
    try:
        return value if isinstance(value, str) else str(value)
    except Exception:  # a __str__ that raises: say what it was
        return f"<unprintable {type(value).__name__}>"


class _Budget:
    """How many more values ``_plain`` may keep."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes


def _plain(value: Any, budget: _Budget, depth: int = 0) -> Any:
    """``value`` as JSON data (dict with str keys, list, str, int, float, bool, None),
    bounded in depth and size; anything else becomes its ``str``."""
    budget.nodes -= 1
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_PARAMETER_DEPTH or not isinstance(
        value, Mapping | list | tuple | set | frozenset
    ):
        return _as_text(value)
    items = list(value.items()) if isinstance(value, Mapping) else [(None, v) for v in value]
    kept: list[tuple[Any, Any]] = []
    for key, item in items:
        if budget.nodes <= 0:
            break
        kept.append((key, _plain(item, budget, depth + 1)))
    dropped = len(items) - len(kept)
    if isinstance(value, Mapping):
        out = {_as_text(key): item for key, item in kept}
        if dropped:
            out["…"] = f"[cut {dropped} items]"
        return out
    result = [item for _, item in kept]
    if dropped:
        result.append(f"… [cut {dropped} items]")
    return result


def _bounded(value: Any) -> Any:
    """Every string in JSON data (keys too) made encodable and cut to its bound."""
    if isinstance(value, str):
        return cut(encodable(value), MAX_PARAMETER_CHARS)
    if isinstance(value, dict):
        return {cut(encodable(k), MAX_PARAMETER_CHARS): _bounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bounded(v) for v in value]
    return value


def _row_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    fields = dict(zip(FIELDS, row, strict=True))
    fields["parameters"] = json.loads(fields["parameters"])
    return fields


def _row_record(row: tuple[Any, ...]) -> AuditRecord:
    fields = _row_fields(row)
    fields["event"] = AuditEvent(fields["event"])
    return AuditRecord(**fields)


# --- verification --------------------------------------------------------------------------


class _Verifier:
    """One walk over records in sequence order: the chain, the signatures when ``keys`` is
    given, and the outside ``witnesses``. Keeps every problem; the earliest is reported."""

    def __init__(
        self,
        *,
        from_start: bool,
        witnesses: Iterable[Witness],
        keys: dict[str, AuditKey] | None,
    ) -> None:
        self.from_start = from_start
        self.keys = keys
        self.wanted: dict[int, list[Witness]] = {}
        for witness in witnesses:
            self.wanted.setdefault(witness.seq, []).append(witness)
        self.witnessed = 0
        self.signed = 0
        self.records = 0
        self.last_seq = 0
        self.chain_ok = True
        self.prev_seq: int | None = None
        self.prev_hash = GENESIS_HASH
        self.problems: list[tuple[int, str, str]] = []  # (seq, record id, reason)

    def problem(self, seq: int, rid: str, reason: str) -> None:
        self.problems.append((seq, rid, reason))

    def add(self, fields: Mapping[str, Any]) -> None:
        self.records += 1
        seq = fields.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            if self.chain_ok:
                self.chain_ok = False
                self.problem(
                    self.last_seq + 1, str(fields.get("id")), f"record unreadable: seq is {seq!r}"
                )
            return
        self.last_seq = max(self.last_seq, seq)
        if self.chain_ok:
            bad = _check(fields, self.prev_seq, self.prev_hash, self.from_start)
            if bad is None:
                self.prev_seq, self.prev_hash = seq, fields["hash"]
            else:
                self.chain_ok = False
                self.problem(seq, *bad)
        for witness in self.wanted.pop(seq, ()):
            self.witnessed += 1
            if not str(fields.get("hash")).startswith(witness.hash_prefix):
                self.problem(
                    seq, witness.record_id, f"disagrees with the {witness.source} (rewritten)"
                )
        if self.keys is not None:
            self._check_signature(seq, fields)

    def _check_signature(self, seq: int, fields: Mapping[str, Any]) -> None:
        assert self.keys is not None
        signature = fields.get("signature")
        rid = record_id(seq)
        if not signature:
            if self.signed:
                self.problem(seq, rid, "unsigned record after signed ones (forged without the key)")
            return
        self.signed += 1
        wrong = check_signature(str(signature), str(fields.get("hash")), self.keys)
        if wrong:
            self.problem(seq, rid, wrong)

    def finish(self) -> VerifyResult:
        for seq, witnesses in self.wanted.items():
            for witness in witnesses:
                self.witnessed += 1
                where = "the log ends before it" if seq > self.last_seq else "it is not in the log"
                self.problem(
                    seq,
                    witness.record_id,
                    f"named by the {witness.source}, but {where} (records deleted or truncated)",
                )
        if self.keys is not None and self.records and not self.signed:
            self.problem(
                1, record_id(1), "no record is signed (rewritten without the key, or never signed)"
            )
        if not self.problems:
            return VerifyResult(True, self.records, None, "ok", self.witnessed, self.signed)
        _, rid, reason = min(self.problems, key=lambda p: p[0])
        return VerifyResult(False, self.records, rid, reason, self.witnessed, self.signed)


def verify_chain(
    rows: Iterable[Mapping[str, Any]],
    *,
    from_start: bool = True,
    witnesses: Iterable[Witness] = (),
    keys: Iterable[AuditKey] | None = None,
) -> VerifyResult:
    """Walk records (dicts of every field, in sequence order) and report the first that
    does not verify.

    Used by :meth:`AuditStore.verify` and usable on a JSONL export shipped elsewhere. With
    ``from_start=False`` (an export made with ``--since``) the first record's ``seq`` and
    ``prev_hash`` are taken as given instead of requiring 1 and 64 zeros.

    Checks, in order, for each record: its ``seq`` follows the previous one (a gap means a
    deleted record), its ``prev_hash`` is the previous record's hash (else a record was
    deleted, inserted or reordered), its ``id`` matches its ``seq``, and its own hash. Then
    each :class:`Witness` (a checkpoint's or an echo's claim about a record's hash) must
    agree with the record it names, and that record must exist. With ``keys``, every
    record from the first signed one on must carry a valid signature by one of them.
    """
    verifier = _Verifier(
        from_start=from_start,
        witnesses=witnesses,
        keys=None if keys is None else {key.id: key for key in keys},
    )
    for fields in rows:
        verifier.add(fields)
    return verifier.finish()


def _check(
    fields: Mapping[str, Any], prev_seq: int | None, prev_hash: str, from_start: bool
) -> tuple[str, str] | None:
    """(record id, reason) when this record does not follow ``prev_seq``/``prev_hash``."""
    seq = fields["seq"]
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


# --- the high-water mark -------------------------------------------------------------------


class _HighWater:
    """``audit.hwm``: one checkpoint line for the newest record ever appended, kept outside
    the database (it survives a cut tail, a deleted table, a deleted database file).

    Written in place (fixed size, under ``flock``) after each commit and never lowered.
    Every write lands in the page cache at once, which every process sees and a crash of
    the bot does not lose; it is fsync'ed every :data:`HIGH_WATER_SYNC_EVERY` appends and
    at close (fsync'ing each one would halve the append rate), so a power cut can leave it
    a few records behind: behind is harmless, it is only ever compared as a lower bound.
    """

    SIZE = 256

    def __init__(self, path: Path, *, writable: bool) -> None:
        self.path = path
        self._fd: int | None = None
        self._unsynced = 0
        self._parsed: tuple[bytes, Checkpoint | None] = (b"", None)  # last read, parsed
        if writable:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def read(self) -> Checkpoint | None:
        """The mark, None when there is none; AuditError when it is not a checkpoint."""
        try:
            if self._fd is not None:
                raw = os.pread(self._fd, self.SIZE, 0)
            else:
                raw = self.path.read_bytes()[: self.SIZE]
        except FileNotFoundError:
            return None
        if raw == self._parsed[0]:  # unchanged since the last read: the common case
            return self._parsed[1]
        text = raw.decode("utf-8", "replace").strip("\x00 \n")
        if not text:
            return None
        try:
            mark = Checkpoint.parse(text)
        except ValueError:
            raise AuditError(f"{self.path} is not a high-water mark (edited?)") from None
        self._parsed = (raw, mark)
        return mark

    def seq(self) -> int:
        try:
            mark = self.read()
        except AuditError:
            return 0
        return 0 if mark is None or mark.last_id == NO_RECORD else int(mark.last_id[2:])

    def advance(self, mark: Checkpoint) -> None:
        """Raise the mark to ``mark`` unless it is already at or above it."""
        assert self._fd is not None
        line = (mark.render() + "\n").encode("utf-8").ljust(self.SIZE, b" ")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if self.seq() < int(mark.last_id[2:]):
                os.pwrite(self._fd, line, 0)
                self._parsed = (line, mark)
                self._unsynced += 1
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        if self._unsynced >= HIGH_WATER_SYNC_EVERY:
            self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None


# --- the store -----------------------------------------------------------------------------


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
        key: AuditKey | None = None,
    ) -> None:
        """Open (and create, unless ``read_only``) the store at ``path``.

        ``redact(obj)`` returns ``obj`` with secrets scrubbed (the bot passes its
        ``Redactor.scrub_obj``; without one, the built-in patterns of
        :class:`bot.redaction.Redactor` apply). It is applied to every text field and to the
        parameters before they are bounded, hashed and stored. ``read_only`` opens an
        existing file without writing to it (the ``opsroom audit`` command), and ``append``
        is refused. With ``key``, every record and checkpoint is signed.
        """
        self.path = Path(path)
        self._redact = redact or Redactor().scrub_obj
        self._read_only = read_only
        self._key = key
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
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._connect()
            self._migrate()
        self._select = self._select_list()
        self._mark = _HighWater(
            self.path.with_name(self.path.stem + HIGH_WATER_SUFFIX), writable=not read_only
        )

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            self._db.close()
            raise AuditError(f"{self.path} was written by a newer Opsroom (schema {version})")
        self._db.execute("PRAGMA journal_mode=WAL")
        # Re-run at every open: also puts back triggers someone dropped.
        self._db.executescript(SCHEMA)
        present = self._columns()
        for name in _ADDED_COLUMNS:
            if name not in present:  # schema 1: old records keep NULL, hence their hashes
                self._db.execute(f"ALTER TABLE audit_records ADD COLUMN {name} TEXT")
        self._db.execute(_JOB_INDEX)
        if version < SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _columns(self) -> set[str]:
        return {row[1] for row in self._db.execute("PRAGMA table_info(audit_records)")}

    def _select_list(self) -> str:
        """The SELECT list of FIELDS; a schema-1 file opened read-only has NULL for the
        columns it lacks."""
        present = self._columns()
        return ", ".join(name if name in present else f"NULL AS {name}" for name in FIELDS)

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
    def _text(self, value: str, limit: int) -> str:
        """Scrub, make encodable, then bound: the order that lets no piece of a secret by."""
        if not value:
            return value
        return cut(encodable(_as_text(self._redact(value))), limit)

    def _parameters(self, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
        plain = _plain(dict(parameters or {}), _Budget(MAX_PARAMETER_NODES))
        bounded = _bounded(self._redact(plain))
        return bounded if isinstance(bounded, dict) else {"parameters": _as_text(bounded)}

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
        job_id: str = "",
        decider_id: str = "",
        decider_name: str = "",
    ) -> AuditRecord:
        """Append one record and return it once it is committed to disk.

        ``job_id``: the job (``J-...``) once the invocation has one (empty before). The
        ``decider_id``/``decider_name`` pair: who granted, rejected, or was refused a
        decision (immutable user id, username as a label). Every text is redacted, made
        encodable and bounded here, whatever the caller did; the content of a value never
        makes ``append`` fail (a wrong *type* is a programming error: TypeError).
        """
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
            "job_id": job_id,
            "decider_id": decider_id,
            "decider_name": decider_name,
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
            duration_ms = round(duration_ms) if math.isfinite(duration_ms) else None
        if parameters is not None and not isinstance(parameters, Mapping):
            raise TypeError(f"audit parameters must be a mapping, got {type(parameters).__name__}")
        texts = {name: self._text(value, MAX_FIELD_CHARS) for name, value in texts.items()}
        stored_outcome = self._text(outcome, MAX_OUTCOME_CHARS)
        params = self._parameters(parameters)

        with self._lock:
            self._check_writable()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                last = db.execute(
                    "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                # Above the high-water mark too: after a cut tail, ids continue where they
                # were (the gap stays visible to verify) instead of naming new records
                # with ids the channel has already shown.
                seq = max(last[0] if last else 0, self._mark.seq()) + 1
                fields: dict[str, Any] = {
                    "id": record_id(seq),
                    "seq": seq,
                    "time": utc_timestamp(),
                    "event": event.value,
                    **texts,
                    "parameters": params,
                    "outcome": stored_outcome,
                    "duration_ms": duration_ms,
                    "prev_hash": last[1] if last else GENESIS_HASH,
                }
                fields["hash"] = record_hash(fields)
                fields["signature"] = self._key.sign(fields["hash"]) if self._key else None
                row = {**fields, "parameters": canonical_json(params)}
                db.execute(
                    f"INSERT INTO audit_records ({', '.join(FIELDS)}) "
                    f"VALUES ({', '.join('?' * len(FIELDS))})",
                    tuple(row[name] for name in FIELDS),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            self._mark.advance(self._checkpoint(seq, fields["hash"], fields["time"]))
        fields["event"] = event
        return AuditRecord(**fields)

    def _checkpoint(self, seq: int, head: str, time: str) -> Checkpoint:
        mark = Checkpoint(seq, record_id(seq) if seq else NO_RECORD, head, time)
        return mark.signed(self._key) if self._key else mark

    def checkpoint(self) -> Checkpoint:
        """The log's state now: length (the last record's sequence number), last id, head
        hash, time; signed when the store has a key. Post ``checkpoint().render()`` where
        the bot's host cannot edit it (the audit channel); ``verify`` checks it later."""
        last = self.last(1)
        if not last:
            return self._checkpoint(0, GENESIS_HASH, utc_timestamp())
        return self._checkpoint(last[0].seq, last[0].hash, utc_timestamp())

    def high_water(self) -> Checkpoint | None:
        """The high-water mark: the checkpoint of the newest record ever appended."""
        return self._mark.read()

    def _check_writable(self) -> None:
        if self._closed:
            raise AuditError("the audit store is closed")
        if self._read_only:
            raise AuditError("the audit store is open read-only")

    # --- reading ---------------------------------------------------------------------------
    def _query(self, where: str, args: tuple[Any, ...] = ()) -> list[AuditRecord]:
        with self._lock:
            if self._closed:
                raise AuditError("the audit store is closed")
            rows = self._db.execute(
                f"SELECT {self._select} FROM audit_records {where}", args
            ).fetchall()
        return [_row_record(row) for row in rows]

    def last(self, n: int = 10, *, job_id: str | None = None) -> list[AuditRecord]:
        """The ``n`` newest records (of one job when ``job_id`` is given), newest last."""
        if n <= 0:
            return []
        if job_id is None:
            records = self._query("ORDER BY seq DESC LIMIT ?", (n,))
        else:
            records = self._query(f"WHERE {OF_JOB} ORDER BY seq DESC LIMIT ?", (job_id, n))
        return records[::-1]

    def get(self, record_id: str) -> AuditRecord | None:
        """The record with this id (``A-000042``), or None."""
        records = self._query("WHERE id = ?", (record_id,))
        return records[0] if records else None

    def by_correlation(self, correlation_id: str) -> list[AuditRecord]:
        """Every event of one action invocation, in order."""
        return self._query("WHERE correlation_id = ? ORDER BY seq", (correlation_id,))

    def by_job(self, job_id: str) -> list[AuditRecord]:
        """Every record of one job (``J-...``), in order: the request record before the
        job id was given out included (it shares the correlation id)."""
        return self._query(f"WHERE {OF_JOB} ORDER BY seq", (job_id,))

    def lookup(self, ref: str) -> list[AuditRecord]:
        """What ``!audit show <ref>`` shows: the record ``A-...``, else the records of the
        job ``J-...``, else those of the invocation with that correlation id; in order."""
        ref = ref.strip()
        if ref.upper().startswith("A-"):
            record = self.get(ref.upper())
            return [record] if record else []
        return self.by_job(ref.upper()) or self.by_correlation(ref)

    def unfinished(self) -> list[AuditRecord]:
        """STARTED records with no terminal event for their correlation id after them.

        At start-up, the runtime records ``interrupted`` for each: those actions were running
        when the previous process died.
        """
        terminal = ", ".join(f"'{event.value}'" for event in sorted(TERMINAL_EVENTS))
        return self._query(
            "AS s WHERE s.event = 'started' "
            "AND NOT EXISTS (SELECT 1 FROM audit_records AS t "
            "WHERE t.correlation_id = s.correlation_id AND t.seq > s.seq "
            f"AND t.event IN ({terminal})) ORDER BY s.seq"
        )

    def pending_requests(self) -> list[AuditRecord]:
        """``confirmation_requested``/``approval_requested`` records that nothing answered:
        no later record of their invocation other than ``refused`` (a refused decision
        leaves the question open). At start-up, the runtime records ``abandoned`` for each:
        the process that asked is gone, so nobody can answer any more."""
        requests = ", ".join(f"'{event.value}'" for event in sorted(REQUEST_EVENTS))
        return self._query(
            f"AS r WHERE r.event IN ({requests}) "
            "AND NOT EXISTS (SELECT 1 FROM audit_records AS t "
            "WHERE t.correlation_id = r.correlation_id AND t.seq > r.seq "
            f"AND t.event != '{AuditEvent.REFUSED.value}') ORDER BY r.seq"
        )

    def _snapshot(self) -> sqlite3.Connection:
        """A private connection in a read transaction: a stable view for long walks."""
        with self._lock:
            if self._closed:
                raise AuditError("the audit store is closed")
        db = self._connect()
        db.execute("BEGIN")
        return db

    def since(self, when: datetime | None, *, job_id: str | None = None) -> Iterator[AuditRecord]:
        """Records whose time is at or after ``when`` (naive means UTC), in sequence order;
        every record when ``when`` is None; only one job's with ``job_id``. Streams; safe to
        append while iterating."""
        db = self._snapshot()
        job = "" if job_id is None else f" AND {OF_JOB}"
        jargs: tuple[Any, ...] = () if job_id is None else (job_id,)
        try:
            if when is None:
                cursor = db.execute(
                    f"SELECT {self._select} FROM audit_records WHERE 1{job} ORDER BY seq", jargs
                )
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
                    f"SELECT {self._select} FROM audit_records WHERE seq >= ? AND time >= ?"
                    f"{job} ORDER BY seq",
                    (first, stamp, *jargs),
                )
            for row in cursor:
                yield _row_record(row)
        finally:
            db.close()

    def verify(
        self,
        checkpoints: Iterable[Checkpoint] = (),
        references: Iterable[Witness] = (),
        keys: Iterable[AuditKey] | None = None,
    ) -> VerifyResult:
        """Walk the whole chain (one consistent snapshot) and report the first bad record.

        Also checked: the high-water mark (a cut tail, a deleted log, a rewritten last
        record), and the outside evidence given: ``checkpoints`` (from a file or the audit
        channel) and echo ``references``. With ``keys``, signatures are required and
        checked: on every record from the first signed one, on the high-water mark and on
        every checkpoint.
        """
        keyring = None if keys is None else {key.id: key for key in keys}
        witnesses = list(references)
        extra: list[tuple[int, str, str]] = []
        try:
            mark = self._mark.read()
        except AuditError as exc:
            mark = None
            extra.append((0, NO_RECORD, str(exc)))
        sources: list[tuple[Checkpoint, str | None]] = [(cp, None) for cp in checkpoints]
        if mark is not None:
            sources.append((mark, f"high-water mark {self._mark.path.name}"))
        for checkpoint, source in sources:
            claim = checkpoint.witness(source)
            if claim is not None:
                witnesses.append(claim)
            if keyring is not None and (wrong := checkpoint.check(keyring)):
                about = claim.source if claim else f"checkpoint of {checkpoint.time}"
                extra.append((claim.seq if claim else 0, checkpoint.last_id, f"{about}: {wrong}"))
        db = self._snapshot()
        try:
            cursor = db.execute(f"SELECT {self._select} FROM audit_records ORDER BY seq")
            verifier = _Verifier(from_start=True, witnesses=witnesses, keys=keyring)
            has_v2 = False
            for row in cursor:
                fields = _safe_fields(row)
                has_v2 = has_v2 or fields.get("job_id") is not None
                verifier.add(fields)
        finally:
            db.close()
        if mark is None and has_v2 and not extra:
            extra.append(
                (0, NO_RECORD, f"the high-water mark {self._mark.path.name} is missing (deleted?)")
            )
        verifier.problems.extend(extra)
        return verifier.finish()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()
                self._mark.close()

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
