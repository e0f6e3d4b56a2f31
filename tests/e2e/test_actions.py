"""Actions through the real bot and the fake Mattermost: policy, approvals, jobs, audit."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import barrier, wait_until

SECRET = "sekrit-value-123"


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "protected_environments": ["production"],
                "roles": {
                    "operator": {
                        "members": ["@alice", "group:sre"],
                        "grants": [{"action": "hold"}, {"action": "wipe"}],
                    },
                    "approver": {"members": ["@admin"], "approves": ["wipe"]},
                },
            }
        )
    )
    return path


@pytest.fixture
def opsbot(fake_mm, world, make_bot, policy_file):
    fake_mm.add_group("sre", [world.bob])  # bob is an operator through his group
    return make_bot(OPSROOM_POLICY=str(policy_file), OPSROOM_AUDIT_CHANNEL="~alpha/secret")


def bot_posts(mm, world, channel):
    return [p for p in mm.posts_by(world.bot) if p["channel_id"] == channel["id"]]


def current(mm, post):
    return mm.get_post(post["id"])["message"]


def audit(bot, *args):
    opsroom = Path(sys.executable).with_name("opsroom")
    result = subprocess.run(
        [str(opsroom), "audit", *args],
        env=bot.env,
        cwd=bot.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result


def test_action_runs_as_a_job_with_one_message_edited_in_place(fake_mm, world, opsbot):
    fake_mm.post_as(world.alice, world.ops, "!hold staging seconds=1.5")
    (ack,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops), message="ack")
    final = wait_until(
        lambda: "succeeded" in current(fake_mm, ack) and current(fake_mm, ack),
        message="final edit",
    )
    assert "held staging" in final and "audit A-" in final
    assert SECRET not in final  # redacted in chat
    sentinel = barrier(fake_mm, world)
    ops = [p["message"] for p in bot_posts(fake_mm, world, world.ops)]
    assert ops == [final, sentinel]  # edited, not a flood
    # The audit channel gets copies, delivered in parallel with ~ops: wait for the last one.
    wait_until(
        lambda: any("succeeded" in p["message"] for p in bot_posts(fake_mm, world, world.secret)),
        message="the copy of the outcome in the audit channel",
    )
    exported = audit(opsbot, "export", "--format", "jsonl").stdout
    records = [json.loads(line) for line in exported.splitlines()]
    assert [r["event"] for r in records] == ["requested", "started", "succeeded"]
    assert records[0]["actor_id"] == world.alice["id"]
    assert SECRET not in exported
    assert audit(opsbot, "verify").returncode == 0


def test_denied_and_why(fake_mm, world, opsbot):
    fake_mm.post_as(world.admin, world.ops, "!hold staging")
    (denied,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops))
    assert "needs role operator (you have: approver)" in denied["message"]
    fake_mm.post_as(world.admin, world.ops, "!why-denied")
    wait_until(lambda: len(bot_posts(fake_mm, world, world.ops)) == 2)
    assert "needs role operator" in bot_posts(fake_mm, world, world.ops)[1]["message"]


def test_dangerous_action_approved_by_reaction_of_another_person(fake_mm, world, opsbot):
    command = fake_mm.post_as(world.alice, world.ops, "!wipe in staging")
    (request,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops))
    assert "needs approval" in request["message"]
    fake_mm.react_as(world.alice, request["id"], "+1")  # own request: refused
    fake_mm.react_as(world.bob, request["id"], "+1")  # not an approver: refused
    # Wait for both refusals by their text: the test plugin also answers every reaction
    # ("@alice reacted :+1:"), so a count of posts says nothing.
    for refusal in ("cannot approve your own request", "may not approve wipe"):
        wait_until(
            lambda refusal=refusal: any(
                refusal in p["message"] for p in bot_posts(fake_mm, world, world.ops)
            ),
            message=refusal,
        )
    fake_mm.react_as(world.admin, request["id"], "+1")
    wait_until(
        lambda: any(
            "wiped staging" in current(fake_mm, p) for p in bot_posts(fake_mm, world, world.ops)
        ),
        message="the approved run",
    )
    records = [json.loads(line) for line in audit(opsbot, "export").stdout.splitlines()]
    assert {r["post_id"] for r in records} == {command["id"]}  # the audit names the command
    granted = [r for r in records if r["decider_id"] == world.admin["id"]]
    assert granted and all(r["actor_id"] == world.alice["id"] for r in records)


def test_admin_command_does_not_freeze_the_bot(fake_mm, world, opsbot):
    dm = fake_mm.direct_channel(world.admin, world.bot)
    fake_mm.post_as(world.admin, dm, "!adminslow")  # runs until the test releases it
    opsbot.wait_for_log('Processing command "adminslow"')
    fake_mm.post_as(world.alice, world.ops, "!echo still here")
    (answer,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops), timeout=10)
    assert answer["message"] == "still here"
    assert bot_posts(fake_mm, world, dm) == []  # answered while the admin command still ran
    (opsbot.data_dir / "release-adminslow").touch()
    wait_until(lambda: bot_posts(fake_mm, world, dm), message="the admin command's answer")


@pytest.mark.slow
def test_quick_command_answered_while_200_jobs_run(fake_mm, world, opsbot):
    for n in range(200):
        fake_mm.post_as(world.alice, world.infra, f"!hold env-{n} seconds=60")
    wait_until(lambda: len(bot_posts(fake_mm, world, world.infra)) == 200, timeout=60)
    fake_mm.post_as(world.bob, world.ops, "!echo quick")
    # Answered within 10 s, while the jobs hold for 60 s: not queued behind them.
    (answer,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops), timeout=10)
    assert answer["message"] == "quick"
    fake_mm.post_as(world.alice, world.ops, "!jobs")
    listing = wait_until(lambda: bot_posts(fake_mm, world, world.ops)[1:], timeout=10)[0]
    assert len(re.findall(r"\| hold +\|", listing["message"])) >= 16


@pytest.mark.slow
def test_kill_during_an_action_is_recorded_as_interrupted(fake_mm, world, make_bot, policy_file):
    first = make_bot(OPSROOM_POLICY=str(policy_file))
    fake_mm.post_as(world.alice, world.ops, "!hold staging seconds=60")
    wait_until(lambda: "started" in audit(first, "export").stdout, message="the job started")
    first.stop(signal.SIGKILL)
    second = make_bot(OPSROOM_POLICY=str(policy_file))
    wait_until(
        lambda: any("interrupted" in p["message"] for p in bot_posts(fake_mm, world, world.ops)),
        message="the interruption announced",
    )
    exported = audit(second, "export").stdout
    events = [json.loads(line)["event"] for line in exported.splitlines()]
    assert events == ["requested", "started", "interrupted"]
    assert audit(second, "verify").returncode == 0


def test_a_request_pending_at_a_crash_is_abandoned_and_announced(
    fake_mm, world, make_bot, policy_file
):
    first = make_bot(OPSROOM_POLICY=str(policy_file))
    fake_mm.post_as(world.alice, world.ops, "!wipe in production")
    (request,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops), message="request")
    request_id = re.search(r"R-[A-Z0-9]{5}", request["message"]).group(0)
    first.stop(signal.SIGKILL)
    second = make_bot(OPSROOM_POLICY=str(policy_file))
    notice = wait_until(
        lambda: [
            p
            for p in bot_posts(fake_mm, world, world.ops)
            if "abandoned" in p["message"] or "still pending" in p["message"]
        ],
        message="the abandoned request announced",
    )[0]["message"]
    assert request_id in notice and "can no longer be decided" in notice
    events = [json.loads(line)["event"] for line in audit(second, "export").stdout.splitlines()]
    assert events == ["requested", "approval_requested", "abandoned"]
    fake_mm.post_as(world.admin, world.ops, f"!approve {request_id}")
    answer = wait_until(
        lambda: [p for p in bot_posts(fake_mm, world, world.ops) if "no request" in p["message"]],
        message="the late approval refused",
    )
    assert answer  # the request cannot be granted after the restart; nothing ran
    assert "wiped" not in " ".join(p["message"] for p in bot_posts(fake_mm, world, world.ops))


def test_help_hides_actions_the_asker_may_not_run(fake_mm, world, opsbot):
    fake_mm.post_as(world.alice, world.ops, "!help")
    fake_mm.post_as(world.admin, world.infra, "!help")
    wait_until(
        lambda: bot_posts(fake_mm, world, world.ops) and bot_posts(fake_mm, world, world.infra)
    )
    alice_help = bot_posts(fake_mm, world, world.ops)[0]["message"]
    admin_help = bot_posts(fake_mm, world, world.infra)[0]["message"]
    assert "!hold" in alice_help and "!wipe" in alice_help
    assert "!hold" not in admin_help and "!echo" in admin_help
    # ... and says that more exist, and how to find out why
    hint = re.search(r"(\d+) more action\(s\) are hidden because the policy grants you", admin_help)
    assert hint and "hold" in admin_help.split("hidden because")[1]
    assert "!whoami" in admin_help.split("hidden because")[1]


def test_group_membership_grants_and_cancel_stops_the_job(fake_mm, world, opsbot):
    fake_mm.post_as(world.bob, world.ops, "!hold staging seconds=60")
    (ack,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops))
    job_id = wait_until(
        lambda: re.search(r"J-[0-9A-F]{5}", current(fake_mm, ack)), message="a job id"
    ).group(0)
    fake_mm.post_as(world.admin, world.ops, f"!cancel {job_id}")
    wait_until(lambda: len(bot_posts(fake_mm, world, world.ops)) == 2)
    assert "may cancel" in bot_posts(fake_mm, world, world.ops)[1]["message"]
    fake_mm.post_as(world.bob, world.ops, f"!cancel {job_id}")
    wait_until(lambda: "cancelled" in current(fake_mm, ack), message="the cancelled echo")
    assert "cancelled by @bob" in current(fake_mm, ack)


def test_can_whoami_and_audit_in_chat(fake_mm, world, opsbot):
    def ask(text, count):
        fake_mm.post_as(world.alice, world.ops, text)
        return wait_until(
            lambda: (
                len(bot_posts(fake_mm, world, world.ops)) >= count
                and bot_posts(fake_mm, world, world.ops)[count - 1]["message"]
            ),
            message=text,
        )

    assert "yes" in ask("!can @bob hold staging", 1)  # through his group
    assert "no" in ask("!can @admin hold staging", 2) and "needs role operator" in ask(
        "!can @admin hold staging", 3
    )
    whoami = ask("!whoami", 4)
    assert world.alice["id"] in whoami and "operator" in whoami
    ask("!hold staging seconds=0.1", 5)
    wait_until(lambda: "succeeded" in current(fake_mm, bot_posts(fake_mm, world, world.ops)[4]))
    last = ask("!audit last 3", 6)
    assert re.search(r"\| requested +\| hold staging +\|", last)
    assert re.search(r"\| succeeded +\| hold staging +\|", last)
    record_id = re.search(r"A-\d{6}", last).group(0)
    shown = ask(f"!audit show {record_id}", 7)
    assert f"audit record {record_id}" in shown
    assert re.search(r"\| event +\| (requested|started|succeeded) +\|", shown)
    assert "audit log OK" in ask("!audit verify", 8)
    assert SECRET not in opsbot.log()


@pytest.mark.slow
def test_reaction_given_while_the_bot_was_away_still_approves(fake_mm, world, opsbot):
    fake_mm.post_as(world.alice, world.ops, "!wipe in production")
    (request,) = wait_until(lambda: bot_posts(fake_mm, world, world.ops))
    fake_mm.stop()  # the reaction's event is never delivered: only a REST read finds it
    fake_mm.react_as(world.admin, request["id"], "+1")
    fake_mm.start()
    opsbot.wait_for_log("caught up after reconnect", timeout=30)
    wait_until(
        lambda: any(
            "wiped production" in current(fake_mm, p) for p in bot_posts(fake_mm, world, world.ops)
        ),
        timeout=30,
        message="the approved run",
    )
    sentinel = barrier(fake_mm, world)
    texts = [p["message"] for p in bot_posts(fake_mm, world, world.ops)]
    assert sum("granted by @admin" in t for t in texts) == 1  # decided once
    assert texts[-1] == sentinel
