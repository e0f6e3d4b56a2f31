"""Rules may name any declared action, e.g. the Kubernetes and Jenkins ones, and may
declare incidents: ``opsroom check-config`` (the start-up checks) validates them against
the actions' typed signatures and names the file and key of every mistake."""

from __future__ import annotations

import yaml

from bot.backends.registry import declared_actions
from tests.unit.test_check_config import ROOT, opsroom

K8S = {
    "name": "restart-deployment",
    "matchers": ["alertname=PodCrashLooping"],
    "action": "k8s.rollout.restart",
    "arguments": {"deployment": "{{labels.deployment}}", "env": "{{labels.env}}"},
    "as_role": "remediator",
}
JENKINS = {
    "name": "redeploy",
    "matchers": ["alertname=BadRelease"],
    "action": "jenkins.build",
    "arguments": {"job": "deploy-{{labels.service}}", "env": "{{labels.env}}"},
    "as_role": "remediator",
}
INCIDENT = {
    "name": "declare-outage",
    "matchers": ["severity=page"],
    "incident": {
        "title": "{{alertname}} on {{labels.service}}",
        "severity": 2,
        "service": "{{labels.service}}",
    },
    "as_role": "responder",
}


def check(tmp_path, *rules):
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump({"routes": [], "rules": list(rules)}))
    return path, opsroom("check-config", cwd=tmp_path, env={"OPSROOM_ALERTS": str(path)})


def test_the_kubernetes_jenkins_and_incident_actions_are_declared():
    actions, broken = declared_actions([ROOT / "plugins"])
    assert broken == []
    assert {"k8s.rollout.restart", "jenkins.build", "incident.declare"} <= set(actions)
    assert [p.name for p in actions["k8s.rollout.restart"].params][:2] == ["deployment", "env"]


def test_rules_with_kubernetes_jenkins_and_incident_actions_are_accepted(tmp_path):
    both = {**K8S, **INCIDENT, "name": "restart-and-declare", "as_role": "remediator"}
    path, result = check(tmp_path, K8S, JENKINS, INCIDENT, both)
    assert result.returncode == 0, result.stderr
    assert f"{path} (0 receivers, 0 routes, 4 rules)" in result.stdout


def test_an_unknown_parameter_of_a_kubernetes_or_jenkins_action_stops_start_up(tmp_path):
    path, result = check(
        tmp_path,
        {**K8S, "arguments": {**K8S["arguments"], "replicas": "3"}},
        {**JENKINS, "arguments": {"jobb": "deploy"}},
    )
    assert result.returncode == 2
    assert (
        f"{path}: rules.0.arguments.replicas: k8s.rollout.restart has no parameter 'replicas'"
        in result.stderr
    )
    assert f"{path}: rules.1.arguments.jobb: jenkins.build has no parameter 'jobb'" in result.stderr
    assert f"{path}: rules.1.arguments: jenkins.build needs 'job'" in result.stderr


def test_a_fixed_value_the_action_refuses_stops_start_up(tmp_path):
    path, result = check(tmp_path, {**K8S, "arguments": {**K8S["arguments"], "wait": "soon"}})
    assert result.returncode == 2
    assert f"{path}: rules.0.arguments.wait:" in result.stderr


def test_a_wrong_incident_option_stops_start_up_naming_the_key(tmp_path):
    path, result = check(tmp_path, {**INCIDENT, "incident": {**INCIDENT["incident"], "sev": 1}})
    assert result.returncode == 2
    assert "rules.0.incident.sev" in result.stderr and str(path) in result.stderr
    path, result = check(
        tmp_path, {**INCIDENT, "incident": {**INCIDENT["incident"], "severity": 9}}
    )
    assert result.returncode == 2
    assert f"{path}: rules.0.incident.severity:" in result.stderr
    path, result = check(tmp_path, {**INCIDENT, "incident": {"title": "{{label.service}} is down"}})
    assert result.returncode == 2
    assert "{{label.service}}: expected labels.<name>" in result.stderr
    path, result = check(tmp_path, {k: v for k, v in INCIDENT.items() if k != "incident"})
    assert result.returncode == 2
    assert "give an action, an incident, or both" in result.stderr
