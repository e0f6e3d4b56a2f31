"""Schema 2 of the audit store: job id, decider, new events, pending requests, malformed
input, migration of schema-1 files, checkpoints and echo references."""

import json
import sqlite3
from pathlib import Path

import pytest

from bot import cli
from bot.runtime.audit import (
    FILENAME,
    MAX_FIELD_CHARS,
    MAX_OUTCOME_CHARS,
    MAX_PARAMETER_CHARS,
    AuditEvent,
    AuditStore,
    verify_chain,
)
from bot.runtime.audit_evidence import AuditKey, Checkpoint, find_references
from bot.settings import get_settings

V1_DUMP = Path(__file__).parent / "data" / "audit_v1.sql"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSROOM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture
def store(data_dir):
    with AuditStore(data_dir / FILENAME) as store:
        yield store


MALFORMED = [
    "nginx\ud800",  # a lone surrogate: UTF-8 cannot encode it
    "a\udcff\udc80b",
    "nul\x00inside",
    "bell\x07 esc\x1b[31m cr\r del\x7f",
    "x" * 1_000_000,
]


@pytest.mark.parametrize("value", MALFORMED, ids=["surrogate", "surrogates", "nul", "ctl", "1MB"])
def test_any_value_can_be_appended_hashed_and_verified(data_dir, store, value):
    """Issue 9 item 7: the refusal of `nginx\\ud800` was never recorded."""
    record = store.append(
        "denied",
        action="restart",
        target=value,
        actor_name=value,
        parameters={"service": value, value[:10]: [value], "n": float("nan")},
        outcome=f"invalid service {value!r}",
        correlation_id=value,
        job_id=value,
    )
    assert len(record.target) <= MAX_FIELD_CHARS
    assert len(record.outcome) <= MAX_OUTCOME_CHARS
    assert len(record.parameters["service"]) <= MAX_PARAMETER_CHARS
    assert "\\ud800" in record.target or "\ud800" not in value
    record.to_json().encode("utf-8")  # encodable
    assert store.get(record.id) == record
    assert store.verify().ok
    with AuditStore(data_dir / FILENAME, read_only=True) as reader:
        assert reader.verify().ok
        assert reader.get(record.id) == record


def test_huge_and_deep_parameters_are_bounded(store):
    deep: dict = {}
    node = deep
    for _ in range(50):
        node["d"] = {}
        node = node["d"]
    record = store.append(
        "requested",
        action="x",
        parameters={"many": list(range(100_000)), "deep": deep, "obj": object()},
        correlation_id="c",
    )
    assert len(record.to_json()) < 100_000
    assert record.parameters["many"][-1].startswith("… [cut ")
    assert store.verify().ok


def test_job_id_and_decider_are_stored_and_filterable(data_dir, store, capsys):
    store.append("requested", action="deploy", correlation_id="C-1")
    store.append("approval_requested", action="deploy", correlation_id="C-1")
    store.append(
        "refused",
        action="deploy",
        decider_id="u-alice",
        decider_name="alice",
        outcome="you cannot approve your own request",
        correlation_id="C-1",
    )
    store.append(
        "granted", action="deploy", decider_id="u-bob", decider_name="bob", correlation_id="C-1"
    )
    started = store.append("started", action="deploy", correlation_id="C-1", job_id="J-11789")
    store.append("started", action="other", correlation_id="C-2", job_id="J-2")
    done = store.append("succeeded", action="deploy", correlation_id="C-1", job_id="J-11789")
    assert store.by_correlation("C-1")[3].decider_id == "u-bob"
    # a job's records include the request's records from before it had a job id
    whole = store.by_correlation("C-1")
    assert len(whole) == 6 and whole[-2:] == [started, done]
    assert store.by_job("J-11789") == whole
    assert store.lookup("j-11789") == whole
    assert store.lookup(started.id.lower()) == [started]
    assert [r.event for r in store.lookup("C-1")][:3] == [
        "requested",
        "approval_requested",
        "refused",
    ]
    assert store.last(1, job_id="J-11789") == [done]
    assert [r.id for r in store.since(None, job_id="J-11789")] == [r.id for r in whole]
    assert cli.main(["audit", "export", "--job", "J-11789"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["id"] for line in lines] == [r.id for r in whole]
    assert lines[-1]["job_id"] == "J-11789" and lines[-1]["decider_id"] == ""


def test_pending_requests_are_the_unanswered_questions(store):
    store.append("confirmation_requested", action="deploy", correlation_id="C-confirmed")
    store.append("granted", action="deploy", decider_id="u1", correlation_id="C-confirmed")
    then = store.append("approval_requested", action="deploy", correlation_id="C-confirmed")
    refused = store.append("approval_requested", action="deploy", correlation_id="C-refused")
    store.append("refused", action="deploy", decider_id="u1", correlation_id="C-refused")
    for end in ("rejected", "expired", "abandoned"):
        store.append("approval_requested", action="deploy", correlation_id=f"C-{end}")
        store.append(end, action="deploy", correlation_id=f"C-{end}")
    assert store.pending_requests() == [then, refused]
    store.append(AuditEvent.ABANDONED, action="deploy", correlation_id="C-confirmed")
    assert store.pending_requests() == [refused]


def test_a_schema_1_file_keeps_verifying_and_is_migrated(data_dir):
    data_dir.mkdir()
    path = data_dir / FILENAME
    db = sqlite3.connect(path)
    db.executescript(V1_DUMP.read_text(encoding="utf-8"))
    db.execute("PRAGMA user_version = 1")
    db.close()
    with AuditStore(path, read_only=True) as reader:  # before any migration
        old = reader.last(3)
        assert reader.verify().ok and old[0].job_id is None
        assert "job_id" not in old[0].to_json()
    with AuditStore(path) as store:
        assert store.verify().ok
        assert store.last(3) == old
        new = store.append("started", action="deploy", correlation_id="C-2", job_id="J-2")
        assert new.seq == 4 and new.prev_hash == old[-1].hash
        assert store.verify().ok
        exported = [json.loads(r.to_json()) for r in store.since(None)]
    assert verify_chain(exported).ok
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_checkpoint_renders_to_one_line_and_parses_back(store):
    empty = store.checkpoint()
    assert (empty.records, empty.last_id) == (0, "-")
    assert Checkpoint.parse(empty.render()) == empty
    records = [store.append("started", action="a", correlation_id="c") for _ in range(3)]
    mark = store.checkpoint()
    line = mark.render()
    assert "\n" not in line and line.startswith("audit checkpoint records=3 last=A-000003 head=")
    assert mark.head == records[-1].hash and mark.signature is None
    assert Checkpoint.parse(f"📌 {line} (posted by the bot)") == mark
    key = AuditKey.from_bytes(b"k" * 32)
    signed = mark.signed(key)
    assert Checkpoint.parse(signed.render()) == signed
    assert signed.check({key.id: key}) is None
    forged = Checkpoint.parse(signed.render().replace("records=3", "records=2"))
    assert "does not match" in forged.check({key.id: key})
    with pytest.raises(ValueError):
        Checkpoint.parse("no checkpoint here")


def test_echo_reference_carries_the_short_hash(store):
    record = store.append("started", action="a", correlation_id="c")
    assert record.short_hash == record.hash[:12]
    assert record.reference == f"audit {record.id} #{record.short_hash}"
    [witness] = find_references(f"✅ `!deploy` ok · {record.reference}")
    assert (witness.record_id, witness.hash_prefix) == (record.id, record.short_hash)
