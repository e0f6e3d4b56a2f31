"""The inventory's kubernetes: section at start-up: validated, contexts checked."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from bot.inventory import Inventory, InventoryError
from tests.unit.test_check_config import CONNECTED, opsroom


def inventory_with(tmp_path, kubernetes):
    path = tmp_path / "inventory.yaml"
    environment = {"hosts": {"stg-1": {"address": "127.0.0.1"}}, "kubernetes": kubernetes}
    path.write_text(yaml.safe_dump({"environments": {"staging": environment}}))
    return path


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"context": "x", "namespaces": ["web"], "replicas": 3}, "kubernetes.replicas"),
        ({"context": "x", "namespaces": []}, "kubernetes.namespaces"),
        ({"context": "x", "namespaces": ["Web"]}, "expected a namespace name"),
        ({"context": "x", "namespaces": ["web"], "max_replicas": -1}, "max_replicas"),
        ({"namespaces": ["web"]}, "kubernetes.context"),
    ],
)
def test_a_bad_section_names_the_key(tmp_path, section, message):
    with pytest.raises(InventoryError, match=message):
        Inventory.load(inventory_with(tmp_path, section))


def test_namespace_globs_and_default():
    from bot.inventory.kubernetes import KubernetesEntry

    entry = KubernetesEntry(context="c", namespaces=["team-*", "web"])
    assert entry.allows("team-blue") and entry.allows("web") and not entry.allows("kube-system")
    assert entry.default_namespace == "web"


def test_a_context_missing_from_the_kubeconfig_stops_start_up(fake_k8s, tmp_path):
    inventory = inventory_with(tmp_path, {"context": "stg", "namespaces": ["web"]})
    env = {
        **CONNECTED,
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
        "OPSROOM_INVENTORY": str(inventory),
        "OPSROOM_DATA_DIR": str(tmp_path / "data"),
    }
    for command in ("check-config", "run"):
        result = opsroom(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert (
            f"{inventory}: environments.staging.kubernetes.context: no context 'stg' in "
            f"{tmp_path / 'kubeconfig'} (contexts there: fake)"
        ) in result.stderr
    env["OPSROOM_INVENTORY"] = str(
        inventory_with(tmp_path, {"context": "fake", "namespaces": ["web"]})
    )
    assert opsroom("check-config", cwd=tmp_path, env=env).returncode == 0
