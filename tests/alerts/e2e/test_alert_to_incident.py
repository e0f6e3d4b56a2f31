"""End to end: an alert from the real Alertmanager declares an incident. A service goes
down, Prometheus fires, Alertmanager posts to the real bot process, and a rule with
``incident:`` declares it as the rule (war room created, summary pinned, the alert on the
timeline with its fingerprint); the service comes back and the resolution is noted on the
incident's timeline. All real except Mattermost (the fake server)."""

from __future__ import annotations

import pytest
import yaml

from bot.incidents.store import FILENAME, IncidentStore
from bot.testing.sshd import free_port
from tests.alerts.e2e.test_alert_to_remediation import group_post, ops_posts, wait_until
from tests.alerts.servers import start_service_down_stack

TOKEN = "alertmanager-token-e2e-incident-0123"


@pytest.fixture
def stack(tmp_path, prometheus_stack, exporter):
    exporter.set("nginx", "web0", True)
    bot_port = free_port()
    start_service_down_stack(tmp_path, exporter, bot_port, TOKEN, prometheus_stack)
    alerts = tmp_path / "alerts.yaml"
    alerts.write_text(
        yaml.safe_dump(
            {
                "receivers": {
                    "am": {
                        "kind": "alertmanager",
                        "auth": {"bearer": {"token": {"env": "TEST_AM_TOKEN"}}},
                    }
                },
                "routes": [{"matchers": ["team=web"], "channel": "~alpha/ops"}],
                "rules": [
                    {
                        "name": "declare-service-down",
                        "matchers": ["alertname=ServiceDown"],
                        "incident": {
                            "title": "{{labels.alertname}} on {{labels.service}}",
                            "severity": 2,
                            "service": "{{labels.service}}",
                        },
                        "as_role": "responder",
                    }
                ],
            }
        )
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {"roles": {"responder": {"members": [], "grants": [{"action": "incident.declare"}]}}}
        )
    )
    return {
        "OPSROOM_HTTP_LISTEN": f"127.0.0.1:{bot_port}",
        "OPSROOM_ALERTS": str(alerts),
        "OPSROOM_POLICY": str(policy),
        "TEST_AM_TOKEN": TOKEN,
    }


def timeline(data_dir):
    store = IncidentStore(data_dir / FILENAME)
    try:
        incidents = store.open_incidents() or [i for i in [store.get(1)] if i]
        return incidents, [e.text for e in store.events(1)] if incidents else []
    finally:
        store.close()


def declared(data_dir):
    """The open incidents once the first has its summary post."""
    incidents, _ = timeline(data_dir)
    return incidents if incidents and incidents[0].summary_post_id else None


def pinned(post):
    return post if post["is_pinned"] else None


def test_an_alert_from_alertmanager_declares_an_incident_and_its_resolution_is_noted(
    fake_mm, world, make_bot, exporter, stack, tmp_path
):
    bot = make_bot(**stack)
    bot.wait_for_log("alert receiver am (alertmanager)")
    data = tmp_path / "data"

    exporter.set("nginx", "web0", False)  # the service goes down
    post = wait_until(lambda: group_post(fake_mm, world), message="the group post")
    # INC-1 is stored before its summary is posted and pinned: wait for the whole of it.
    [incident] = wait_until(lambda: declared(data), message="INC-1 and its summary post")
    assert incident.title == "ServiceDown on nginx"
    assert (incident.severity, incident.service) == (2, "nginx")
    assert incident.declared_by.id == "rule:declare-service-down"
    assert incident.alert is not None and incident.alert.name == "ServiceDown"
    fingerprint = incident.alert.fingerprint
    room = fake_mm.get_channel(incident.channel_id)
    assert room["display_name"] == "INC-1 ServiceDown on nginx"
    summary = wait_until(
        lambda: pinned(fake_mm.get_post(incident.summary_post_id)), message="summary pinned"
    )
    assert "🚨 INC-1: ServiceDown on nginx" in summary["message"]
    # The declaration is echoed in the alert group's thread, by the rule for the alert.
    echo = wait_until(
        lambda: next(
            (
                fake_mm.get_post(p["id"])["message"]
                for p in ops_posts(fake_mm, world)
                if p.get("root_id") == post["id"]
                and "INC-1 declared" in fake_mm.get_post(p["id"])["message"]
            ),
            None,
        ),
        message="the declaration's echo in the group's thread",
    )
    assert "by rule declare-service-down for alert ServiceDown" in echo
    assert f"alert ServiceDown ({fingerprint})" in timeline(data)[1]

    exporter.set("nginx", "web0", True)  # the target comes back
    resolved = f"alert ServiceDown ({fingerprint}): resolved · nginx is down on web0"
    wait_until(lambda: resolved in timeline(data)[1], message="the resolution on the timeline")
    # One incident: the resolved alert of its group went to its timeline, not a new one.
    assert [i.id for i in timeline(data)[0]] == [1]
    assert "Traceback" not in bot.log()
