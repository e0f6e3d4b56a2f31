import csv
import hashlib
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot import cli
from bot.runtime.audit import (
    FILENAME,
    GENESIS_HASH,
    AuditError,
    AuditEvent,
    AuditStore,
    verify_chain,
)
from bot.settings import get_settings

OPSROOM = Path(sys.executable).with_name("opsroom")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("MATTERMOST_", "OPSROOM_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPSROOM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture
def store(data_dir):
    store = AuditStore(data_dir / FILENAME)
    yield store
    store.close()


def fill(store, n, correlation="J-1", pause=0.0):
    """Append ``n`` records; ``pause`` seconds between them gives each a distinct time."""
    records = []
    for i in range(1, n + 1):
        time.sleep(pause)
        records.append(
            store.append(
                AuditEvent.STARTED,
                action="deploy",
                target=f"web-{i}",
                actor_id="u123",
                actor_name="alice",
                channel_id="c1",
                post_id=f"p{i}",
                parameters={"version": f"1.{i}", "hosts": ["a", "b"]},
                correlation_id=f"{correlation}-{i}",
            )
        )
    return records


def raw(path):
    """A plain sqlite3 session with the append-only triggers dropped: the attacker."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
    db.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
    return db


def run_cli(data_dir, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATTERMOST_", "OPSROOM_"))}
    env["OPSROOM_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [str(OPSROOM), "audit", *args],
        env=env,
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- round trips ---------------------------------------------------------------------------


def test_append_returns_the_stored_record_with_every_field(store):
    record = store.append(
        "requested",
        action="deploy",
        target="prod",
        actor_id="u123",
        actor_name="alice",
        trigger="chat",
        channel_id="c1",
        post_id="p1",
        parameters={"version": "1.2.3", "dry_run": False, "replicas": 3},
        outcome="ok",
        duration_ms=1500,
        correlation_id="J-42",
    )
    assert record.id == "A-000001"
    assert record.seq == 1
    assert record.event is AuditEvent.REQUESTED
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record.time)
    assert abs(datetime.fromisoformat(record.time) - datetime.now(UTC)) < timedelta(seconds=5)
    assert (record.action, record.target, record.actor_id, record.actor_name) == (
        "deploy",
        "prod",
        "u123",
        "alice",
    )
    assert (record.trigger, record.channel_id, record.post_id) == ("chat", "c1", "p1")
    assert record.parameters == {"version": "1.2.3", "dry_run": False, "replicas": 3}
    assert (record.outcome, record.duration_ms, record.correlation_id) == ("ok", 1500, "J-42")
    assert record.prev_hash == GENESIS_HASH
    assert store.get("A-000001") == record
    assert store.get("A-000002") is None


def test_event_values_are_lowercase_snake():
    assert AuditEvent.TIMED_OUT.value == "timed_out"
    assert AuditEvent.CONFIRMATION_REQUESTED.value == "confirmation_requested"
    assert all(event.value == event.name.lower() for event in AuditEvent)
    assert len(AuditEvent) == 15
    assert AuditEvent.REFUSED.value == "refused" and AuditEvent.ABANDONED.value == "abandoned"


def test_hash_is_sha256_of_the_canonical_fields_and_chains(store):
    first, second = (
        store.append("requested", action="a", correlation_id="c"),
        store.append("started", action="a", parameters={"ü": "é", "b": 1}, correlation_id="c"),
    )
    body = second.as_dict()
    del body["hash"]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert second.hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert second.prev_hash == first.hash
    assert second.id == "A-000002"


def test_last_returns_newest_last(store):
    records = fill(store, 15)
    assert [r.id for r in store.last(3)] == ["A-000013", "A-000014", "A-000015"]
    assert store.last() == records[-10:]
    assert store.last(100) == records
    assert store.last(0) == []


def test_by_correlation_returns_one_invocation_in_order(store):
    for event in ("requested", "granted", "started"):
        store.append(event, action="deploy", correlation_id="J-1")
        store.append(event, action="restart", correlation_id="J-2")
    store.append("succeeded", action="deploy", correlation_id="J-1", duration_ms=20)
    events = [r.event for r in store.by_correlation("J-1")]
    assert events == ["requested", "granted", "started", "succeeded"]
    assert {r.action for r in store.by_correlation("J-2")} == {"restart"}
    assert store.by_correlation("J-3") == []


def test_since_returns_records_at_or_after_a_time(store):
    records = fill(store, 5, pause=0.003)
    cut = datetime.fromisoformat(records[2].time)
    assert [r.id for r in store.since(cut)] == ["A-000003", "A-000004", "A-000005"]
    assert list(store.since(None)) == records
    assert list(store.since(cut + timedelta(days=1))) == []
    # a naive time is UTC; an aware one is converted
    assert [r.id for r in store.since(cut.replace(tzinfo=None))] == [r.id for r in store.since(cut)]
    plus_two = cut.astimezone(timezone(timedelta(hours=2)))
    assert [r.id for r in store.since(plus_two)] == [r.id for r in store.since(cut)]


def test_since_can_be_iterated_while_appending(store):
    fill(store, 3)
    seen = []
    for record in store.since(None):
        seen.append(record.id)
        store.append("failed", action="x", correlation_id="c")  # no deadlock
    assert seen == ["A-000001", "A-000002", "A-000003"]  # a snapshot
    assert len(store.last(100)) == 6


def test_reopening_continues_the_chain(data_dir):
    path = data_dir / FILENAME
    with AuditStore(path) as store:
        first = fill(store, 2)
    with AuditStore(path) as store:
        third = store.append("started", action="x", correlation_id="c")
        assert third.id == "A-000003"
        assert third.prev_hash == first[-1].hash
        assert store.verify().ok


def test_append_validates_its_arguments(store):
    with pytest.raises(ValueError):
        store.append("exploded", action="deploy", correlation_id="c")
    with pytest.raises(ValueError):
        store.append("started", action="deploy", correlation_id="")
    with pytest.raises(TypeError):
        store.append("started", action="deploy", parameters=["x"], correlation_id="c")
    with pytest.raises(TypeError):
        store.append("started", action="deploy", target=None, correlation_id="c")
    assert store.last() == []


def test_parameters_are_stored_as_they_read_back(store):
    record = store.append(
        "started",
        action="deploy",
        parameters={"path": Path("/srv/app"), "hosts": ("a", "b"), 3: "x"},
        correlation_id="c",
    )
    assert record.parameters == {"path": "/srv/app", "hosts": ["a", "b"], "3": "x"}
    assert store.get(record.id) == record
    assert store.verify().ok


def test_the_file_is_in_wal_mode(store, data_dir):
    store.append("started", action="deploy", correlation_id="c")
    db = sqlite3.connect(data_dir / FILENAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- durability ----------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bot.runtime.audit import AuditStore

    store = AuditStore(Path(sys.argv[1]))
    i = 0
    while True:
        record = store.append("started", action="deploy", parameters={"i": i},
                              correlation_id=f"J-{i}")
        print(record.id, flush=True)
        i += 1
    """
)


