import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.settings import SettingsError, load_settings

OPSROOM = Path(sys.executable).with_name("opsroom")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith(("MATTERMOST_", "OPSROOM_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_select_the_terminal_backend():
    settings = load_settings()
    assert settings.backend == "Text"
    assert settings.opsroom_prefix == "!"
    assert settings.opsroom_max_command_age == timedelta(minutes=10)
    assert settings.mattermost_teams == []


def test_environment_values_are_parsed(monkeypatch):
    monkeypatch.setenv("MATTERMOST_URL", "https://chat.example.com/mm/")
    monkeypatch.setenv("MATTERMOST_TOKEN", "s3cr3t-token")
    monkeypatch.setenv("MATTERMOST_TEAMS", "ops, platform")
    monkeypatch.setenv("OPSROOM_MAX_COMMAND_AGE", "90s")
    monkeypatch.setenv("OPSROOM_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.backend == "Mattermost"
    assert settings.mattermost_teams == ["ops", "platform"]
    assert settings.opsroom_max_command_age == timedelta(seconds=90)
    assert settings.opsroom_log_level == "DEBUG"
    options = settings.driver_options()
    assert (options["scheme"], options["url"], options["port"]) == (
        "https",
        "chat.example.com",
        443,
    )
    assert options["basepath"] == "/mm/api/v4"
    assert "s3cr3t-token" not in repr(settings)


def test_token_file_is_read_and_trimmed(monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("MATTERMOST_URL", "http://127.0.0.1:8065")
    monkeypatch.setenv("MATTERMOST_TOKEN_FILE", str(token_file))
    assert load_settings().token == "from-file"


def test_env_file_is_read_and_environment_wins(monkeypatch, tmp_path):
    (tmp_path / "opsroom.env").write_text("OPSROOM_PREFIX=?\nOPSROOM_ADMINS=alice,bob\n")
    monkeypatch.setenv("OPSROOM_ADMINS", "carol")
    settings = load_settings()
    assert settings.opsroom_prefix == "?"
    assert settings.opsroom_admins == ["carol"]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("OPSROOM_LOG_LEVEL", "LOUD", "OPSROOM_LOG_LEVEL"),
        ("OPSROOM_MAX_COMMAND_AGE", "ten minutes", "OPSROOM_MAX_COMMAND_AGE"),
        ("OPSROOM_MAX_COMMAND_AGE", "0", "must be greater than zero"),
        ("MATTERMOST_URL", "not a url", "MATTERMOST_URL"),
        ("OPSROOM_POST_WORKERS", "0", "OPSROOM_POST_WORKERS"),
        ("OPSROOM_PREFIX", "! ", "OPSROOM_PREFIX"),
        ("OPSROOM_BACKFILL_WINDOW", "8d", "at most 7d"),
    ],
)
def test_bad_values_name_the_key(monkeypatch, key, value, expected):
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert expected in str(err.value)


def test_url_without_token_is_refused(monkeypatch):
    monkeypatch.setenv("MATTERMOST_URL", "http://127.0.0.1:8065")
    with pytest.raises(SettingsError, match="MATTERMOST_TOKEN"):
        load_settings()


def test_unreadable_token_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("MATTERMOST_URL", "http://127.0.0.1:8065")
    monkeypatch.setenv("MATTERMOST_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="MATTERMOST_TOKEN_FILE"):
        load_settings()


def run_cli(*args, env=None, cwd=None):
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("MATTERMOST_", "OPSROOM_"))}
    return subprocess.run(
        [str(OPSROOM), *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_passes_and_fails_with_the_key_named(tmp_path):
    ok = run_cli("check-config", cwd=tmp_path)
    assert ok.returncode == 0 and "configuration OK" in ok.stdout
    bad = run_cli("check-config", env={"OPSROOM_LOG_LEVEL": "LOUD"}, cwd=tmp_path)
    assert bad.returncode == 2
    assert "OPSROOM_LOG_LEVEL" in bad.stderr


def test_secrets_are_not_echoed_in_errors(tmp_path):
    result = run_cli(
        "check-config",
        env={"MATTERMOST_URL": "nope", "MATTERMOST_TOKEN": "hunter2-very-secret"},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "hunter2-very-secret" not in result.stderr + result.stdout


def test_run_without_config_file_explains(tmp_path):
    result = run_cli("run", "--config", str(tmp_path / "nope.py"), cwd=tmp_path)
    assert result.returncode == 2 and "not found" in result.stderr


def test_healthcheck_reflects_the_heartbeat(tmp_path):
    from bot.mattermost import heartbeat

    env = {"OPSROOM_DATA_DIR": str(tmp_path)}
    assert run_cli("healthcheck", env=env, cwd=tmp_path).returncode == 1
    heartbeat.beat(tmp_path)
    assert run_cli("healthcheck", env=env, cwd=tmp_path).returncode == 0


def test_check_config_validates_the_policy_file(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("roles:\n  deployer:\n    grants:\n      - environments: [staging]\n")
    bad = run_cli("check-config", env={"OPSROOM_POLICY": str(policy)}, cwd=tmp_path)
    assert bad.returncode == 2
    assert f"{policy}: roles.deployer.grants.0.action: required key is missing" in bad.stderr
    policy.write_text("roles:\n  deployer:\n    grants:\n      - action: deploy\n")
    ok = run_cli("check-config", env={"OPSROOM_POLICY": str(policy)}, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


def test_values_of_named_variables_are_secrets(monkeypatch):
    monkeypatch.setenv("MATTERMOST_URL", "http://127.0.0.1:8065")
    monkeypatch.setenv("MATTERMOST_TOKEN", "tok-123456")
    monkeypatch.setenv("JENKINS_TOKEN", "jenkins-abcdef")
    monkeypatch.setenv("OPSROOM_REDACT_ENV", "JENKINS_TOKEN, UNSET_VARIABLE")
    assert load_settings().secrets == ["tok-123456", "jenkins-abcdef"]


def test_check_config_validates_the_inventory_file(tmp_path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("environments:\n  staging:\n    hosts:\n      web1: {port: 22}\n")
    bad = run_cli("check-config", env={"OPSROOM_INVENTORY": str(inventory)}, cwd=tmp_path)
    assert bad.returncode == 2
    assert f"{inventory}: environments.staging.hosts.web1.address" in bad.stderr
