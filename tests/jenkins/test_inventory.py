"""The inventory's jenkins sections: validation, allow-lists, tokens as secrets."""

from __future__ import annotations

import pytest
import yaml

from bot.errors import Refusal, UnknownTarget
from bot.inventory import Inventory, InventoryError, NotAllowed
from bot.inventory.jenkins import JenkinsMap, TokenUnavailable, jenkins_secrets
from bot.settings import load_settings

HOSTS = {"web1": {"address": "127.0.0.1"}}


def document(**jenkins_envs):
    return {
        "jenkins": {
            "servers": {
                "ci": {"url": "https://ci.test", "user": "bot", "token_env": "CI_TOKEN_TEST"}
            }
        },
        "environments": {
            env: {"hosts": {f"{env}-web": {"address": "127.0.0.1"}}, "jenkins": section}
            for env, section in jenkins_envs.items()
        },
    }


def load(raw, tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, JenkinsMap(Inventory.load(path).document, str(path), tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["jenkins"]["servers"]["ci"].update(token="x"), "jenkins.servers.ci.token"),
        (lambda d: d["jenkins"]["servers"]["ci"].pop("token_env"), "exactly one of token_file"),
        (lambda d: d["jenkins"]["servers"]["ci"].update(url="ftp://x"), "http:// or https://"),
        (
            lambda d: d["environments"]["staging"]["jenkins"].update(server="cj"),
            "environments.staging.jenkins.server: no server 'cj' in jenkins.servers (known: ci)",
        ),
        (lambda d: d["environments"]["staging"]["jenkins"].update(jobs=[]), "jobs"),
        (lambda d: d["environments"]["staging"]["jenkins"].update(colour=1), "colour"),
    ],
)
def test_bad_sections_name_file_and_key(tmp_path, change, message):
    raw = document(staging={"server": "ci", "jobs": ["app"]})
    change(raw)
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InventoryError) as caught:
        Inventory.load(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_allow_lists(tmp_path):
    _, jmap = load(
        document(
            staging={"server": "ci", "jobs": ["team/app", "tools/*-staging"]},
            production={"server": "ci", "jobs": ["team/app/release", "tools/*-prod"]},
        ),
        tmp_path,
    )
    assert jmap.place("team/app/deploy").environment == "staging"  # a folder allows its jobs
    assert jmap.place("tools/db-staging").environment == "staging"
    assert jmap.place("tools/db-prod").environment == "production"
    with pytest.raises(NotAllowed, match="not allowed in any environment"):
        jmap.place("tools/sub/db-prod")  # * does not cross /
    with pytest.raises(Refusal, match="allowed in production and staging: name the environment"):
        jmap.place("team/app/release")
    assert jmap.place("team/app/release", "production").environment == "production"
    with pytest.raises(NotAllowed, match="not allowed in staging"):
        jmap.place("tools/db-prod", "staging")
    with pytest.raises(UnknownTarget, match="did you mean staging"):
        jmap.place("team/app/x", "stagin")


def test_tokens_are_read_when_used_and_scrubbed(tmp_path, monkeypatch):
    path, jmap = load(document(staging={"server": "ci", "jobs": ["app"]}), tmp_path)
    monkeypatch.delenv("CI_TOKEN_TEST", raising=False)
    with pytest.raises(TokenUnavailable, match=r"CI_TOKEN_TEST is not set .*token_env"):
        jmap.servers["ci"].token()
    assert jenkins_secrets(path) == []
    monkeypatch.setenv("CI_TOKEN_TEST", "11aa22bb33cc")
    assert jenkins_secrets(path) == ["11aa22bb33cc"]
    monkeypatch.setenv("OPSROOM_INVENTORY", str(path))
    assert "11aa22bb33cc" in load_settings().secrets


def test_token_file_relative_to_the_inventory(tmp_path):
    raw = document(staging={"server": "ci", "jobs": ["app"]})
    raw["jenkins"]["servers"]["ci"] = {"url": "http://ci", "user": "bot", "token_file": "ci.token"}
    _, jmap = load(raw, tmp_path)
    with pytest.raises(TokenUnavailable, match="cannot read"):
        jmap.servers["ci"].token()
    (tmp_path / "ci.token").write_text("tok-from-file\n")
    assert jmap.servers["ci"].token() == "tok-from-file"
