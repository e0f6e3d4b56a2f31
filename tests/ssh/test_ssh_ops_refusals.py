"""The SSH plugin on Errbot's test backend with the sample inventory (no host is reached):
what it shows, and what it refuses before any job exists."""

from __future__ import annotations

import logging

import pytest
from errbot.backends.test import testbot  # noqa: F401  (Errbot's fixture)

from bot.testing import (
    TEST_USER,
    audit_records,
    errbot_config,
    opsroom,  # noqa: F401  (autouse: fresh settings per test)
    plugin_dirs,
    pop_until,
)

extra_plugin_dir = plugin_dirs()
extra_config = errbot_config()
loglevel = logging.INFO
opsroom_policy = {
    "roles": {
        "ops": {
            "members": [TEST_USER],
            "grants": [{"action": "service.*"}, {"action": "run"}, {"action": "deploy"}],
        }
    }
}


def refusal(testbot, command: str) -> str:  # noqa: F811
    testbot.push_message(command)
    answer = testbot.pop_message()
    assert answer.startswith("⛔") and "nothing was run" in answer, answer
    events = [r.event for r in audit_records(testbot)]
    assert events[-1] == "denied" and "started" not in events  # (reads: no "requested")
    return answer


def test_the_plugin_starts_and_lists_the_sample_hosts(testbot):  # noqa: F811
    testbot.push_message("!hosts")
    answer = pop_until(testbot, "succeeded")
    assert "stg-web1" in answer and "prod-db1" in answer
    assert "Pre-production, deployed on every merge." in answer  # environment descriptions
    assert "sample inventory" in answer


def test_recipes_and_deploys_are_listed_with_their_descriptions(testbot):  # noqa: F811
    testbot.push_message("!recipes")
    answer = pop_until(testbot, "succeeded")
    assert "Free space on local file systems." in answer
    assert "lines=<^[0-9]{1,4}$> (default 100): how many lines" in answer
    assert "The public API." in answer and "version=<" in answer


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("!hosts nosuchenv", "unknown environment 'nosuchenv'"),
        ("!services web in nosuchenv", "unknown environment 'nosuchenv'"),
        ("!service restart nginx on web in ''", "invalid environment '': must not be empty"),
        ("!service status nginx on web in ''", "invalid environment '': must not be empty"),
        ("!service stop nginx on web in ''", "invalid environment '': must not be empty"),
        ("!run disk-usage on web in ''", "invalid environment '': must not be empty"),
        (
            "!service restart 127.0.0.1 on stg-web1",
            "service '127.0.0.1' is not managed on stg-web1",
        ),
        ("!service start nginx on nosuchhost", "unknown host or group 'nosuchhost'"),
        ("!run nosuch on web in staging", "no recipe named 'nosuch'"),
        ("!run tail-log on web in staging service=api lines=x", "invalid lines 'x'"),
        ("!deploy api 1.2 to staging", "invalid version '1.2'"),
        ("!deploy web 1.2.3 to staging", "no app named 'web'"),
        ("!deploy api 1.2.3 to nowhere", "unknown environment 'nowhere'"),
    ],
)
def test_what_the_inventory_refuses_is_refused_before_any_job(testbot, command, reason):  # noqa: F811
    assert reason in refusal(testbot, command)


class TestOnMattermostWithoutAnInventory:
    """The sample inventory is for the terminal only: connected to Mattermost without
    OPSROOM_INVENTORY, the SSH commands say how to configure one (the plugin still starts)."""

    opsroom_settings = {"MATTERMOST_URL": "http://127.0.0.1:9", "MATTERMOST_TOKEN": "test"}

    @pytest.mark.parametrize(
        "command",
        [
            "!hosts",
            "!services",
            "!recipes",
            "!service status nginx on web",
            "!deploy api 1.2.3 to staging",
        ],
    )
    def test_the_commands_say_how_to_configure_one(self, testbot, command):  # noqa: F811
        answer = refusal(testbot, command)
        assert "no inventory is configured: set OPSROOM_INVENTORY to a YAML file" in answer
        assert "docs/inventory.md and examples/inventory.yaml" in answer
