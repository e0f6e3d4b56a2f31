"""Each attack on the audit log against each way of verifying it (the table in docs/audit.md).

The attacker has write access to the data directory (audit.sqlite3 and audit.hwm) and drops
the append-only triggers; they never have the key. "offline" is plain ``verify``;
"checkpoint" adds a checkpoint kept elsewhere (taken before the attack); "online" adds what
the audit channel holds (the echo references of every record and the checkpoint); "keyed"
adds the audit key. Every mode also runs the offline checks.
"""

import json
import sqlite3

import pytest

from bot import cli
from bot.runtime.audit import FILENAME, AuditStore, record_hash
from bot.runtime.audit_evidence import AuditKey, Checkpoint, find_references
from bot.settings import get_settings

KEY = AuditKey.from_bytes(b"0123456789abcdef0123456789abcdef")
RECORDS = 6


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OPSROOM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def fill(store, n=RECORDS, start=1):
    return [
        store.append(
            "started",
            action="deploy",
            target=f"web-{i}",
            actor_id="u1",
            parameters={"version": f"1.{i}"},
            correlation_id=f"C-{i}",
            job_id=f"J-{i}",
        )
        for i in range(start, start + n)
    ]


class Attacker:
    """Raw SQL on the database, triggers dropped; may also rewrite the high-water mark."""

    def __init__(self, data_dir):
        self.path = data_dir / FILENAME
        self.mark = data_dir / "audit.hwm"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("DROP TRIGGER IF EXISTS audit_records_no_update")
        self.db.execute("DROP TRIGGER IF EXISTS audit_records_no_delete")
        self.db.row_factory = sqlite3.Row
        self.columns = [r[1] for r in self.db.execute("PRAGMA table_info(audit_records)")]

    def rows(self, since=1):
        return [
            dict(r)
            for r in self.db.execute(
                "SELECT * FROM audit_records WHERE seq >= ? ORDER BY seq", (since,)
            )
        ]

    def fields(self, row):
        fields = {k: row[k] for k in self.columns}
        fields["parameters"] = json.loads(fields["parameters"])
        return fields

    def rehash_from(self, seq, *, edit=None):
        """Edit record ``seq`` (optional) and recompute every hash from it to the end."""
        prev = self.db.execute(
            "SELECT hash FROM audit_records WHERE seq = ?", (seq - 1,)
        ).fetchone()
        prev_hash = prev[0] if prev else "0" * 64
        for row in self.rows(seq):
            fields = self.fields(row)
            if edit and fields["seq"] == seq:
                fields.update(edit)
            fields["prev_hash"] = prev_hash
            fields["hash"] = record_hash(fields)
            fields["signature"] = None  # no key: the best they can do
            self.db.execute(
                "UPDATE audit_records SET target = ?, prev_hash = ?, hash = ?, signature = ? "
                "WHERE seq = ?",
                (fields["target"], fields["prev_hash"], fields["hash"], None, fields["seq"]),
            )
            prev_hash = fields["hash"]

    def append_forged(self):
        last = self.fields(self.rows()[-1])
        seq = last["seq"] + 1
        fields = {**last, "id": f"A-{seq:06d}", "seq": seq, "target": "forged"}
        fields.update(prev_hash=last["hash"], signature=None)
        fields["hash"] = record_hash(fields)
        fields["parameters"] = json.dumps(fields["parameters"])
        names = ", ".join(fields)
        self.db.execute(
            f"INSERT INTO audit_records ({names}) VALUES ({', '.join('?' * len(fields))})",
            tuple(fields.values()),
        )

    def rewrite_mark(self):
        """Make audit.hwm agree with the table as it now is (unsigned: no key)."""
        last = self.rows()[-1] if self.rows() else None
        if last is None:
            self.mark.unlink()
            return
        mark = Checkpoint(last["seq"], last["id"], last["hash"], "2026-01-01T00:00:00.000Z")
        self.mark.write_text(mark.render() + "\n")

    def close(self):
        self.db.close()