def test_every_returned_record_survives_sigkill(data_dir):
    path = data_dir / FILENAME
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    printed = []
    try:
        for line in proc.stdout:
            printed.append(line.strip())
            if len(printed) == 150:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
    printed += rest.split()
    assert proc.returncode == -signal.SIGKILL
    assert len(printed) >= 150
    with AuditStore(path) as store:
        assert all(store.get(record_id) is not None for record_id in printed)
        result = store.verify()
        assert result.ok, result
        assert result.records >= len(printed)


# --- tampering -----------------------------------------------------------------------------


def assert_broken_at(data_dir, store, record_id, words):
    result = store.verify()
    assert not result.ok
    assert result.first_bad == record_id
    assert any(word in result.reason for word in words), result.reason
    done = run_cli(data_dir, "verify")
    assert done.returncode == 1, done
    assert done.stdout.startswith(f"audit log BROKEN at {record_id}: "), done.stdout


def test_an_untouched_log_verifies(store, data_dir):
    fill(store, 10)
    # witnessed: the high-water mark kept next to the database agrees with the last record
    assert store.verify() == store.verify().__class__(
        ok=True, records=10, first_bad=None, reason="ok", witnessed=1
    )
    done = run_cli(data_dir, "verify")
    assert done.returncode == 0
    assert done.stdout.startswith("audit log OK: 10 records\noffline check: "), done.stdout


def test_an_edited_record_is_reported(store, data_dir):
    fill(store, 10)
    raw(data_dir / FILENAME).execute(
        "UPDATE audit_records SET outcome = 'ok, nothing to see' WHERE seq = 5"
    )
    assert_broken_at(data_dir, store, "A-000005", ["hash mismatch"])


def test_edited_parameters_are_reported(store, data_dir):
    fill(store, 10)
    raw(data_dir / FILENAME).execute(
        """UPDATE audit_records SET parameters = '{"version":"6.6.6"}' WHERE seq = 5"""
    )
    assert_broken_at(data_dir, store, "A-000005", ["hash mismatch"])


def test_a_deleted_record_is_reported_at_the_next(store, data_dir):
    fill(store, 10)
    raw(data_dir / FILENAME).execute("DELETE FROM audit_records WHERE seq = 5")
    assert_broken_at(data_dir, store, "A-000006", ["gap", "chain broken"])
    assert "A-000004" in store.verify().reason


