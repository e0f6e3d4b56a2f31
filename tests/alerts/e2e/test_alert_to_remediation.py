"""End to end: a service goes down, Prometheus fires, Alertmanager posts to the bot, the bot
posts in the routed channel and restarts the service over SSH; the service comes back and
the resolved notification updates the post. All real except Mattermost (the fake server)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml

from bot.testing.sshd import free_port
from tests.alerts.servers import start_service_down_stack
from tests.e2e import harness

TOKEN = "alertmanager-token-e2e-0123456789"


wait_until = functools.partial(harness.wait_until, timeout=60.0)


@pytest.fixture
def stack(tmp_path, prometheus_stack, exporter, ssh_hosts, inventory_for):
    """Alertmanager posting to the bot's port, Prometheus scraping the exporter, a host
    ``web0`` (staging) with nginx, the alerts file and the policy; returns what the tests use."""
    host = ssh_hosts[0]
    inventory = inventory_for([host])
    host.set_unit("nginx", active=False)
    exporter.set("nginx", "web0", True)
    bot_port = free_port()
    am, prom = start_service_down_stack(tmp_path, exporter, bot_port, TOKEN, prometheus_stack)
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
                "alertmanager": {"url": am.url},
                "prometheus": {"url": prom.url},
                "routes": [
                    {"matchers": ["team=web"], "channel": "~alpha/ops", "mention": ["@alice"]}
                ],
                "rules": [
                    {
                        "name": "restart-down-service",
                        "matchers": ["alertname=ServiceDown"],
                        "action": "service.restart",
                        "arguments": {
                            "service": "{{labels.service}}",
                            "selector": "{{labels.host}}",
                        },
                        "as_role": "remediator",
                        "cooldown": "10m",
                        "silence": True,
                        "verify_within": "3s",
                        "verify": {"prometheus": 'service_up{host="web0"} == 1'},
                    }
                ],
            }
        )
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "roles": {
                    "remediator": {
                        "members": [],
                        "grants": [{"action": "service.restart", "environments": ["staging"]}],
                    }
                }
            }
        )
    )
    env = {
        "OPSROOM_HTTP_LISTEN": f"127.0.0.1:{bot_port}",
        "OPSROOM_ALERTS": str(alerts),
        "OPSROOM_POLICY": str(policy),
        "OPSROOM_INVENTORY": str(inventory),
        "TEST_AM_TOKEN": TOKEN,
    }
    return {"host": host, "am": am, "prom": prom, "env": env, "port": bot_port}


def ops_posts(mm, world):
    return [p for p in mm.posts_by(world.bot) if p["channel_id"] == world.ops["id"]]


def group_post(mm, world):
    found = [
        p for p in ops_posts(mm, world) if "ServiceDown" in p["message"] and not p.get("root_id")
    ]
    return mm.get_post(found[0]["id"]) if found else None


def test_service_down_is_posted_restarted_over_ssh_verified_and_resolved(
    fake_mm, world, make_bot, exporter, stack
):
    host = stack["host"]
    bot = make_bot(**stack["env"])
    bot.wait_for_log("alert receiver am (alertmanager)")
    ready = __import__("requests").get(f"http://127.0.0.1:{stack['port']}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text

    exporter.set("nginx", "web0", False)  # the service goes down
    post = wait_until(lambda: group_post(fake_mm, world), message="the group post")
    assert "🔥 ServiceDown: 1 firing, 0 resolved · @alice" in post["message"]
    assert "nginx is down on web0" in post["message"]

    wait_until(
        lambda: any(c[:2] == ["restart", "nginx"] for c in host.systemctl_calls()),
        message="systemctl restart nginx over SSH",
    )
    assert host.unit_state("nginx") == "active"
    echo = wait_until(
        lambda: (
            next(
                (
                    p["message"]
                    for p in ops_posts(fake_mm, world)
                    if p.get("root_id") == post["id"]
                    and "succeeded" in fake_mm.get_post(p["id"])["message"]
                ),
                None,
            )
            and [
                fake_mm.get_post(p["id"])["message"]
                for p in ops_posts(fake_mm, world)
                if p.get("root_id") == post["id"]
            ]
        ),
        message="the run's echo in the group's thread",
    )
    assert any("by rule restart-down-service for alert ServiceDown" in m for m in echo)
    # While remediating, an Alertmanager silence covered the alert; it is expired afterwards.
    silences = stack["am"].silences()
    assert [s["comment"] for s in silences] == [
        "opsroom: rule restart-down-service is remediating this alert"
    ]

    exporter.set("nginx", "web0", True)  # the test brings the target back
    wait_until(
        lambda: "✅ ServiceDown: all 1 resolved" in fake_mm.get_post(post["id"])["message"],
        message="the resolved notification editing the group post",
    )
    wait_until(
        lambda: any(
            "recovered" in fake_mm.get_post(p["id"])["message"] for p in ops_posts(fake_mm, world)
        ),
        message="verified against Prometheus",
    )
    wait_until(
        lambda: all(s["status"]["state"] == "expired" for s in stack["am"].silences()),
        message="the silence expired",
    )
    assert len([p for p in ops_posts(fake_mm, world) if not p.get("root_id")]) == 1
    restarts = [c for c in host.systemctl_calls() if c[:1] == ["restart"]]
    assert len(restarts) == 1
    records = bot.log()
    assert "Traceback" not in records


def test_wrong_token_is_refused_and_nothing_runs(fake_mm, world, make_bot, stack):
    make_bot(**stack["env"])
    import requests

    body = json.dumps({"version": "4", "groupKey": "x", "status": "firing", "alerts": []})
    answer = requests.post(
        f"http://127.0.0.1:{stack['port']}/alerts/am",
        data=body,
        headers={"Authorization": "Bearer forged", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 401
    assert ops_posts(fake_mm, world) == []


def test_a_restart_between_firing_and_resolving_keeps_the_post_and_runs_once(
    fake_mm, world, make_bot, exporter, stack
):
    host = stack["host"]
    bot = make_bot(**stack["env"])
    bot.wait_for_log("alert receiver am (alertmanager)")
    exporter.set("nginx", "web0", False)
    post = wait_until(lambda: group_post(fake_mm, world), message="the group post")
    wait_until(lambda: any(c[:1] == ["restart"] for c in host.systemctl_calls()), message="restart")
    bot.stop()
    host.set_unit("nginx", active=False)  # still down while the bot is away
    bot = make_bot(**stack["env"])
    bot.wait_for_log("alert receiver am (alertmanager)")
    exporter.set("nginx", "web0", True)
    wait_until(
        lambda: "✅ ServiceDown: all 1 resolved" in fake_mm.get_post(post["id"])["message"],
        message="the post of before the restart, edited",
    )
    assert len([p for p in ops_posts(fake_mm, world) if not p.get("root_id")]) == 1
    assert len([c for c in host.systemctl_calls() if c[:1] == ["restart"]]) == 1


def test_commands_list_silence_and_steer_the_rules(fake_mm, world, make_bot, exporter, stack):
    policy_file = Path(stack["env"]["OPSROOM_POLICY"])
    policy = yaml.safe_load(policy_file.read_text())
    policy["roles"]["oncall"] = {
        "members": ["@alice"],
        "grants": [{"action": "remediation.*"}, {"action": "alerts.silence"}],
    }
    policy_file.write_text(yaml.safe_dump(policy))
    make_bot(**stack["env"]).wait_for_log("alert receiver am (alertmanager)")

    def ask(command, expect):
        before = len(fake_mm.posts_by(world.bot))
        fake_mm.post_as(world.alice, world.ops, command)
        return wait_until(
            lambda: next(
                (
                    fake_mm.get_post(p["id"])["message"]
                    for p in fake_mm.posts_by(world.bot)[before:]
                    if expect in fake_mm.get_post(p["id"])["message"]
                ),
                None,
            ),
            timeout=20,
            message=f"{command} answering {expect!r}",
        )

    exporter.set("nginx", "web0", False)
    wait_until(lambda: group_post(fake_mm, world), message="the group post")
    listed = ask("!alerts list service=nginx", "firing alert(s)")
    assert "ServiceDown" in listed and "host=web0" in listed
    assert "0 firing alert(s)" in ask("!alerts list service=postgres", "firing alert(s)")
    ask("!remediation pause restart-down-service because maintenance", "paused")
    status = ask("!remediation status", "restart-down-service")
    assert "paused" in status
    ask("!remediation resume restart-down-service", "resumed")
    history = ask("!remediation history restart-down-service", "decision(s) of rule")
    assert "ServiceDown" in history
    refused = ask("!remediation pause nope", "no remediation rule")
    assert "restart-down-service" in refused
    said = ask(
        '!alerts silence alertname=ServiceDown host=~"web.*" for 1h because deploy', "silenced"
    )
    assert 'alertname="ServiceDown", host=~"web.*" for 1h' in said
    silences = [s for s in stack["am"].silences() if s["comment"] == "deploy"]
    assert silences and silences[0]["createdBy"] == "@alice"
