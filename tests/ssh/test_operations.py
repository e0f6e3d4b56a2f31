"""bot.operations against real sshd hosts: what a plugin gets from ssh_operations()."""

from __future__ import annotations

import threading
import time

import pytest

from bot.connectors.ssh import SSHConnector
from bot.errors import ConfigurationError
from bot.inventory import InvalidParameter
from bot.operations import SSHOperations, command, ssh_operations
from bot.settings import get_settings


@pytest.fixture
def hosts(sshd_pool):
    hosts = sshd_pool.hosts(5)
    for host in hosts:
        host.reset()
    return hosts


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch):
    for name in ("OPSROOM_INVENTORY", "MATTERMOST_URL", "OPSROOM_SSH_MAX_PARALLEL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_recipes_timeout_is_honoured(inventory_for, hosts):
    inventory_for(
        hosts[:1],
        recipes={"nap": {"steps": [["sleep", "60"], ["touch", "never"]], "timeout": "1s"}},
    )
    started = time.monotonic()
    (result,) = ssh_operations().run("nap", "web0")
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - started < 30  # killed after the recipe's 1s, not the 60 s nap
    assert not (hosts[0].dir / "never").exists()  # later steps do not run


def test_fan_out_is_one_pool_bounded_by_max_parallel(inventory_for, hosts, monkeypatch):
    """OPSROOM_SSH_MAX_PARALLEL bounds the one pool: no pool per host inside a pool."""
    inventory_for(hosts)
    monkeypatch.setenv("OPSROOM_SSH_MAX_PARALLEL", "2")
    get_settings.cache_clear()
    threads: list[threading.Thread] = []
    run = SSHConnector.run

    def recording(self, target, argv, **kwargs):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread())
        return run(self, target, argv, **kwargs)

    monkeypatch.setattr(SSHConnector, "run", recording)
    results = ssh_operations().service("restart", "nginx", "web")
    assert [r.ok for r in results] == [True] * 5
    assert len({id(thread) for thread in threads}) == 2


def test_a_plugin_command_runs_with_validated_parameters(inventory_for, hosts):
    inventory_for(hosts[:2])
    echo = command(
        "say",
        ["echo", "said:{word}"],
        params={"word": {"pattern": "[a-z]{1,10}", "description": "a word"}},
        timeout="10s",
    )
    ops = ssh_operations()
    results = ops.run(echo, "web", "staging", {"word": "hello"})
    assert [(r.host, r.stdout) for r in results] == [
        ("web0", "said:hello\n"),
        ("web1", "said:hello\n"),
    ]
    logins = hosts[0].accepted_logins()
    with pytest.raises(
        InvalidParameter, match=r"invalid word '\$\(id\)': must match \[a-z\]\{1,10\}"
    ):
        ops.run(echo, "web", "staging", {"word": "$(id)"})
    assert hosts[0].accepted_logins() == logins  # refused before any connection


def test_a_bad_command_declaration_fails_at_import_time():
    with pytest.raises(ConfigurationError, match="not a shell string"):
        command("df", "df -h")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"command df: argv.2: \{path\} is not a declared"):
        command("df", ["df", "-h", "{path}"])
    with pytest.raises(ConfigurationError, match="the program"):
        command("x", ["{prog}"], params={"prog": {"pattern": "ls"}})


def test_the_operations_follow_the_settings(inventory_for, hosts, monkeypatch):
    first = inventory_for(hosts[:1])
    ops = ssh_operations()
    assert ssh_operations() is ops  # one per process
    assert [h.name for h in ops.hosts()] == ["web0"]
    assert isinstance(ops, SSHOperations) and ops.inventory.source == str(first)
    monkeypatch.setenv("OPSROOM_SSH_MAX_PARALLEL", "3")
    get_settings.cache_clear()
    assert ssh_operations() is not ops and ssh_operations().connector.max_parallel == 3
