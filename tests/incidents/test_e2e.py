"""Incidents end to end: the real ``opsroom run`` process against the fake Mattermost
(every request checked against the vendor OpenAPI), from declaration to post-mortem."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.e2e.harness import BotProcess, seed, wait_until

OPSROOM = Path(sys.executable).with_name("opsroom")


@pytest.fixture
def world(fake_mm):
    seeded = seed(fake_mm)
    fake_mm.add_group("sre", [seeded.admin])
    yield seeded
    assert fake_mm.contract_violations == []
    assert fake_mm.unexpected_requests == []


@pytest.fixture
def files(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "roles": {
                    "responder": {
                        "members": ["@alice", "@bob"],
                        "grants": [{"action": "incident.*"}, {"action": "hold"}],
                    }
                }
            }
        )
    )
    incidents = tmp_path / "incidents.yaml"
    incidents.write_text(
        yaml.safe_dump(
            {
                "stakeholder_channel": "alpha/ops",
                "channel": {"team": "alpha"},
                "services": {
                    "api": {"responders": ["@bob", "group:sre"], "type": "outage"},
                },
                "checklists": {
                    "outage": [
                        "Post the first update",
                        {"title": "Hold staging", "action": "hold", "args": "staging seconds=0.2"},
                    ]
                },
            }
        )
    )
    return {"OPSROOM_POLICY": str(policy), "OPSROOM_INCIDENTS": str(incidents)}


@pytest.fixture
def make_bot(fake_mm, world, files, tmp_path):
    started: list[BotProcess] = []

    def make() -> BotProcess:
        bot = BotProcess(fake_mm.url, world.token, tmp_path / "data", **files)
        started.append(bot)
        return bot.start()

    yield make
    for bot in started:
        if bot.proc and bot.proc.poll() is None:
            bot.stop()


def said(mm, world, channel_id, text):
    """The bot's post in the channel whose current text holds ``text`` (waits for it)."""

    def find():
        for post in mm.posts_by(world.bot):
            if post["channel_id"] == channel_id and not post["type"]:
                current = mm.get_post(post["id"])["message"]
                if text in current:
                    return {**post, "message": current}
        return None

    return wait_until(find, message=f"the bot saying {text!r}")


def run(mm, world, user, channel_id, command, done="succeeded"):
    mm.post_as(user, channel_id, command)
    return said(mm, world, channel_id, done)


def command_ran(mm, world, channel_id, command):
    """Post a command and wait for its echo to reach a final state."""
    before = {p["id"] for p in mm.posts_by(world.bot)}
    mm.post_as(world.alice, channel_id, command)

    def final():
        for post in mm.posts_by(world.bot):
            if post["id"] in before or post["channel_id"] != channel_id or post["type"]:
                continue
            text = mm.get_post(post["id"])["message"]
            if any(word in text for word in ("succeeded", "failed", "⛔", "denied")):
                return text
        return None

    return wait_until(final, message=f"the answer to {command!r}")


def incident_channel(mm, number=1):
    day = datetime.now(UTC).strftime("%Y%m%d")
    for name in (f"inc-{day}-api-returns-500s-{number}", f"inc-{day}-disk-full-{number}"):
        try:
            return mm.get_channel(name)
        except ValueError:
            continue
    raise AssertionError("no incident channel")


