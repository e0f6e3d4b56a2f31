"""Evidence about the audit log kept outside it: checkpoints, echo references and keys.

The hash chain shows edits *inside* the log, but whoever can write the file can cut its tail
or rewrite it from some record on with fresh hashes. Those are caught only against something
the writer could not change:

* a :class:`Checkpoint` (record count, last id, head hash, time; signed when a key is set),
  one line of text posted to the audit channel or kept in a file;
* the echo references ``audit A-000123 #3f0c9a1b2c3d`` the bot posts for every record
  (:func:`reference`, :func:`find_references`);
* an :class:`AuditKey`: with it each record and checkpoint carries an HMAC-SHA256 that
  nobody without the key can compute.

All of them become :class:`Witness` claims ("record A-000123 has a hash starting 3f0c...")
that :meth:`bot.runtime.audit.AuditStore.verify` checks. Chat-free.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from bot.errors import AuditError

SHORT_HASH_CHARS = 12
GENESIS_HASH = "0" * 64
NO_RECORD = "-"
MIN_KEY_BYTES = 16


def record_id(seq: int) -> str:
    """``A-000042`` for sequence number 42 (more digits once past 999999)."""
    return f"A-{seq:06d}"


def reference(record_id: str, record_hash: str) -> str:
    """What an echo shows to witness a record: ``audit A-000123 #3f0c9a1b2c3d``."""
    return f"audit {record_id} #{record_hash[:SHORT_HASH_CHARS]}"


_REFERENCE = re.compile(rf"\baudit (A-\d{{6,}}) #([0-9a-f]{{{SHORT_HASH_CHARS}}})\b")


@dataclass(frozen=True)
class Witness:
    """A claim from outside the log: record ``record_id``'s hash starts with ``hash_prefix``
    (a full hash for a checkpoint). ``source`` says where the claim comes from."""

    record_id: str
    hash_prefix: str
    source: str

    @property
    def seq(self) -> int:
        return int(self.record_id[2:])


def find_references(text: str, source: str = "echo") -> list[Witness]:
    """Every ``audit A-000123 #<12 hex>`` in ``text`` (an echo, a channel export...)."""
    return [Witness(m[1], m[2], f"{source} of {m[1]}") for m in _REFERENCE.finditer(text)]


# --- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditKey:
    """An HMAC-SHA256 key. ``id`` (``k-`` and 8 hex digits of the key's SHA-256) is written
    next to every signature, so that after a rotation each signature names its key."""

    id: str
    secret: bytes

    @classmethod
    def from_bytes(cls, secret: bytes) -> AuditKey:
        secret = secret.strip()
        if len(secret) < MIN_KEY_BYTES:
            raise AuditError(
                f"the audit key must be at least {MIN_KEY_BYTES} bytes "
                "(e.g. `openssl rand -hex 32 > audit.key`)"
            )
        return cls("k-" + hashlib.sha256(secret).hexdigest()[:8], secret)

    @classmethod
    def load(cls, path: Path) -> AuditKey:
        """The key in ``path`` (surrounding whitespace ignored)."""
        try:
            return cls.from_bytes(Path(path).read_bytes())
        except OSError as exc:
            raise AuditError(f"cannot read the audit key {path}: {exc.strerror}") from None

    def sign(self, message: str) -> str:
        """``<key id>:<hex HMAC-SHA256 of message>``."""
        mac = hmac.new(self.secret, message.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{self.id}:{mac}"


def check_signature(signature: str, message: str, keys: dict[str, AuditKey]) -> str | None:
    """None when ``signature`` is a valid signature of ``message`` by one of ``keys``;
    otherwise why not."""
    key_id, _, _ = signature.partition(":")
    key = keys.get(key_id)
    if key is None:
        return f"signed with key {key_id}, which was not given"
    if not hmac.compare_digest(key.sign(message), signature):
        return f"signature by key {key_id} does not match (forged or edited)"
    return None


# --- checkpoints ---------------------------------------------------------------------------

_CHECKPOINT = re.compile(
    r"audit checkpoint records=(?P<records>\d+) last=(?P<last>A-\d{6,}|-) "
    r"head=(?P<head>[0-9a-f]{64}) time=(?P<time>\S+)"
    r"(?: sig=(?P<sig>k-[0-9a-f]{8}:[0-9a-f]{64}))?"
)


@dataclass(frozen=True)
class Checkpoint:
    """The state of the log at one moment, small enough for one chat line.

    ``records`` is how many records the log held, ``last_id`` and ``head`` the id and hash of
    the newest (``-`` and 64 zeros for an empty log), ``time`` when the checkpoint was taken
    (UTC, the records' format). ``signature`` is set when the store has a key.
    """

    records: int
    last_id: str
    head: str
    time: str
    signature: str | None = None

    def body(self) -> str:
        """The signed part: everything but the signature."""
        return (
            f"audit checkpoint records={self.records} last={self.last_id} "
            f"head={self.head} time={self.time}"
        )

    def render(self) -> str:
        """One line: ``audit checkpoint records=123 last=A-000123 head=<64 hex> time=...``
        and `` sig=k-1a2b3c4d:<64 hex>`` when signed. :meth:`parse` reads it back."""
        return self.body() + (f" sig={self.signature}" if self.signature else "")

    def signed(self, key: AuditKey) -> Checkpoint:
        return replace(self, signature=key.sign(self.body()))

    def check(self, keys: dict[str, AuditKey]) -> str | None:
        """None when the signature is valid under ``keys``; otherwise why not."""
        if self.signature is None:
            return "the checkpoint is not signed"
        return check_signature(self.signature, self.body(), keys)

    def witness(self, source: str | None = None) -> Witness | None:
        """The claim this checkpoint makes about its last record (None for an empty log)."""
        if self.last_id == NO_RECORD:
            return None
        return Witness(self.last_id, self.head, source or f"checkpoint of {self.time}")

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """The checkpoint in ``text`` (a line, a post); ValueError if there is none."""
        found = cls.find_all(text)
        if not found:
            raise ValueError("no audit checkpoint line in the text")
        return found[0]

    @classmethod
    def find_all(cls, text: str) -> list[Checkpoint]:
        """Every checkpoint line in ``text``, in order."""
        return [
            cls(int(m["records"]), m["last"], m["head"], m["time"], m["sig"])
            for m in _CHECKPOINT.finditer(text)
        ]


def witnesses_in(texts: Iterable[str], source: str) -> tuple[list[Checkpoint], list[Witness]]:
    """Checkpoints and echo references found in ``texts`` (files, posts)."""
    checkpoints: list[Checkpoint] = []
    references: list[Witness] = []
    for text in texts:
        checkpoints.extend(Checkpoint.find_all(text))
        references.extend(find_references(text, source))
    return checkpoints, references
