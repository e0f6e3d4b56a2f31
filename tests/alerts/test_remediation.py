"""Routing and remediation through the real runtime: one post per group edited in place,
rules acting as a role, and every guardrail (with an injected clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.alerts.model import Status
from bot.runtime.audit import AuditEvent
from tests.alerts.world import BOB, alert, base_config


def test_a_firing_alert_posts_in_its_channel_and_the_rule_restarts_as_its_role(world):
    world.receive(alert("web1"))
    world.settle()
    assert world.ops.restarts == [("nginx", "web1")]
    [group] = world.chat.in_channel("~web")
    assert "🔥 ServiceDown: 1 firing, 0 resolved · @alice @sre" in group["text"]
    echo = world.chat.wait_for("succeeded")
    assert "by rule restart for alert ServiceDown" in echo
    [follow_up] = world.chat.in_channel("~web", thread=group["id"])  # in the group's thread
    assert follow_up["text"] == echo
    records = world.runtime.audit.last(10)
    started = next(r for r in records if r.event == AuditEvent.STARTED)
    assert started.actor_id == "rule:restart"
    assert started.trigger == "alert:fp-ServiceDown-web1"


def test_the_group_post_is_edited_per_alert_while_the_group_stays_firing(world):
    world.receive(alert("web1"), alert("web2"))
    world.settle()
    # Alertmanager's next notification: group status still "firing", web1 resolved inside.
    world.receive(alert("web1", Status.RESOLVED), alert("web2"))
    [group] = world.chat.in_channel("~web")
    assert "1 firing, 1 resolved" in group["text"]
    assert group["edits"] == 1
    world.receive(alert("web1", Status.RESOLVED), alert("web2", Status.RESOLVED))
    [group] = world.chat.in_channel("~web")
    assert "✅ ServiceDown: all 2 resolved" in group["text"]
    assert "@alice" not in group["text"]  # nobody is called for a resolved group


def test_a_repeated_notification_stores_nothing_and_runs_nothing(world):
    assert world.receive(alert("web1")) == 1
    world.settle()
    for _ in range(3):  # repeat_interval, or a re-send of a request still open
        assert world.receive(alert("web1")) == 0
    world.settle()
    assert world.ops.restarts == [("nginx", "web1")]
    assert world.store.event_count() == 1
    assert len(world.chat.in_channel("~web")) == 1


def test_cooldown_per_fingerprint_then_again_after_it(world):
    world.receive(alert("web1"))
    world.settle()
    world.clock.advance(60)
    world.receive(alert("web1", Status.RESOLVED))
    world.receive(alert("web1", starts_at="2024-01-01T00:01:00Z"))  # fires again: new state
    world.receive(alert("web2", starts_at="2024-01-01T00:01:00Z"))  # another fingerprint
    world.settle()
    assert world.ops.restarts == [("nginx", "web1"), ("nginx", "web2")]
    world.clock.advance(10 * 60)
    world.receive(alert("web1", starts_at="2024-01-01T00:12:00Z"))
    world.settle()
    assert world.ops.restarts[-1] == ("nginx", "web1") and len(world.ops.restarts) == 3
    modes = [(r.mode, r.state) for r in world.store.history("restart")]
    assert ("skipped", "cooldown") in modes


def test_at_most_max_runs_per_window_and_the_channel_is_told_once(make_world):
    world = make_world(base_config(max_runs=2, window="1h", cooldown="1s"))
    for n in range(5):
        world.receive(alert(f"web{n}"), group=f"g{n}")
        world.settle()
    assert len(world.ops.restarts) == 2
    told = [t for t in world.chat.texts() if "has run 2 times in the last 1h" in t]
    assert len(told) == 1
    world.clock.advance(3601)
    world.receive(alert("web9"), group="g9")
    world.settle()
    assert len(world.ops.restarts) == 3


def test_the_breaker_opens_after_failures_in_a_row_and_resume_closes_it(make_world):
    world = make_world(base_config(breaker_after=2, cooldown="1s"))
    world.ops.fail = True
    world.receive(alert("web1"), group="g1")
    world.settle()
    world.receive(alert("web2"), group="g2")
    world.settle()
    breaker = world.chat.wait_for("circuit breaker")
    assert "stopped after 2 failures in a row" in breaker
    assert "`!remediation resume restart`" in breaker
    [channel_post] = [p for p in world.chat.in_channel("~web") if "circuit breaker" in p["text"]]
    assert channel_post["thread"] == ""  # said in the channel, not buried in a thread
    world.receive(alert("web3"), group="g3")
    world.settle()
    assert len(world.ops.restarts) == 2  # stopped
    assert world.store.rule_state("restart").tripped
    world.ops.fail = False
    world.engine.remediator.resume("restart")
    world.receive(alert("web4"), group="g4")
    world.settle()
    assert world.ops.restarts[-1] == ("nginx", "web4")
    assert world.store.rule_state("restart").failures == 0


def test_too_many_targets_at_once_runs_nothing_and_calls_people(make_world):
    world = make_world(base_config(max_targets=3))
    world.receive(*[alert(f"web{n}") for n in range(4)])
    world.settle()
    assert world.ops.restarts == []
    told = world.chat.wait_for("would touch 4 targets at once")
    assert "max_targets 3" in told and "@alice @sre" in told


def test_a_freeze_window_runs_nothing_and_says_what_would_have_run(make_world):
    document = base_config()
    now = datetime.fromtimestamp(1_700_000_000, UTC)
    document["freeze"] = [
        {"start": now - timedelta(hours=1), "end": now + timedelta(hours=1), "reason": "release"}
    ]
    world = make_world(document)
    world.receive(alert("web1"))
    world.settle()
    assert world.ops.restarts == []
    said = world.chat.wait_for("🧊")
    assert "rule restart would have run `!service restart service=nginx host=web1`" in said
    assert "(release)" in said and "nothing was run" in said
    assert world.runtime.audit.last(5) == []  # nothing was even requested


def test_dry_run_runs_nothing_and_says_what_would_run(make_world):
    world = make_world(base_config(dry_run=True))
    world.receive(alert("web1"))
    world.settle()
    assert world.ops.restarts == []
    said = world.chat.wait_for("🧪 dry run")
    assert "would run `!service restart service=nginx host=web1` as role remediator" in said
    assert world.runtime.audit.last(5) == []


def test_require_approval_asks_two_persons_and_runs_once_approved(make_world):
    world = make_world(base_config(require_approval=True))
    world.receive(alert("web1"))
    world.settle()
    asked = world.chat.wait_for("asks to run")
    assert "rule restart for alert ServiceDown asks to run" in asked
    assert world.ops.restarts == []
    [run] = world.store.open_runs()
    assert run.state == "awaiting approval"
    request_id = world.runtime.pending_requests()[0].id
    assert "granted" in str(world.runtime.decide(request_id, BOB, True))
    world.settle(states=("started", "awaiting approval"))
    assert world.ops.restarts == [("nginx", "web1")]
    assert world.store.history("restart")[0].state == "succeeded"


def test_verify_checks_the_real_state_and_escalates_when_not_recovered(make_world):
    world = make_world(
        base_config(
            verify_within="2m",
            verify={"action": "health.check", "arguments": {"service": "{{labels.service}}"}},
            breaker_after=5,
        )
    )
    world.receive(alert("web1"))
    world.settle()
    [run] = world.store.open_runs()
    assert run.state == "verifying"
    world.receive(alert("web1", Status.RESOLVED))  # "resolved" is not trusted
    world.ops.healthy = False
    world.engine.step()
    assert world.store.open_runs()[0].state == "verifying"  # not due yet
    world.clock.advance(121)
    world.engine.step()
    escalation = world.chat.wait_for("🚨")
    assert "has not recovered after 2m" in escalation and "@alice @sre" in escalation
    assert world.store.history("restart")[0].state == "not recovered"
    assert world.store.rule_state("restart").failures == 1


def test_verify_recovered(make_world):
    world = make_world(
        base_config(
            verify_within="1m",
            verify={"action": "health.check", "arguments": {"service": "{{labels.service}}"}},
        )
    )
    world.receive(alert("web1"))
    world.settle()
    world.clock.advance(61)
    world.engine.step()
    world.chat.wait_for("✅ rule restart: ServiceDown recovered")
    assert world.store.history("restart")[0].state == "recovered"


def test_state_survives_a_restart_between_firing_and_resolving(make_world):
    world = make_world(base_config(breaker_after=1, cooldown="10m"))
    world.receive(alert("web1"))
    world.settle()
    [group] = world.chat.in_channel("~web")
    world.restart_bot()
    world.receive(alert("web1"))  # re-sent after the restart: still the same state
    world.receive(alert("web1", Status.RESOLVED))
    world.receive(alert("web1", starts_at="2024-01-01T00:03:00Z"))  # within the cooldown
    world.settle()
    assert world.ops.restarts == [("nginx", "web1")]
    [same] = world.chat.in_channel("~web")
    assert same["id"] == group["id"]  # the post of before the restart, edited


def test_alerts_stored_but_not_processed_before_a_crash_are_processed_at_start(make_world):
    world = make_world(base_config())
    from bot.alerts.model import Notification

    world.store.add([Notification("am", "g", (alert("web1"),))], world.clock())  # then crash
    world.restart_bot()
    world.settle()
    assert world.ops.restarts == [("nginx", "web1")]
    assert world.store.pending_count() == 0


def test_a_missing_label_refuses_that_alert_and_says_why(world):
    odd = alert("web1")
    labels = dict(odd.labels)
    del labels["host"]
    from dataclasses import replace

    world.receive(replace(odd, labels=labels))
    world.settle()
    assert world.ops.restarts == []
    assert "cannot act on ServiceDown: the alert has no label 'host'" in world.chat.wait_for("⚠️")


def test_denied_when_the_role_lacks_the_grant_counts_as_a_failure(make_world):
    world = make_world(base_config(as_role="nobody", breaker_after=1))
    world.receive(alert("web1"))
    world.settle()
    assert world.ops.restarts == []
    assert "denied" in world.chat.wait_for("⛔ denied")
    assert world.store.rule_state("restart").tripped
