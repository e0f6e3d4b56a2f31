"""``opsroom audit verify --online`` reads the bot's own checkpoints and echoes back from the
audit channel (the fake Mattermost, over a real socket, through mattermostdriver)."""

import sqlite3

import pytest

from bot import cli
from bot.runtime.audit import FILENAME, AuditStore, record_hash
from bot.settings import get_settings


@pytest.fixture
def channel(fake_mm, tmp_path, monkeypatch):
    team = fake_mm.add_team("ops")
    bot, alice = fake_mm.add_user("opsbot", is_bot=True), fake_mm.add_user("alice")
    audit = fake_mm.add_channel(team, "ops-audit")
    for user in (bot, alice):
        fake_mm.add_to_team(team, user)
        fake_mm.add_member(audit, user)
    for key in ("MATTERMOST_TOKEN_FILE", "MATTERMOST_TEAMS", "OPSROOM_AUDIT_KEY_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MATTERMOST_URL", fake_mm.url)
    monkeypatch.setenv("MATTERMOST_TOKEN", fake_mm.create_token(bot))
    monkeypatch.setenv("OPSROOM_AUDIT_CHANNEL", "~ops-audit")
    monkeypatch.setenv("OPSROOM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield bot, alice, audit
    get_settings.cache_clear()


def rewrite_tail(path, from_seq):
    """Edit a record and recompute every hash after it; rewrite the high-water mark too."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TRIGGER audit_records_no_update")
    db.row_factory = sqlite3.Row
    prev = db.execute("SELECT hash FROM audit_records WHERE seq = ?", (from_seq - 1,)).fetchone()
    prev_hash = prev[0]
    for row in db.execute("SELECT * FROM audit_records WHERE seq >= ? ORDER BY seq", (from_seq,)):
        fields = {**dict(row), "target": "elsewhere", "prev_hash": prev_hash}
        fields["parameters"] = {}
        fields["hash"] = prev_hash = record_hash(fields)
        db.execute(
            "UPDATE audit_records SET target = ?, parameters = '{}', prev_hash = ?, hash = ? "
            "WHERE seq = ?",
            ("elsewhere", fields["prev_hash"], fields["hash"], fields["seq"]),
        )
    db.close()
    with AuditStore(path) as store:  # leaves a mark matching the rewritten head
        store.append("started", action="cover", correlation_id="C-x")


def test_online_verify_reads_the_bots_echoes_and_checkpoints(fake_mm, channel, capsys):
    bot, alice, audit = channel
    path = get_settings().opsroom_data_dir / FILENAME
    with AuditStore(path) as store:
        for i in range(1, 5):
            record = store.append("started", action="deploy", target=f"web-{i}", correlation_id="C")
            fake_mm.post_as(bot, audit, f"⏳ `!deploy web-{i}` running · {record.reference}")
        fake_mm.post_as(bot, audit, "📌 " + store.checkpoint().render())
    # somebody else's claim witnesses nothing
    fake_mm.post_as(alice, audit, "audit A-000002 #000000000000")

    assert cli.main(["audit", "verify", "--online"]) == 0
    out = capsys.readouterr().out
    assert "audit log OK: 4 records" in out
    assert "checked against 1 checkpoints, 4 echoes" in out

    rewrite_tail(path, 3)
    assert cli.main(["audit", "verify"]) == 0  # offline: consistent chain, consistent mark
    capsys.readouterr()
    assert cli.main(["audit", "verify", "--online"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        "audit log BROKEN at A-000003: disagrees with the channel echo of A-000003"
    )
    assert fake_mm.contract_violations == []


def test_online_verify_without_a_channel_exits_2(fake_mm, channel, monkeypatch, capsys):
    monkeypatch.setenv("OPSROOM_AUDIT_CHANNEL", "~nowhere")
    get_settings.cache_clear()
    with AuditStore(get_settings().opsroom_data_dir / FILENAME) as store:
        store.append("started", action="deploy", correlation_id="C")
    assert cli.main(["audit", "verify", "--online"]) == 2
    assert "cannot read the audit channel" in capsys.readouterr().err