def export(bot, *args):
    return subprocess.run(
        [str(OPSROOM), "incident", "export", *args],
        env=bot.env,
        cwd=bot.data_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_full_incident_from_declaration_to_post_mortem(fake_mm, world, make_bot):
    bot = make_bot()
    ops = world.ops["id"]
    answer = command_ran(
        fake_mm, world, ops, "!incident declare API returns 500s sev=2 service=api"
    )
    assert "INC-1 declared (SEV2 (major))" in answer
    room = incident_channel(fake_mm)
    assert room["type"] == "P" and room["display_name"] == "INC-1 API returns 500s"
    assert room["header"].startswith("INC-1 · SEV2 (major) · service api · active")
    members = {m["user_id"] for m in fake_mm.channel_members(room["id"])}
    assert members == {world.bot["id"], world.alice["id"], world.bob["id"], world.admin["id"]}
    summary = said(fake_mm, world, room["id"], "🚨 INC-1: API returns 500s")
    assert fake_mm.get_post(summary["id"])["is_pinned"]
    said(fake_mm, world, ops, "🚨 INC-1 declared (SEV2 (major)): API returns 500s")

    rid = room["id"]
    fake_mm.post_as(world.bob, rid, "!incident role comms @bob")
    said(fake_mm, world, rid, "comms assigned to @bob")
    fake_mm.post_as(world.bob, rid, "!incident update checkout fails for half of the users")
    said(fake_mm, world, ops, "update from @bob: checkout fails for half of the users")
    fake_mm.post_as(world.alice, rid, "!incident checklist run 2")
    said(fake_mm, world, rid, "held staging for 0.2s")
    wait_until(
        lambda: (
            "✅ alice"
            in fake_mm.get_post(said(fake_mm, world, rid, "Checklist of")["id"])["message"]
        ),
        message="the checklist item ticked by its action",
    )
    evidence = fake_mm.post_as(world.bob, rid, "error rate 40% since 09:58")
    fake_mm.react_as(world.alice, evidence["id"], "pushpin")
    fake_mm.post_as(world.alice, rid, "!incident note rolled back to 1.4.1")
    said(fake_mm, world, rid, "noted on the timeline")
    fake_mm.post_as(world.alice, rid, "!incident mitigated error rate back to normal")
    said(fake_mm, world, rid, "INC-1 mitigated: error rate back to normal")
    fake_mm.post_as(world.alice, rid, "!incident followup alert on the checkout error rate")
    said(fake_mm, world, rid, "follow-up 1 recorded")
    fake_mm.post_as(world.alice, rid, "!incident resolved")
    said(fake_mm, world, rid, "INC-1 resolved")
    summary_now = fake_mm.get_post(summary["id"])
    assert "| status      | resolved" in summary_now["message"] and summary_now["is_pinned"]
    assert "| comms       | @bob" in summary_now["message"]
    assert fake_mm.get_channel(rid)["header"].startswith(
        "INC-1 · SEV2 (major) · service api · resolved"
    )

    fake_mm.post_as(world.alice, rid, "!incident postmortem")
    said(fake_mm, world, rid, "post-mortem posted as postmortem-INC-1.md")
    [document] = [f for f in fake_mm.uploaded_files if f["name"] == "postmortem-INC-1.md"]
    assert document["channel_id"] == rid
    text = document["content"].decode()
    for expected in (
        "# Post-mortem INC-1: API returns 500s",
        "- checkout fails for half of the users",
        "comms assigned to @bob",
        "📌 @bob: error rate 40% since 09:58",
        "rolled back to 1.4.1",
        "hold on staging: succeeded (held staging for 0.2s token=[REDACTED]",
        "1. alert on the checkout error rate",
        "@alice, @bob",
    ):
        assert expected in text, expected
    assert "system_" not in text and "joined the channel" not in text
    assert "sekrit" not in text
    # every change of the incident names its audit record
    section = text.split("## Timeline")[1].split("## Actions taken")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and ":" in line]
    assert len(rows) >= 9
    assert [row for row in rows if "A-0" not in row and "📌" not in row] == []
    (Path(bot.data_dir) / "postmortem.md").write_text(text)  # for docs/incidents.md

    exported = export(bot, "INC-1", "--format", "md")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.splitlines()[0] == "# Post-mortem INC-1: API returns 500s"
    data = json.loads(export(bot, "1", "--format", "json").stdout)
    assert data["status"] == "resolved" and data["durations_seconds"]["resolve"] >= 0
    assert [a["action"] for a in data["actions"]] == ["hold"]
    assert data["actions"][0]["audit_id"].startswith("A-")
    assert export(bot, "INC-9").returncode == 2

    answer = command_ran(fake_mm, world, ops, "!incident metrics period=7d")
    assert "1 incident(s) since" in answer and "trend chart uploaded (3 points)" in answer
    assert "| SEV2 (major) | 1 " in answer and "| service api  | 1 " in answer
    [chart] = [f for f in fake_mm.uploaded_files if f["name"] == "incident-trend-7d.png"]
    assert chart["channel_id"] == ops and chart["content"].startswith(b"\x89PNG")


def test_bad_input_is_answered_and_changes_nothing(fake_mm, world, make_bot):
    make_bot()
    ops = world.ops["id"]
    channels = len(fake_mm.channel_members(ops))  # a stand-in: nothing below adds anyone
    answer = command_ran(fake_mm, world, ops, "!incident note the database is slow")
    assert "not an incident channel" in answer
    answer = command_ran(fake_mm, world, ops, "!incident declare Disk full sev=7")
    assert "sev: expected a severity from 1 (critical) to 4 (low) (got '7')" in answer
    answer = command_ran(fake_mm, world, ops, "!incident declare Disk full commander=@nobody")
    assert "no user @nobody" in answer and "nothing was run" in answer
    answer = command_ran(fake_mm, world, ops, "!incident declare Disk full service=web")
    assert "unknown service web (known: api)" in answer
    assert not any(r.path == "/api/v4/channels" for r in fake_mm.requests)
    assert len(fake_mm.channel_members(ops)) == channels


def test_a_restart_mid_incident_keeps_the_war_room(fake_mm, world, make_bot):
    bot = make_bot()
    command_ran(fake_mm, world, world.ops["id"], "!incident declare API returns 500s service=api")
    room = incident_channel(fake_mm)
    summary = said(fake_mm, world, room["id"], "🚨 INC-1")
    bot.stop()
    make_bot()
    answer = command_ran(fake_mm, world, room["id"], "!incident severity 1")
    assert "severity SEV3 (minor) → SEV1 (critical)" in answer
    assert "| severity    | SEV1 (critical)" in fake_mm.get_post(summary["id"])["message"]
    summaries = [
        p
        for p in fake_mm.posts_by(world.bot)
        if p["channel_id"] == room["id"] and p["message"].startswith("🚨 INC-1")
    ]
    assert len(summaries) == 1  # edited in place, across the restart


def test_groups_unavailable_degrade_to_a_message(fake_mm, world, make_bot):
    fake_mm.groups_enabled = False  # Team Edition
    make_bot()
    answer = command_ran(
        fake_mm, world, world.ops["id"], "!incident declare API returns 500s service=api"
    )
    assert "responders of group:sre were not invited" in answer
    room = incident_channel(fake_mm)
    said(fake_mm, world, room["id"], "⚠️ responders of group:sre were not invited")
    members = {m["user_id"] for m in fake_mm.channel_members(room["id"])}
    assert world.admin["id"] not in members and world.bob["id"] in members