def edit(a):
    a.db.execute("UPDATE audit_records SET target = 'elsewhere' WHERE seq = 3")


def delete(a):
    a.db.execute("DELETE FROM audit_records WHERE seq = 3")


SWAPPED = ("target", "hash", "prev_hash", "parameters", "correlation_id", "job_id")


def reorder(a):
    rows = {r["seq"]: r for r in a.rows()}
    for seq, other in ((3, 4), (4, 3)):
        a.db.execute(
            "UPDATE audit_records SET target = ?, hash = ?, prev_hash = ?, parameters = ?, "
            "correlation_id = ?, job_id = ? WHERE seq = ?",
            (*(rows[other][k] for k in SWAPPED), seq),
        )


def edit_and_rehash(a):
    a.rehash_from(RECORDS, edit={"target": "elsewhere"})


def truncate(a):
    a.db.execute("DELETE FROM audit_records WHERE seq > 4")


def delete_everything(a):
    a.db.execute("DELETE FROM audit_records")


def forged_append(a):
    a.append_forged()


def rehash_tail(a):
    a.rehash_from(3, edit={"target": "elsewhere"})
    a.rewrite_mark()


def forge_without_key(a):
    """Cut the tail, forge a different one with correct hashes and a matching mark."""
    a.db.execute("DELETE FROM audit_records WHERE seq > 4")
    a.append_forged()
    a.append_forged()
    a.rewrite_mark()


# attack: (offline, checkpoint, online, keyed) detection
TABLE = {
    "edit a record": (edit, (True, True, True, True)),
    "delete a record": (delete, (True, True, True, True)),
    "reorder records": (reorder, (True, True, True, True)),
    "edit the last record and recompute its hash": (edit_and_rehash, (True, True, True, True)),
    "truncate the tail": (truncate, (True, True, True, True)),
    "delete every record": (delete_everything, (True, True, True, True)),
    "forged append with a correct hash": (forged_append, (False, False, False, True)),
    "re-hash the tail (and the high-water mark)": (rehash_tail, (False, True, True, True)),
    "forge a consistent log without the key": (forge_without_key, (False, True, True, True)),
}


@pytest.mark.parametrize("attack", list(TABLE))
def test_attack_detection_matrix(data_dir, attack):
    apply, expected = TABLE[attack]
    with AuditStore(data_dir / FILENAME, key=KEY) as store:
        records = fill(store)
        checkpoint = store.checkpoint()
        # what the audit channel holds: an echo per record and the checkpoint line
        channel = [f"✅ `!deploy` started · {r.reference}" for r in records]
        channel.append(checkpoint.render())
        assert store.verify(keys=[KEY]).ok
    attacker = Attacker(data_dir)
    apply(attacker)
    attacker.close()
    found, refs = [], []
    for text in channel:
        found += Checkpoint.find_all(text)
        refs += find_references(text)
    with AuditStore(data_dir / FILENAME, read_only=True) as store:
        results = (
            store.verify(),
            store.verify([checkpoint]),
            store.verify(found, refs),
            store.verify(keys=[KEY]),
        )
    detected = tuple(not r.ok for r in results)
    assert detected == expected, [r.reason for r in results]


def test_the_first_disagreeing_record_is_named(data_dir):
    with AuditStore(data_dir / FILENAME) as store:
        records = fill(store)
        checkpoint = store.checkpoint()
    attacker = Attacker(data_dir)
    rehash_tail(attacker)
    attacker.close()
    refs = [ref for r in records for ref in find_references(r.reference)]
    with AuditStore(data_dir / FILENAME, read_only=True) as store:
        result = store.verify([checkpoint], refs)
        assert (result.ok, result.first_bad) == (False, "A-000003")
        assert "disagrees with the echo of A-000003" in result.reason
        only_checkpoint = store.verify([checkpoint])
        assert only_checkpoint.first_bad == f"A-{RECORDS:06d}"
        assert "checkpoint of" in only_checkpoint.reason


