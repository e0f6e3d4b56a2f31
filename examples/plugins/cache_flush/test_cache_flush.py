"""Tests of the cache_flush plugin on Errbot's test backend (fixtures: conftest.py)."""

import logging
from pathlib import Path

from bot.backends.actions import surface_for
from bot.plugin import Rule
from bot.runtime.actions import spec_of
from bot.testing import (
    OTHER_USER,
    TEST_USER,
    audit_id,
    audit_records,
    errbot_config,
    plugin_dirs,
    pop_until,
    push_as,
    request_id,
    runtime,
)

extra_plugin_dir = plugin_dirs(Path(__file__).parent)  # this plugin + Opsroom's own
extra_config = errbot_config()  # messages come from TEST_USER (@alice)
loglevel = logging.INFO  # Errbot logs at DEBUG by default
opsroom_policy = {
    "protected_environments": ["production"],
    "roles": {
        "cache-admin": {
            "members": [TEST_USER],
            "grants": [{"action": "cache.flush", "environments": ["staging", "production"]}],
        },
    },
}


def test_flush_runs_as_a_job_and_is_audited(testbot, opsroom):
    testbot.push_message("!cache flush sessions in staging")
    assert "accepted as job" in testbot.pop_message()
    done = pop_until(testbot, "succeeded")
    assert "flushed sessions in staging" in done
    records = audit_records(testbot)
    assert [record.event for record in records] == ["requested", "started", "succeeded"]
    assert audit_id(done) == records[-1].id
    assert records[-1].parameters == {"cache": "sessions", "env": "staging"}
    assert (opsroom.data_dir / "cache-flushes.log").read_text() == "staging sessions\n"


def test_someone_without_the_role_is_denied(testbot, opsroom):
    push_as(testbot, OTHER_USER, "!cache flush sessions in staging")
    assert "needs role cache-admin" in testbot.pop_message()
    assert [r.event for r in audit_records(testbot)] == ["requested", "denied"]
    assert not (opsroom.data_dir / "cache-flushes.log").exists()


def test_a_bad_argument_is_refused_with_usage(testbot, opsroom):
    testbot.push_message("!cache flush 'sessions; rm -rf /' in staging")
    answer = testbot.pop_message()
    assert "usage: !cache flush <cache> in <env>" in answer
    assert "nothing was run" in answer
    assert [r.event for r in audit_records(testbot)] == ["denied"]
    assert not (opsroom.data_dir / "cache-flushes.log").exists()


def test_production_needs_confirmation(testbot):
    testbot.push_message("!cache flush sessions in production")
    question = testbot.pop_message()
    assert "touches protected production" in question
    push_as(testbot, OTHER_USER, f"!confirm {request_id(question)}")
    assert "only @alice can confirm" in testbot.pop_message()
    testbot.push_message(f"!confirm {request_id(question)}")
    assert "succeeded" in pop_until(testbot, "succeeded")
    events = [r.event for r in audit_records(testbot)]
    # @bob's refused confirmation is a record too, with his id as the decider
    assert events == [
        "requested",
        "confirmation_requested",
        "refused",
        "granted",
        "started",
        "succeeded",
    ]


def test_the_audit_chain_verifies(testbot):
    testbot.push_message("!cache flush sessions in staging")
    pop_until(testbot, "succeeded")
    testbot.push_message("!audit verify")
    assert "audit log OK: 3 records" in testbot.pop_message()


def test_an_alert_rule_runs_the_action_as_a_role(testbot):
    """What an alert rule does: the same entry point, policy, job and audit as from chat,
    acting as a policy role, echoed in a channel."""
    plugin = testbot.bot.plugin_manager.get_plugin_obj_by_name("CacheFlush")
    rule = Rule("flush-on-alert", role="cache-admin", alert="f00dfeed", alert_name="StaleCache")
    place = surface_for(testbot.bot).place_named("#ops")
    arguments = {"cache": "sessions", "env": "staging"}
    runtime(testbot).submit(spec_of(plugin.flush), plugin, arguments, rule, place)
    assert "accepted as job" in testbot.pop_message()
    done = pop_until(testbot, "succeeded")
    assert "by rule flush-on-alert for alert StaleCache" in done
    records = audit_records(testbot)
    assert {r.trigger for r in records} == {"alert:f00dfeed"}
    assert records[-1].actor_id == "rule:flush-on-alert"


def test_a_rule_acting_as_a_role_without_the_grant_is_denied(testbot):
    plugin = testbot.bot.plugin_manager.get_plugin_obj_by_name("CacheFlush")
    rule = Rule("careless", role="no-such-role", alert="0badf00d")
    place = surface_for(testbot.bot).place_named("#ops")
    arguments = {"cache": "sessions", "env": "staging"}
    runtime(testbot).submit(spec_of(plugin.flush), plugin, arguments, rule, place)
    assert "needs role cache-admin" in testbot.pop_message()
    assert [r.event for r in audit_records(testbot)] == ["requested", "denied"]
