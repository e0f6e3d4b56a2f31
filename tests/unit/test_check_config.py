"""`opsroom check-config` passes only what `opsroom run` starts with, and says what is in effect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.errbot_config import errbot_config
from bot.mattermost.splitting import MATTERMOST_MAX_POST_LENGTH
from bot.settings import load_settings, sample_inventory_path
from bot.shipped import plugins_dir
from bot.testing.fake_mattermost.fixtures import fake_mm  # noqa: F401

OPSROOM = Path(sys.executable).with_name("opsroom")
ROOT = Path(__file__).resolve().parents[2]
CONNECTED = {"MATTERMOST_URL": "http://127.0.0.1:9", "MATTERMOST_TOKEN": "tok-abcdef"}


SHIPPED = (
    "Alerts, OpsroomHelp, HttpServer, Incidents, Jenkins, Kubernetes, Opsroom, Runtime, SSHOps"
)


def opsroom(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: int | None = None):
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MATTERMOST_", "OPSROOM_"))}
    return subprocess.run(
        [str(OPSROOM), *args],
        env={**base, "OPSROOM_HTTP_LISTEN": "127.0.0.1:0", **(env or {})},
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def summary(stdout: str) -> dict[str, str]:
    """The "setting  in effect" rows of check-config's output."""
    rows = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("  ")
        if value.strip():
            rows[key] = value.strip()
    return rows


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("MATTERMOST_", "OPSROOM_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


# --- what run would fail on ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"MATTERMOST_URL": "chat.example.com", "MATTERMOST_TOKEN": "tok"},
            "MATTERMOST_URL: must start with https:// or http:// (e.g. https://chat.example.com)",
        ),
        (
            {"MATTERMOST_TOKEN": "tok"},
            "MATTERMOST_TOKEN or MATTERMOST_TOKEN_FILE is set but MATTERMOST_URL is not",
        ),
        (
            {"MATTERMOST_TOKEN_FILE": "/run/secrets/token"},
            "MATTERMOST_TOKEN or MATTERMOST_TOKEN_FILE is set but MATTERMOST_URL is not",
        ),
        ({**CONNECTED, "MATTERMOST_TOKEN": ""}, "MATTERMOST_TOKEN is empty"),
        ({**CONNECTED, "MATTERMOST_TOKEN": "  "}, "MATTERMOST_TOKEN is empty"),
    ],
)
def test_check_config_and_run_refuse_what_run_cannot_use(tmp_path, env, message):
    for command in ("check-config", "run"):
        result = opsroom(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_a_data_dir_that_cannot_be_created_is_refused_by_both(tmp_path):
    (tmp_path / "a-file").write_text("")
    env = {"OPSROOM_DATA_DIR": str(tmp_path / "a-file" / "data")}
    expected = (
        f"OPSROOM_DATA_DIR: cannot create {tmp_path / 'a-file' / 'data'}: "
        f"{tmp_path / 'a-file'} is not a directory"
    )
    for command in ("check-config", "run"):
        result = opsroom(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (command, result.stderr)
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_missing_extra_plugin_dir_is_refused_by_both(tmp_path):
    env = {"OPSROOM_EXTRA_PLUGIN_DIRS": f"{ROOT / 'examples' / 'plugins'},{tmp_path / 'nope'}"}
    for command in ("check-config", "run"):
        result = opsroom(command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (command, result.stderr)
        assert f"OPSROOM_EXTRA_PLUGIN_DIRS: {tmp_path / 'nope'} is not a directory" in (
            result.stderr
        )


# --- what is in effect ---------------------------------------------------------------------------
def test_the_summary_on_the_terminal_names_the_sample_inventory(tmp_path):
    result = opsroom("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = summary(result.stdout)
    assert rows["backend"].startswith("terminal")
    assert rows["policy"] == "none: reads open, every change denied"
    assert rows["inventory"] == f"{sample_inventory_path()} (SAMPLE: fake *.example.com hosts)"
    assert rows["plugins"] == SHIPPED
    assert rows["data directory"] == str(tmp_path / "data")
    assert "warning" not in result.stdout


def test_the_summary_on_mattermost_without_an_inventory_says_so(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("roles:\n  deployer:\n    grants:\n      - action: deploy\n")
    env = {
        **CONNECTED,
        "MATTERMOST_TEAMS": "ops,platform",
        "OPSROOM_POLICY": str(policy),
        "OPSROOM_EXTRA_PLUGIN_DIRS": str(ROOT / "examples" / "plugins"),
    }
    result = opsroom("check-config", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    rows = summary(result.stdout)
    assert rows["backend"] == "Mattermost at http://127.0.0.1:9/"
    assert rows["teams"] == "ops, platform"
    assert rows["policy"] == f"{policy} (roles: deployer)"
    assert rows["inventory"] == "none: SSH commands answer that no inventory is configured"
    assert rows["plugins"] == f"{SHIPPED}, CacheFlush, DiskUsage"


def test_an_empty_policy_is_accepted_with_a_warning(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("# nothing yet\n")
    result = opsroom("check-config", cwd=tmp_path, env={"OPSROOM_POLICY": str(policy)})
    assert result.returncode == 0, result.stderr
    assert (
        f"warning: OPSROOM_POLICY: {policy} is empty: reads are open and every change is denied"
        in result.stdout
    )


def test_run_without_a_config_file_uses_the_built_in_one_and_logs_what_is_in_effect(tmp_path):
    result = opsroom("run", cwd=tmp_path, stdin=subprocess.DEVNULL)  # EOF: stops at once
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stderr.splitlines() if "Inventory: " in x)
    assert f"{sample_inventory_path()} (SAMPLE: fake *.example.com hosts)" in line
    assert "policy: none: reads open, every change denied" in line
    log = (tmp_path / "data" / "opsroom.log").read_text()
    assert "exceeds backends maximum message size" not in result.stdout + log


# --- --online --------------------------------------------------------------------------------
@pytest.fixture
def server(fake_mm):  # noqa: F811
    bot = fake_mm.add_user("opsbot", is_bot=True)
    return fake_mm, {"MATTERMOST_URL": fake_mm.url, "MATTERMOST_TOKEN": fake_mm.create_token(bot)}


def test_online_check_accepts_a_good_token(server, tmp_path):
    fake, env = server
    result = opsroom("check-config", "--online", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert f"online: {fake.url.rstrip('/')} accepts the token of @opsbot" in result.stdout
    assert fake.contract_violations == []


def test_online_check_names_a_rejected_token(server, tmp_path):
    fake, env = server
    fake.revoke_token(env["MATTERMOST_TOKEN"])
    result = opsroom("check-config", "--online", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "MATTERMOST_TOKEN: " in result.stderr and "rejected the token (HTTP 401)" in (
        result.stderr
    )
    assert env["MATTERMOST_TOKEN"] not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_online_check_says_when_the_server_is_down(server, tmp_path):
    fake, env = server
    fake.stop()
    result = opsroom("check-config", "--online", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert f"MATTERMOST_URL: cannot reach {fake.url.rstrip('/')} (Connection refused)" in (
        result.stderr
    )


def test_online_check_needs_a_server(tmp_path):
    result = opsroom("check-config", "--online", cwd=tmp_path)
    assert result.returncode == 2
    assert "MATTERMOST_URL is not set" in result.stderr


# --- the built-in Errbot configuration -----------------------------------------------------------
def test_the_message_size_limit_is_mattermost_s_only_on_mattermost(clean_env, monkeypatch):
    assert errbot_config(load_settings())["MESSAGE_SIZE_LIMIT"] is None  # the backend's own
    monkeypatch.setenv("MATTERMOST_URL", "https://chat.example.com")
    monkeypatch.setenv("MATTERMOST_TOKEN", "tok")
    config = errbot_config(load_settings())
    assert config["MESSAGE_SIZE_LIMIT"] == MATTERMOST_MAX_POST_LENGTH
    assert config["BOT_EXTRA_PLUGIN_DIR"] == [str(plugins_dir())]
