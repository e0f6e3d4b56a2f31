"""The audit channel as a witness, end to end: the real bot posts checkpoints (start-up and
shutdown) and echoes with record ids and hash prefixes; `opsroom audit verify --online`
reads them back and catches a log whose tail was cut, even with the local mark removed."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.runtime.audit import AuditStore
from tests.e2e.test_actions import bot_posts, current, policy_file, wait_until  # noqa: F401


def verify(bot, *args):
    opsroom = Path(sys.executable).with_name("opsroom")
    return subprocess.run(
        [str(opsroom), "audit", "verify", *args],
        env=bot.env,
        cwd=bot.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_checkpoints_and_echoes_in_the_audit_channel_catch_a_cut_log(
    fake_mm,
    world,
    make_bot,
    policy_file,  # noqa: F811 - the fixture of test_actions
    tmp_path,
):
    key = tmp_path / "audit.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    bot = make_bot(
        OPSROOM_POLICY=str(policy_file),
        OPSROOM_AUDIT_CHANNEL="~alpha/secret",
        OPSROOM_AUDIT_KEY_FILE=str(key),
    )
    start = wait_until(lambda: bot_posts(fake_mm, world, world.secret), message="checkpoint")
    assert start[0]["message"].startswith("audit checkpoint records=0 ")
    assert " sig=" in start[0]["message"]  # signed with the key
    for n in range(3):
        fake_mm.post_as(world.alice, world.ops, f"!hold staging-{n} seconds=0")
    wait_until(
        lambda: (
            sum("succeeded" in current(fake_mm, p) for p in bot_posts(fake_mm, world, world.ops))
            == 3
        ),
        message="three echoes",
    )
    assert bot.stop() == 0
    copies = [p["message"] for p in bot_posts(fake_mm, world, world.secret)]
    assert copies[-1].startswith("audit checkpoint records=9 ")  # shutdown
    assert sum("audit A-0000" in c and " #" in c for c in copies) == 3  # final echoes, hashed

    good = verify(bot, "--online", "--key", str(key))
    assert good.returncode == 0, good.stdout + good.stderr

    # Cut the last three records, and replace the local high-water mark with a fresh one
    # at the cut head: nothing local remembers the tail any more, but the channel does.
    db = sqlite3.connect(bot.data_dir / "audit.sqlite3", isolation_level=None)
    db.execute("DROP TRIGGER audit_records_no_delete")
    db.execute("DELETE FROM audit_records WHERE seq > 6")
    db.close()
    with AuditStore(bot.data_dir / "audit.sqlite3") as store:
        forged_mark = store.checkpoint().render()
    (bot.data_dir / "audit.hwm").write_text(forged_mark + "\n")
    offline = verify(bot)
    assert offline.returncode == 0, offline.stdout  # what offline verify cannot see...
    cut = verify(bot, "--online")
    assert cut.returncode == 1, cut.stdout + cut.stderr  # ...the audit channel shows
    # it names the first record the channel has seen that the log no longer holds
    assert re.search(r"BROKEN at A-00000[789]: .*deleted or truncated", cut.stdout), cut.stdout
