"""``opsroom do``: an operator at the bot's host runs an action through the running bot."""

from __future__ import annotations

import getpass
import json
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_tls import self_signed

OPSROOM = Path(sys.executable).with_name("opsroom")
USER = getpass.getuser()


@pytest.fixture
def policy(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "roles": {
                    "operator": {"members": ["@alice"], "grants": [{"action": "hold"}]},
                    "viewer": {"members": ["@bob"], "grants": []},
                },
            }
        )
    )
    return policy


@pytest.fixture
def opsbot(make_bot, policy):
    return make_bot(OPSROOM_POLICY=str(policy))


def opsroom(bot, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(OPSROOM), *args],
        env=bot.env,
        cwd=bot.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def records(bot) -> list[dict]:
    exported = opsroom(bot, "audit", "export", "--format", "jsonl")
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines()]


def test_operator_runs_an_action_echoed_in_the_channel_and_audited(fake_mm, world, opsbot):
    token = opsbot.data_dir / "operator.token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    done = opsroom(
        opsbot,
        *("do", "hold", "staging", "seconds=0", "--as-role", "operator"),
        *("--channel", "~ops", "--wait", "20"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("accepted: hold job J-")
    assert "succeeded: held staging" in done.stdout
    posts = fake_mm.posts_by(world.bot)
    echoed = [p["message"] for p in posts if p["channel_id"] == world.ops["id"]]
    assert any(f"by operator {USER}" in m and "held staging" in m for m in echoed), echoed
    audited = records(opsbot)
    assert [r["event"] for r in audited] == ["requested", "started", "succeeded"]
    assert {(r["actor_id"], r["trigger"]) for r in audited} == {(f"operator:{USER}", "cli")}
    assert {r["channel_id"] for r in audited} == {world.ops["id"]}


def test_a_role_without_the_grant_is_denied_and_nothing_runs(opsbot):
    denied = opsroom(opsbot, "do", "hold", "staging", "--as-role", "viewer", "--wait", "20")
    assert denied.returncode == 1
    assert denied.stdout.startswith("denied: ") and "needs role operator" in denied.stdout
    assert [r["event"] for r in records(opsbot)] == ["requested", "denied"]
    unknown = opsroom(opsbot, "do", "nosuch", "--as-role", "operator")
    assert unknown.returncode == 2
    assert "404: no action named nosuch" in unknown.stderr and "hold" in unknown.stderr
    refused = opsroom(opsbot, "do", "hold", "--as-role", "operator")  # env missing
    assert refused.returncode == 1 and refused.stdout.startswith("refused: ")
    assert "started" not in [r["event"] for r in records(opsbot)]


def test_a_wrong_token_is_refused_with_401_and_nothing_runs(opsbot):
    (opsbot.data_dir / "operator.token").write_text("not-the-token\n")
    refused = opsroom(opsbot, "do", "hold", "staging", "--as-role", "operator")
    assert refused.returncode == 2
    assert "401" in refused.stderr and "token" in refused.stderr
    assert records(opsbot) == []  # the answer came after the handler: nothing was submitted


def test_a_bot_not_running_is_named_with_its_listen_setting(make_bot, opsbot):
    first = (opsbot.data_dir / "operator.token").read_text()
    opsbot.stop(sig=signal.SIGKILL)  # its token and address files stay behind
    down = opsroom(opsbot, "do", "hold", "staging", "--as-role", "operator")
    assert down.returncode == 2
    assert "cannot reach the bot" in down.stderr and "OPSROOM_HTTP_LISTEN" in down.stderr
    again = make_bot(OPSROOM_POLICY=opsbot.env["OPSROOM_POLICY"])
    assert (again.data_dir / "operator.token").read_text() != first  # new at each start
    again.stop()
    stopped = opsroom(again, "do", "hold", "staging", "--as-role", "operator")
    assert stopped.returncode == 2
    assert "no operator token" in stopped.stderr and "is the bot running" in stopped.stderr


def test_over_https_the_bot_certificate_is_trusted(make_bot, policy, tmp_path):
    cert, key = self_signed(tmp_path)
    bot = make_bot(
        OPSROOM_POLICY=str(policy), OPSROOM_HTTP_TLS_CERT=str(cert), OPSROOM_HTTP_TLS_KEY=str(key)
    )
    assert (bot.data_dir / "http.address").read_text().startswith("https://127.0.0.1:")
    done = opsroom(
        bot, "do", "hold", "staging", "seconds=0", "--as-role", "operator", "--wait", "20"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded: held staging" in done.stdout
