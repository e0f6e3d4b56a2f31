"""The incident domain without chat or Errbot: an in-memory chat and an injected clock."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import InvalidArgument, Refusal, UnknownTarget
from bot.incidents.chat import ChatRefused
from bot.incidents.config import IncidentsConfig
from bot.incidents.metrics import chart_png, metrics_table, trend
from bot.incidents.model import Actor, AlertRef, Status
from bot.incidents.postmortem import PostMortem
from bot.incidents.service import IncidentService
from bot.incidents.store import IncidentStore
from tests.incidents.memory_chat import MemoryChat

START = datetime(2030, 3, 4, 10, 0, tzinfo=UTC)
ALICE = Actor("u-alice", "alice")
BOB = Actor("u-bob", "bob")


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def chat():
    chat = MemoryChat(
        users={"alice": "u-alice", "bob": "u-bob", "carol": "u-carol", "dave": "u-dave"},
        groups={"sre": ["carol", "dave"]},
    )
    chat.add_stakeholder_channel("stakeholders")
    return chat


def make_config(**overrides):
    raw = {
        "stakeholder_channel": "~stakeholders",
        "severities": {1: {"update_every": "15m", "responders": ["group:sre"]}},
        "services": {"api": {"responders": ["@bob"], "type": "outage"}},
        "checklists": {
            "outage": [
                "Page the database team",
                {"title": "Restart the api", "action": "service.restart", "args": "api"},
            ]
        },
        **overrides,
    }
    return IncidentsConfig.model_validate(raw)


@pytest.fixture
def service(tmp_path, chat, clock):
    store = IncidentStore(tmp_path / "incidents.sqlite3")
    yield IncidentService(make_config(), store, chat, clock=clock)
    store.close()


def test_declare_opens_a_war_room(service, chat):
    incident, problems = service.declare(
        "API returns 500s", declared_by=ALICE, severity=1, service="api"
    )
    assert problems == []
    spec = chat.channels[incident.channel_id]
    assert spec.name == "inc-20300304-api-returns-500s-1"
    assert spec.private and spec.display_name == "INC-1 API returns 500s"
    assert spec.purpose == "API returns 500s"
    assert "SEV1 (critical)" in spec.header and "commander @alice" in spec.header
    # the declarer (commander), the severity's group, the service's responders
    assert chat.members[incident.channel_id] == ["u-alice", "u-carol", "u-dave", "u-bob"]
    assert incident.summary_post_id in chat.pinned
    summary = chat.posts[incident.summary_post_id][1]
    assert "INC-1: API returns 500s" in summary and "| commander   | @alice" in summary
    checklist = chat.posts[incident.checklist_post_id][1]
    assert "Restart the api" in checklist and "(outage): 0/2 done" in checklist
    [announcement] = chat.texts(chat.channel_named("stakeholders").id)
    assert "INC-1 declared (SEV1 (critical))" in announcement
    assert incident.acknowledged_at == incident.declared_at  # a person declared it


def test_changes_edit_the_summary_in_place_and_land_on_the_timeline(service, chat, clock):
    incident, _ = service.declare("Checkout slow", declared_by=ALICE, service="api")
    posts_before = len(chat.posts)
    clock.advance(minutes=3)
    service.assign_role(service.incident("INC-1"), "comms", BOB, ALICE, "J-1")
    service.assign_role(service.incident("INC-1"), "commander", BOB, ALICE, "J-2")
    service.set_severity(service.incident("INC-1"), 2, BOB)
    clock.advance(minutes=10)
    service.set_status(service.incident("INC-1"), Status.MITIGATED, BOB, "rolled back")
    clock.advance(minutes=20)
    service.set_status(service.incident("INC-1"), Status.RESOLVED, BOB)
    summary = chat.posts[incident.summary_post_id][1]
    assert "| comms       | @bob" in summary and "| status      | resolved" in summary
    assert "commander @bob" in chat.headers[incident.channel_id]
    stakeholder = chat.texts(chat.channel_named("stakeholders").id)
    assert any("INC-1 resolved" in text for text in stakeholder)
    assert len(chat.texts(incident.channel_id)) == posts_before - 1  # no new post there
    events = [(e.kind.value, e.text) for e in service.store.events(incident.id)]
    assert ("role", "commander handed over from @alice to @bob") in events
    assert ("severity", "severity SEV3 (minor) → SEV2 (major)") in events
    assert ("status", "mitigated: rolled back") in events
    found = service.incident("INC-1")
    assert found.mitigated_at - found.started_at == timedelta(minutes=13)
    assert found.resolved_at - found.started_at == timedelta(minutes=33)


def test_an_unpinned_summary_is_pinned_again(service, chat):
    incident, _ = service.declare("Disk full", declared_by=ALICE)
    chat.pinned.clear()  # anyone who can read may unpin it
    service.note(service.incident("INC-1"), "df shows 100%", ALICE)
    assert incident.summary_post_id in chat.pinned


def test_bad_input_changes_nothing(service, chat):
    with pytest.raises(UnknownTarget, match="unknown service web"):
        service.check_declaration("web", "", "")
    with pytest.raises(UnknownTarget, match="no user @mallory"):
        service.check_declaration("api", "@mallory", "")
    with pytest.raises(UnknownTarget, match="unknown incident type fire"):
        service.check_declaration("", "", "fire")
    with pytest.raises(Refusal, match="not an incident channel"):
        service.in_channel("ch-nowhere")
    assert service.store.open_incidents() == [] and len(chat.channels) == 1
    incident, _ = service.declare("x", declared_by=ALICE)
    with pytest.raises(InvalidArgument, match="unknown role pilot"):
        service.assign_role(incident, "pilot", BOB, ALICE)
    with pytest.raises(InvalidArgument, match="no checklist item 9"):
        service.check_item(incident, 9, True, ALICE)
    assert [e.kind.value for e in service.store.events(incident.id)] == ["declared"]


def test_a_channel_the_bot_may_not_create_leaves_no_incident(service, chat):
    chat.may_create = False
    with pytest.raises(ChatRefused, match="does not let the bot create"):
        service.declare("Outage", declared_by=ALICE)
    assert service.store.open_incidents() == []


def test_a_taken_name_gets_another_suffix(service, chat):
    chat.taken.add("inc-20300304-outage-1")  # archived channels keep their names
    incident, _ = service.declare("Outage", declared_by=ALICE)
    assert incident.channel_name.startswith("inc-20300304-outage-1-")


def test_long_titles_fit_mattermost_limits(service, chat):
    title = "Database " * 40
    incident, _ = service.declare(title, declared_by=ALICE)
    spec = chat.channels[incident.channel_id]
    assert len(spec.name) <= 64 and len(spec.display_name) <= 64 and len(spec.purpose) <= 250
    assert spec.display_name.endswith("…")


def test_groups_on_team_edition_degrade_to_a_clear_message(service, chat):
    chat.groups = None  # every group endpoint answers 501
    incident, problems = service.declare("Outage", declared_by=ALICE, severity=1)
    assert problems == [
        "responders of group:sre were not invited: this Mattermost server has no user groups (501)"
    ]
    assert any("no user groups" in text for text in chat.texts(incident.channel_id))
    assert chat.members[incident.channel_id] == ["u-alice"]


def test_responders_off_the_team_are_reported_one_by_one(service, chat):
    chat.outside_team.add("u-bob")
    incident, problems = service.declare("Outage", declared_by=ALICE, service="api")
    assert problems == ["@bob was not added: Mattermost refused (HTTP 403): not on the team"]
    assert chat.members[incident.channel_id] == ["u-alice"]


def test_reminders_follow_the_severity_cadence(service, chat, clock):
    incident, _ = service.declare("Outage", declared_by=ALICE, severity=1)  # every 15m
    service.declare("Minor", declared_by=ALICE, severity=3)  # every hour
    clock.advance(minutes=14, seconds=59)
    assert service.due_reminders() == []
    clock.advance(seconds=1)
    assert [i.ref for i in service.due_reminders()] == ["INC-1"]
    assert service.due_reminders() == []  # once per cadence
    assert any("no status update for INC-1" in t for t in chat.texts(incident.channel_id))
    clock.advance(minutes=5)
    service.status_update(service.incident("INC-1"), "rolling back", ALICE)
    clock.advance(minutes=14)
    assert service.due_reminders() == []  # the update restarted the clock
    clock.advance(minutes=1)
    assert [i.ref for i in service.due_reminders()] == ["INC-1"]
    clock.advance(minutes=30)
    assert [i.ref for i in service.due_reminders()] == ["INC-1", "INC-2"]
    service.set_status(service.incident("INC-1"), Status.RESOLVED, ALICE)
    clock.advance(hours=2)
    assert [i.ref for i in service.due_reminders()] == ["INC-2"]  # resolved: quiet


def test_status_updates_reach_the_stakeholders(service, chat):
    service.declare("Outage", declared_by=ALICE)
    answer = service.status_update(service.incident("INC-1"), "customers see errors", BOB)
    assert answer == "update posted to ~stakeholders"
    [_, update] = chat.texts(chat.channel_named("stakeholders").id)
    assert "INC-1 (SEV3 (minor), active) update from @bob: customers see errors" in update


def test_checklist_is_one_message_edited_in_place(service, chat):
    incident, _ = service.declare("Outage", declared_by=ALICE, service="api")
    service.assign_item(service.incident("INC-1"), 1, BOB, ALICE)
    service.check_item(service.incident("INC-1"), 1, True, BOB)
    service.add_item(service.incident("INC-1"), "Tell support", ALICE)
    text = chat.posts[incident.checklist_post_id][1]
    assert "1/3 done" in text and "Tell support" in text and "@bob" in text
    with pytest.raises(Refusal, match="already done"):
        service.check_item(service.incident("INC-1"), 1, True, BOB)


def test_a_finished_action_completes_the_item_that_ran_it(service, chat):
    incident, _ = service.declare("Outage", declared_by=ALICE, service="api")
    service.mark_running(service.incident("INC-1"), 2)
    assert not service.item_finished("elsewhere", "service.restart", "u-alice", "succeeded")
    assert service.item_finished(
        incident.channel_id, "service.restart", "u-alice", "succeeded · audit A-000009"
    )
    item = service.incident("INC-1").checklist[1]
    assert item.done and item.done_by == "alice" and "A-000009" in item.outcome
    assert "✅ alice" in chat.posts[incident.checklist_post_id][1]


def test_pinned_posts_go_on_the_timeline_once_and_system_posts_never(service, chat):
    incident, _ = service.declare("Outage", declared_by=ALICE)
    post_id = chat.say(incident.channel_id, "error rate 40% since 09:58", "u-carol")
    post = chat.get_post(post_id)
    assert service.pinned(service.incident("INC-1"), post, BOB)
    assert not service.pinned(service.incident("INC-1"), post, ALICE)  # once
    system = type(post)("p-sys", incident.channel_id, "u-bot", "bob joined", "system_join_channel")
    assert not service.pinned(service.incident("INC-1"), system, BOB)
    summary = chat.get_post(incident.summary_post_id)
    assert not service.pinned(service.incident("INC-1"), summary, BOB)
    pins = [e.text for e in service.store.events(incident.id) if e.kind.value == "pinned"]
    assert pins == ["📌 @carol: error rate 40% since 09:58"]


def test_state_survives_a_new_store(tmp_path, chat, clock):
    store = IncidentStore(tmp_path / "i.sqlite3")
    IncidentService(make_config(), store, chat, clock=clock).declare(
        "Outage", declared_by=ALICE, service="api"
    )
    store.close()
    again = IncidentService(make_config(), IncidentStore(tmp_path / "i.sqlite3"), chat, clock=clock)
    incident = again.incident("INC-1")
    assert incident.roles["commander"] == ALICE and len(incident.checklist) == 2
    assert again.in_channel(incident.channel_id).ref == "INC-1"


def test_an_alert_declared_incident_starts_at_the_alert(service, clock):
    alert = AlertRef("f00d", "ApiDown", START - timedelta(minutes=5))
    rule = Actor("rule:api-down", "rule api-down", human=False)
    incident, _ = service.declare("API down", declared_by=rule, alert=alert)
    assert incident.started_at == alert.started_at and incident.acknowledged_at is None
    assert "commander" not in incident.roles
    clock.advance(minutes=2)
    service.note(service.incident("INC-1"), "looking", BOB)  # the first person to act
    found = service.incident("INC-1")
    assert found.acknowledged_at - found.started_at == timedelta(minutes=7)


def test_postmortem_and_metrics(service, chat, clock):
    service.declare("Outage", declared_by=ALICE, severity=1, service="api")
    clock.advance(minutes=10)
    service.status_update(service.incident("INC-1"), "half of requests fail", ALICE)
    service.set_status(service.incident("INC-1"), Status.MITIGATED, ALICE)
    clock.advance(minutes=20)
    service.follow_up(service.incident("INC-1"), "alert on error rate", ALICE)
    service.set_status(service.incident("INC-1"), Status.RESOLVED, ALICE)
    clock.advance(days=3)
    service.declare("Slow", declared_by=BOB, severity=3)
    clock.advance(hours=1)
    service.set_status(service.incident("INC-2"), Status.RESOLVED, BOB)
    document = PostMortem(service.incident("INC-1"), service.config, service.store, None)
    text = document.markdown()
    assert "# Post-mortem INC-1: Outage" in text
    assert "- half of requests fail" in text
    assert "| mitigate    | 10m 00s | 2030-03-04 10:10 UTC |" in text
    assert "1. alert on error rate" in text
    assert document.as_dict()["durations_seconds"]["resolve"] == 1800
    incidents = service.store.declared_between(START - timedelta(days=1), clock.now)
    table = metrics_table(incidents, service.config, START - timedelta(days=1), clock.now)
    rows = {row[0]: row for row in table.rows}
    assert rows["all"][1] == 2 and rows["SEV1 (critical)"][4] == "30m 00s"
    assert rows["service api"][3] == "10m 00s"
    points = trend(incidents, START - timedelta(days=1), clock.now + timedelta(days=1))
    # a point per measure on each day with an incident (resolving also mitigates)
    assert [(p.bucket.day, p.measure) for p in points] == [
        (4, "MTTA"),
        (4, "MTTM"),
        (4, "MTTR"),
        (7, "MTTA"),
        (7, "MTTM"),
        (7, "MTTR"),
    ]


def test_the_chart_is_a_png_with_a_point_per_bucket(service, clock):
    from PIL import Image

    for day in range(3):
        service.declare(f"Outage {day}", declared_by=ALICE, severity=2)
        clock.advance(minutes=30 + day)
        service.set_status(service.incident(f"INC-{day + 1}"), Status.RESOLVED, ALICE)
        clock.advance(days=1)
    since = START - timedelta(days=1)
    points = trend(service.store.declared_between(since, clock.now), since, clock.now)
    png = chart_png(points, "trend")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.verify()
    assert image.size == (800, 400)
    assert [p.measure for p in points].count("MTTR") == 3
    assert len(points) == 9  # 3 days x (MTTA, MTTM, MTTR)