def test_a_deleted_first_record_is_reported(store, data_dir):
    fill(store, 3)
    raw(data_dir / FILENAME).execute("DELETE FROM audit_records WHERE seq = 1")
    assert_broken_at(data_dir, store, "A-000002", ["gap"])


def test_swapped_records_are_reported_at_the_first(store, data_dir):
    fill(store, 10)
    db = raw(data_dir / FILENAME)
    columns = [c for c in store.get("A-000001").as_dict() if c != "seq"]
    rows = {
        seq: db.execute(
            f"SELECT {', '.join(columns)} FROM audit_records WHERE seq = ?", (seq,)
        ).fetchone()
        for seq in (3, 7)
    }
    assignments = ", ".join(f"{c} = ?" for c in columns)
    db.execute("BEGIN")
    db.execute("UPDATE audit_records SET id = 'tmp3' WHERE seq = 3")  # id is UNIQUE
    db.execute(f"UPDATE audit_records SET {assignments} WHERE seq = 7", (*rows[3],))
    db.execute(f"UPDATE audit_records SET {assignments} WHERE seq = 3", (*rows[7],))
    db.execute("COMMIT")
    assert_broken_at(data_dir, store, "A-000003", ["chain broken", "hash mismatch"])


def test_an_edited_record_with_a_recomputed_hash_is_reported_at_the_next(store, data_dir):
    fill(store, 10)
    forged = store.get("A-000005").as_dict()
    forged["actor_name"] = "mallory"
    body = {k: v for k, v in forged.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    new_hash = hashlib.sha256(canonical.encode()).hexdigest()
    raw(data_dir / FILENAME).execute(
        "UPDATE audit_records SET actor_name = 'mallory', hash = ? WHERE seq = 5", (new_hash,)
    )
    assert_broken_at(data_dir, store, "A-000006", ["chain broken"])
    assert "A-000005" in store.verify().reason


def test_triggers_refuse_update_and_delete(store, data_dir):
    fill(store, 3)
    db = sqlite3.connect(data_dir / FILENAME, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_records SET outcome = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit_records WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit_records")
    assert store.verify().ok
    assert len(store.last(10)) == 3


def test_verify_cli_without_a_log_exits_2_and_creates_nothing(data_dir):
    done = run_cli(data_dir, "verify")
    assert done.returncode == 2
    assert "no audit log" in done.stderr
    assert not data_dir.exists()


# --- concurrency ---------------------------------------------------------------------------


def test_32_threads_appending_keep_one_linear_chain(store):
    barrier = threading.Barrier(32)
    errors = []

    def work(n):
        try:
            barrier.wait()
            for i in range(50):
                store.append("started", action="t", correlation_id=f"T{n}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    records = list(store.since(None))
    assert len(records) == 1600
    assert [r.seq for r in records] == list(range(1, 1601))
    assert len({r.correlation_id for r in records}) == 1600
    result = store.verify()
    assert result.ok and result.records == 1600, result


PROCESS_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bot.runtime.audit import AuditStore

    store = AuditStore(Path(sys.argv[1]))
    for i in range(40):
        store.append("started", action="p", correlation_id=f"{sys.argv[2]}-{i}")
    """
)


def test_processes_appending_to_one_file_keep_one_linear_chain(data_dir):
    path = data_dir / FILENAME
    AuditStore(path).close()
    procs = [
        subprocess.Popen([sys.executable, "-c", PROCESS_WRITER, str(path), f"P{n}"], cwd=ROOT)
        for n in range(3)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with AuditStore(path) as store:
        result = store.verify()
        assert result.ok and result.records == 120, result
        assert [r.seq for r in store.since(None)] == list(range(1, 121))


# --- unfinished, redaction -----------------------------------------------------------------


def test_unfinished_lists_started_actions_without_a_terminal_event(store):
    for job, end in [
        ("J-ok", "succeeded"),
        ("J-fail", "failed"),
        ("J-cancel", "cancelled"),
        ("J-timeout", "timed_out"),
        ("J-interrupted", "interrupted"),
        ("J-running", None),
        ("J-also-running", None),
    ]:
        store.append("requested", action="deploy", correlation_id=job)
        store.append("started", action="deploy", correlation_id=job)
        if end:
            store.append(end, action="deploy", correlation_id=job)
    store.append("requested", action="deploy", correlation_id="J-waiting")
    store.append("approval_requested", action="deploy", correlation_id="J-waiting")
    unfinished = store.unfinished()
    assert [r.correlation_id for r in unfinished] == ["J-running", "J-also-running"]
    assert all(r.event is AuditEvent.STARTED for r in unfinished)
    store.append("interrupted", action="deploy", correlation_id="J-running")
    assert [r.correlation_id for r in store.unfinished()] == ["J-also-running"]


def test_a_restart_after_a_terminal_event_is_unfinished_again(store):
    store.append("started", action="deploy", correlation_id="J-1")
    store.append("failed", action="deploy", correlation_id="J-1")
    retry = store.append("started", action="deploy", correlation_id="J-1")
    assert store.unfinished() == [retry]


def test_redaction_is_applied_before_hashing_and_storing(data_dir):
    seen = []

    def scrub(obj):
        if isinstance(obj, str):
            return obj.replace("hunter2-secret", "[REDACTED]")
        if isinstance(obj, dict):
            return {key: scrub(value) for key, value in obj.items()}
        if isinstance(obj, list):
            return [scrub(item) for item in obj]
        return obj

    def redact(obj):
        seen.append(obj)
        return scrub(obj)

    path = data_dir / FILENAME
    with AuditStore(path, redact=redact) as store:
        record = store.append(
            "failed",
            action="deploy",
            parameters={"password": "hunter2-secret", "nested": [{"token": "x hunter2-secret"}]},
            outcome="login failed with hunter2-secret",
            correlation_id="c",
        )
        # every text is scrubbed, the parameters as a whole (secret-named keys included)
        assert "login failed with hunter2-secret" in seen
        assert {"password": "hunter2-secret", "nested": [{"token": "x hunter2-secret"}]} in seen
        assert record.parameters == {
            "password": "[REDACTED]",
            "nested": [{"token": "x [REDACTED]"}],
        }
        assert record.outcome == "login failed with [REDACTED]"
        assert store.verify().ok  # the hash is over the redacted values
        body = {k: v for k, v in record.as_dict().items() if k != "hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert record.hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert b"hunter2-secret" not in b"".join(p.read_bytes() for p in data_dir.iterdir())


# --- export --------------------------------------------------------------------------------


def test_export_jsonl_parses_back_and_verifies_offline(store, data_dir, capsys):
    records = fill(store, 4)
    store.append("failed", action="deploy", outcome="exit 1 — «ü»", correlation_id="J-1-1")
    assert cli.main(["audit", "export", "--format", "jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    exported = [json.loads(line) for line in lines]
    assert [e["id"] for e in exported] == [f"A-{i:06d}" for i in range(1, 6)]
    assert exported[0] == records[0].as_dict()
    assert exported[4]["outcome"] == "exit 1 — «ü»"
    assert verify_chain(exported).ok
    exported[2]["target"] = "elsewhere"
    assert verify_chain(exported).first_bad == "A-000003"


def test_export_csv_parses_back(store, data_dir, tmp_path):
    records = fill(store, 3)
    store.append("succeeded", action="deploy", duration_ms=1234, correlation_id="J-1-3")
    out = tmp_path / "audit.csv"
    assert cli.main(["audit", "export", "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == 4
    assert rows[0]["id"] == "A-000001"
    assert json.loads(rows[0]["parameters"]) == records[0].parameters
    assert rows[0]["duration_ms"] == ""
    assert rows[3]["duration_ms"] == "1234"
    assert rows[3]["event"] == "succeeded"
    assert [r["hash"] for r in rows[:3]] == [r.hash for r in records]


def test_export_since_limits_the_records(store, data_dir, capsys):
    records = fill(store, 6, pause=0.003)
    cut = records[3].time  # e.g. 2026-11-23T17:02:03.123Z
    assert cli.main(["audit", "export", "--since", cut]) == 0
    ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["A-000004", "A-000005", "A-000006"]
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert cli.main(["audit", "export", "--since", future]) == 0
    assert capsys.readouterr().out == ""


def test_export_since_a_partial_chain_verifies_from_its_first_record(store, data_dir, capsys):
    fill(store, 5)
    assert cli.main(["audit", "export"]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not verify_chain(exported[2:]).ok
    assert verify_chain(exported[2:], from_start=False).ok


def test_export_without_a_log_exits_2(data_dir, capsys):
    assert cli.main(["audit", "export"]) == 2
    assert "no audit log" in capsys.readouterr().err


def test_read_only_store_refuses_appends(store, data_dir):
    fill(store, 1)
    with AuditStore(data_dir / FILENAME, read_only=True) as reader:
        assert reader.verify().ok
        with pytest.raises(AuditError):
            reader.append("started", action="x", correlation_id="c")


def test_reopening_puts_dropped_triggers_back(store, data_dir):
    fill(store, 2)
    raw(data_dir / FILENAME).close()
    with AuditStore(data_dir / FILENAME):
        db = sqlite3.connect(data_dir / FILENAME, isolation_level=None)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_records")
