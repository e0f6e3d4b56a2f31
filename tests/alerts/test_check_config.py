"""``opsroom check-config`` and ``run`` refuse an alerts file whose rules name an unknown
action or parameter, and a busy HTTP port; they show the alerts file in effect."""

from __future__ import annotations

import socket
import subprocess

import yaml

from tests.unit.test_check_config import ROOT, opsroom, summary

EXAMPLE = ROOT / "examples" / "alerts.yaml"


def alerts_file(tmp_path, **rule):
    path = tmp_path / "alerts.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "routes": [{"matchers": [], "channel": "~ops"}],
                "rules": [
                    {
                        "name": "restart",
                        "matchers": ["alertname=ServiceDown"],
                        "action": "service.restart",
                        "arguments": {
                            "service": "{{labels.service}}",
                            "selector": "{{labels.host}}",
                        },
                        "as_role": "remediator",
                        **rule,
                    }
                ],
            }
        )
    )
    return path


def test_a_valid_alerts_file_is_shown_in_effect(tmp_path):
    result = opsroom(
        "check-config", cwd=tmp_path, env={"OPSROOM_ALERTS": str(alerts_file(tmp_path))}
    )
    assert result.returncode == 0, result.stderr
    assert (
        summary(result.stdout)["alerts"]
        == f"{tmp_path / 'alerts.yaml'} (0 receivers, 1 routes, 1 rules)"
    )


def test_an_unknown_action_or_parameter_stops_both(tmp_path):
    path = alerts_file(tmp_path, action="service.reboot")
    for command in ("check-config", "run"):
        result = opsroom(
            command, cwd=tmp_path, env={"OPSROOM_ALERTS": str(path)}, stdin=subprocess.DEVNULL
        )
        assert result.returncode == 2, (command, result.stderr)
        assert f"{path}: rules.0.action: unknown action 'service.reboot'" in result.stderr
    path = alerts_file(tmp_path, arguments={"service": "x", "selector": "y", "force": "yes"})
    result = opsroom("check-config", cwd=tmp_path, env={"OPSROOM_ALERTS": str(path)})
    assert result.returncode == 2
    assert (
        f"{path}: rules.0.arguments.force: service.restart has no parameter 'force'"
        in result.stderr
    )


def test_a_busy_http_port_stops_start_up(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        result = opsroom("check-config", cwd=tmp_path, env={"OPSROOM_HTTP_LISTEN": listen})
    assert result.returncode == 2
    assert (
        f"OPSROOM_HTTP_LISTEN: cannot listen on {listen}: Address already in use" in result.stderr
    )


def test_the_example_alerts_file_is_valid(tmp_path):
    env = {
        "OPSROOM_ALERTS": str(EXAMPLE),
        "ALERTMANAGER_TOKEN": "x" * 32,
        "GRAFANA_WEBHOOK_SECRET": "y" * 32,
        "UPTIME_TOKEN": "z" * 32,
    }
    result = opsroom("check-config", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert summary(result.stdout)["alerts"] == f"{EXAMPLE} (3 receivers, 3 routes, 3 rules)"
