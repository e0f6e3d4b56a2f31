"""bot.testing (the fixtures offered to plugin authors) and examples/policy.yaml."""
# ruff: noqa: F811  (the fixtures imported below are redefined as test arguments)

import logging
import re
from datetime import timedelta
from pathlib import Path
from queue import Empty

import pytest
import yaml
from errbot.backends.test import testbot  # noqa: F401  (Errbot's fixture)

from bot.runtime.audit import AuditError
from bot.runtime.jobs import ExecutorClosed
from bot.runtime.policy import Policy, Principal, Risk
from bot.settings import get_settings
from bot.testing import (
    OPSROOM_PLUGINS_DIR,
    OTHER_USER,
    TEST_USER,
    audit_id,
    audit_records,
    configure_opsroom,
    errbot_config,
    job_id,
    opsroom,  # noqa: F401  (autouse)
    plugin_dirs,
    pop_until,
    push_as,
    request_id,
    runtime,
    stop_runtime,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PLUGIN = ROOT / "examples" / "plugins" / "cache_flush"

extra_plugin_dir = plugin_dirs(EXAMPLE_PLUGIN)
extra_config = errbot_config()
loglevel = logging.INFO
opsroom_policy = {
    "roles": {
        "cache-admin": {
            "members": [TEST_USER],
            "grants": [{"action": "cache.flush", "environments": ("staging",)}],
        },
    },
}


# --- examples/policy.yaml ---------------------------------------------------------------------
USER_IDS = {"@alice": "a" * 26, "@carol": "c" * 26, "@dave": "d" * 26}


def person(name, *groups):
    return Principal(USER_IDS.get(name, name), name.lstrip("@"), frozenset(groups))


@pytest.fixture
def example_policy():
    return Policy.load(ROOT / "examples" / "policy.yaml", USER_IDS.get)


def test_example_policy_loads_and_names_only_known_users(example_policy):
    assert example_policy.unresolved == []
    assert example_policy.document.approvals.expire_after == timedelta(minutes=15)
    assert set(example_policy.document.roles) == {"developer", "sre", "incident-commander"}


def test_example_policy_decides_as_its_comments_say(example_policy):
    alice, carol, dave = person("@alice"), person("@carol"), person("@dave")
    sre_member = person("zz", "sre")
    flush = ("cache.flush", Risk.CHANGE)
    assert example_policy.authorize(alice, *flush, "staging").allowed
    denied = example_policy.authorize(alice, *flush, "production")
    assert not denied.allowed and "needs role sre" in denied.reason
    assert example_policy.authorize(carol, *flush, "production").allowed
    restart = ("service.restart", Risk.CHANGE, "production")
    assert example_policy.authorize(sre_member, *restart, {"service": "api-eu"}).allowed
    assert not example_policy.authorize(sre_member, *restart, {"service": "postgres"}).allowed
    assert example_policy.authorize(carol, "jenkins.build", Risk.CHANGE).allowed
    assert example_policy.is_protected("production") and example_policy.is_protected("prod-eu")
    assert not example_policy.is_protected("staging")
    assert example_policy.can_approve(dave, "k8s.delete_pod")
    assert example_policy.can_approve(carol, "deploy")
    assert not example_policy.can_approve(alice, "deploy")
    assert example_policy.authorize(person("@nobody"), "status", Risk.READ).allowed


# --- configuration helpers ------------------------------------------------------------------
def test_configure_opsroom_isolates_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("OPSROOM_ADMINS", "mallory")
    monkeypatch.setenv("MATTERMOST_URL", "https://chat.example.com")
    env = configure_opsroom(
        monkeypatch, tmp_path, {"roles": {"r": {"members": ("@x",)}}}, {"OPSROOM_PREFIX": "."}
    )
    settings = get_settings()
    assert settings.opsroom_data_dir == env.data_dir == tmp_path / "data"
    assert env.data_dir.is_dir()
    assert settings.opsroom_policy == env.policy_file
    assert yaml.safe_load(env.policy_file.read_text()) == {"roles": {"r": {"members": ["@x"]}}}
    assert settings.opsroom_prefix == "."
    assert settings.opsroom_admins == []
    assert settings.mattermost_url is None


def test_configure_opsroom_without_policy_sets_none(monkeypatch, tmp_path):
    env = configure_opsroom(monkeypatch, tmp_path)
    assert env.policy_file is None
    assert get_settings().opsroom_policy is None


def test_the_fixture_uses_the_module_policy(opsroom):
    assert get_settings().opsroom_data_dir == opsroom.data_dir
    written = yaml.safe_load(opsroom.policy_file.read_text())
    assert written["roles"]["cache-admin"]["members"] == [TEST_USER]


class TestClassLevelSettings:
    opsroom_policy = {"readers": ["@carol"]}
    opsroom_settings = {"OPSROOM_JOB_WORKERS": "3"}

    def test_a_class_attribute_wins_over_the_module(self, opsroom):
        assert yaml.safe_load(opsroom.policy_file.read_text()) == {"readers": ["@carol"]}
        assert get_settings().opsroom_job_workers == 3


def test_errbot_config_and_plugin_dirs():
    config = errbot_config(BOT_PREFIX=".")
    assert config["BOT_ADMINS"] == (TEST_USER,)
    assert config["BOT_PREFIX"] == "."
    assert "Utils" not in config["CORE_PLUGINS"]
    with pytest.raises(ValueError, match="@name"):
        errbot_config("gbin@localhost")
    assert plugin_dirs(EXAMPLE_PLUGIN) == [str(EXAMPLE_PLUGIN), str(OPSROOM_PLUGINS_DIR)]


def test_ids_are_found_in_messages():
    text = "❓ confirm with !confirm R-7KQ2M · job J-1A2B3 · audit A-000002 then A-000012"
    assert request_id(text) == "R-7KQ2M"
    assert job_id(text) == "J-1A2B3"
    assert audit_id(text) == "A-000012"
    with pytest.raises(AssertionError, match="no request id"):
        request_id("nothing here")


class SilentBot:
    def __init__(self, messages):
        self.messages = list(messages)

    def pop_message(self, timeout=5, block=True):
        if not self.messages:
            raise Empty
        return self.messages.pop(0)


def test_pop_until_skips_to_the_message_and_reports_what_was_said():
    bot = SilentBot(["⏳ accepted as job J-00001", "✅ done · audit A-000003"])
    assert pop_until(bot, "done", timeout=0.1) == "✅ done · audit A-000003"
    with pytest.raises(AssertionError, match="'still nothing'"):
        pop_until(SilentBot(["still nothing"]), "succeeded", timeout=0.05)


# --- on Errbot's test bot ---------------------------------------------------------------------
def test_whoami_of_both_users(testbot):
    testbot.push_message("!whoami")
    mine = testbot.pop_message()
    assert "You are @alice" in mine and "roles: cache-admin" in mine
    push_as(testbot, OTHER_USER, "!whoami")
    theirs = testbot.pop_message()
    assert "You are @bob" in theirs and "roles: none" in theirs
    testbot.push_message("!whoami")
    assert "You are @alice" in testbot.pop_message()


def test_runtime_uses_the_test_data_dir_and_records_are_read_back(testbot, opsroom):
    assert runtime(testbot).audit.path == opsroom.data_dir / "audit.sqlite3"
    push_as(testbot, OTHER_USER, "!cache flush sessions in staging")
    denial = testbot.pop_message()
    records = audit_records(testbot)
    assert [r.event for r in records] == ["requested", "denied"]
    assert records[-1].id == audit_id(denial)
    assert records[-1].actor_name == "bob"
    assert audit_records(testbot, records[0].correlation_id) == records
    assert (opsroom.data_dir / "audit.sqlite3").is_file()


def test_stop_runtime_shuts_the_job_pool_and_the_audit_log(testbot):
    built = runtime(testbot)
    stop_runtime(testbot)
    with pytest.raises(AuditError, match="closed"):
        built.audit.last()
    with pytest.raises(ExecutorClosed):
        built.executor.submit(lambda ctx: None, name="late")
    stop_runtime(object())  # a bot that built no runtime: nothing to do


# --- docs/plugin-authoring.md shows the real files ---------------------------------------------
def test_every_code_block_of_the_authoring_guide_is_copied_from_the_example():
    guide = (ROOT / "docs" / "plugin-authoring.md").read_text(encoding="utf-8")
    sources = [
        path.read_text(encoding="utf-8")
        for path in [
            *EXAMPLE_PLUGIN.iterdir(),
            *(ROOT / "examples" / "plugins" / "disk_usage").iterdir(),
            ROOT / "examples" / "policy.yaml",
            *(ROOT / "tests" / "packaging" / "plugin_author").iterdir(),  # the fake Mattermost
        ]
        if path.is_file() and path.suffix in (".py", ".plug", ".yaml")
    ]
    blocks = re.findall(r"^```(python|ini|yaml)\n(.*?)^```", guide, flags=re.M | re.S)
    assert len(blocks) >= 6
    for language, block in blocks:
        assert any(block in source for source in sources), (
            f"{language} block not in sources:\n{block}"
        )