def test_record_ids_never_repeat_after_a_cut_tail(data_dir):
    with AuditStore(data_dir / FILENAME) as store:
        fill(store)
    attacker = Attacker(data_dir)
    truncate(attacker)
    attacker.close()
    with AuditStore(data_dir / FILENAME) as store:
        result = store.verify()
        assert (result.ok, result.first_bad) == (False, f"A-{RECORDS:06d}")
        assert "high-water mark" in result.reason and "truncated" in result.reason
        [new] = fill(store, 1, start=99)
        assert new.id == f"A-{RECORDS + 1:06d}"  # not A-000005, already shown in chat
        assert store.verify().first_bad == new.id
        assert "sequence gap after A-000004" in store.verify().reason


def test_an_emptied_log_with_a_high_water_mark_fails_verify(data_dir, capsys):
    with AuditStore(data_dir / FILENAME) as store:
        fill(store)
    attacker = Attacker(data_dir)
    delete_everything(attacker)
    attacker.close()
    assert cli.main(["audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"audit log BROKEN at A-{RECORDS:06d}:"), out
    # the database deleted outright: a new one starts, the mark survives
    for path in data_dir.glob(FILENAME + "*"):
        path.unlink()
    with AuditStore(data_dir / FILENAME) as store:
        assert not store.verify().ok
        assert fill(store, 1)[0].id == f"A-{RECORDS + 1:06d}"


def test_offline_verify_says_what_it_cannot_detect(data_dir, capsys):
    with AuditStore(data_dir / FILENAME) as store:
        fill(store)
    assert cli.main(["audit", "verify"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"audit log OK: {RECORDS} records"
    assert out[1].startswith("offline check: edits, deletions")
    assert "re-hashed tail" in out[1] and "--checkpoint, --online or --key" in out[1]


def test_verify_checkpoint_and_key_from_the_command_line(data_dir, tmp_path, capsys):
    key_file = tmp_path / "audit.key"
    key_file.write_bytes(KEY.secret + b"\n")
    with AuditStore(data_dir / FILENAME, key=AuditKey.load(key_file)) as store:
        fill(store)
        kept = tmp_path / "checkpoint.txt"
        kept.write_text("kept off the host:\n" + store.checkpoint().render() + "\n")
    args = ["audit", "verify", "--checkpoint", str(kept), "--key", str(key_file)]
    assert cli.main(args) == 0
    assert "checked against 1 checkpoints, 0 echoes, 6 signatures" in capsys.readouterr().out
    attacker = Attacker(data_dir)
    truncate(attacker)
    attacker.rewrite_mark()
    attacker.close()
    assert cli.main(["audit", "verify"]) == 0  # the mark was rewritten too: offline is blind
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--checkpoint", str(kept)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("audit log BROKEN at A-000006: named by the checkpoint of ")
    assert cli.main(["audit", "verify", "--key", str(key_file)]) == 1
    assert "high-water mark" in capsys.readouterr().out  # unsigned mark
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    assert cli.main(["audit", "verify", "--checkpoint", str(empty)]) == 2
    assert "no audit checkpoint" in capsys.readouterr().err


def test_key_rotation_needs_every_key_named_in_the_signatures(data_dir):
    new_key = AuditKey.from_bytes(b"another-key-of-32-bytes-long-0000")
    with AuditStore(data_dir / FILENAME, key=KEY) as store:
        fill(store, 2)
    with AuditStore(data_dir / FILENAME, key=new_key) as store:
        fill(store, 2, start=3)
        assert store.verify(keys=[KEY, new_key]).ok
        result = store.verify(keys=[new_key])
        assert (result.first_bad, result.reason) == (
            "A-000001",
            f"signed with key {KEY.id}, which was not given",
        )


def test_a_log_never_signed_fails_with_a_key(data_dir):
    with AuditStore(data_dir / FILENAME) as store:
        fill(store, 2)
        assert store.verify().ok
        assert "no record is signed" in store.verify(keys=[KEY]).reason
