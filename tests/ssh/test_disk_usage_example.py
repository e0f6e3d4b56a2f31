"""The third-party example ``examples/plugins/disk_usage`` on Errbot's test backend, against
real sshd hosts: the inventory and SSH API as a plugin author uses it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from errbot.backends.test import testbot  # noqa: F401  (Errbot's fixture)

from bot.testing import (
    audit_records,
    errbot_config,
    job_id,
    opsroom,  # noqa: F401  (autouse: fresh settings per test)
    plugin_dirs,
    pop_until,
)
from bot.testing.sshd import RemoteProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "disk_usage"
extra_plugin_dir = plugin_dirs(EXAMPLE)
extra_config = errbot_config()
loglevel = logging.INFO

SLOW_DF = """#!/bin/sh
echo "$@" >> "{dir}/df.calls"
echo $$ > "{dir}/df.pid"
exec sleep 31
"""


@pytest.fixture
def hosts(sshd_pool, inventory_for):
    hosts = sshd_pool.hosts(3)
    for host in hosts:
        (host.bin_dir / "df").unlink(missing_ok=True)
        (host.dir / "df.calls").unlink(missing_ok=True)
        (host.dir / "df.pid").unlink(missing_ok=True)
    inventory_for(hosts)
    return hosts


def test_disk_usage_of_a_group_fans_out_and_captures_the_output(testbot, hosts):  # noqa: F811
    testbot.push_message("!disk usage web in staging path=/tmp")
    assert "accepted as job" in testbot.pop_message()
    answer = pop_until(testbot, "succeeded")
    assert "disk usage of /tmp: 3/3 host(s)" in answer
    assert all(re.search(rf"^\|?\s*web{n}\s+\|?\s*ok\b", answer, re.M) for n in range(3))
    assert answer.count("Filesystem") == 3  # each host's df output, captured
    assert [r.event for r in audit_records(testbot)] == ["succeeded"]  # a read: one record


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("!disk usage web path='/; rm -rf /'", "invalid path '/; rm -rf /': must match"),
        ("!disk usage web path=--all", "invalid path '--all': must not start with '-'"),
        ("!disk usage nosuch", "unknown host or group 'nosuch'"),
        ("!disk usage web in ''", "invalid environment '': must not be empty"),
    ],
)
def test_bad_input_is_refused_before_any_job_or_connection(testbot, hosts, command, reason):  # noqa: F811
    logins = [host.accepted_logins() for host in hosts]
    testbot.push_message(command)
    answer = testbot.pop_message()
    assert answer.startswith("⛔") and reason in answer and "nothing was run" in answer
    assert [r.event for r in audit_records(testbot)] == ["denied"]  # a read refused: one record
    assert [host.accepted_logins() for host in hosts] == logins


def test_cancel_kills_df_on_the_hosts(testbot, hosts):  # noqa: F811
    for host in hosts:
        slow = host.bin_dir / "df"
        slow.write_text(SLOW_DF.format(dir=host.dir))
        slow.chmod(0o755)
    testbot.push_message("!disk usage web")
    job = job_id(testbot.pop_message())
    remote = [RemoteProcess.from_pid_file(h.dir / "df.pid", timeout=20) for h in hosts]
    testbot.push_message(f"!cancel {job}")
    answer = pop_until(testbot, "cancelled by")
    assert "cancelled by @alice" in answer
    assert all(p.gone_within(10) for p in remote)  # killed on the hosts, not left running


def test_without_an_inventory_on_mattermost_it_says_how_to_configure_one(testbot, monkeypatch):  # noqa: F811
    from bot.settings import get_settings

    monkeypatch.setenv("MATTERMOST_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MATTERMOST_TOKEN", "test")
    get_settings.cache_clear()
    testbot.push_message("!disk usage web")
    answer = testbot.pop_message()
    assert answer.startswith("⛔") and "no inventory is configured" in answer
