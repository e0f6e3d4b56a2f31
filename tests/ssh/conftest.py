"""Fixtures: real OpenSSH sshd instances on loopback standing for hosts (see ``sshd.py``).

The pool is session-scoped: hosts start on first use (about 40 ms each) and are shared by all
tests; per test, each host's stand-in systemctl state is reset. Without sshd the tests are
skipped with the reason, or fail when ``CI=true`` (CI must not silently lose them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bot.connectors.ssh import SSHTarget
from bot.settings import get_settings
from bot.testing.ssh_fixtures import sshd_pool  # noqa: F401 - the fixture
from bot.testing.sshd import SSHDHost, SSHDPool

HOSTS = 5


@pytest.fixture
def ssh_hosts(sshd_pool: SSHDPool) -> list[SSHDHost]:  # noqa: F811
    """Five running hosts with a clean stand-in systemctl."""
    hosts = sshd_pool.hosts(HOSTS)
    for host in hosts:
        host.reset()
    return hosts


@pytest.fixture
def known_hosts(tmp_path: Path, ssh_hosts: list[SSHDHost]) -> Path:
    """A known_hosts file holding the keys of the five hosts."""
    path = tmp_path / "known_hosts"
    path.write_text("".join(h.known_hosts_line() for h in ssh_hosts))
    return path


@pytest.fixture
def make_target(
    sshd_pool: SSHDPool,  # noqa: F811
    known_hosts: Path,
) -> Callable[..., SSHTarget]:
    """``make_target(host, **overrides)``: an SSHTarget for a test host, with the throwaway
    client key and the test's known_hosts file."""

    def make(host: SSHDHost, **overrides: object) -> SSHTarget:
        fields: dict[str, object] = {
            "name": host.name,
            "address": host.address,
            "port": host.port,
            "user": host.user,
            "key_file": sshd_pool.client_key.path,
            "known_hosts": known_hosts,
            "connect_timeout": 5.0,
        }
        fields.update(overrides)
        return SSHTarget(**fields)  # type: ignore[arg-type]

    return make


@pytest.fixture
def inventory_for(
    tmp_path: Path,
    sshd_pool: SSHDPool,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Path]:
    """``inventory_for(hosts, environments=..., recipes=..., deploys=...)``: an inventory file
    whose defaults reach the test hosts (their user, the client key, a known_hosts file with
    their keys), named by ``OPSROOM_INVENTORY`` for this test. Host ``n`` of ``hosts`` is
    ``f"{prefix}{n}"`` in environment ``env`` when ``environments`` is not given."""

    def make(
        hosts: list[SSHDHost],
        *,
        env: str = "staging",
        prefix: str = "web",
        services: tuple[str, ...] = ("nginx",),
        groups: tuple[str, ...] = ("web",),
        **sections: object,
    ) -> Path:
        known_hosts = tmp_path / "inventory_known_hosts"
        known_hosts.write_text(sshd_pool.known_hosts_text(hosts))
        document: dict[str, object] = {
            "defaults": {
                "user": hosts[0].user,
                "key_file": str(sshd_pool.client_key.path),
                "known_hosts": str(known_hosts),
                "use_agent": False,
                "connect_timeout": "5s",
            },
            "environments": {
                env: {
                    "hosts": {
                        f"{prefix}{n}": {
                            "address": host.address,
                            "port": host.port,
                            "services": list(services),
                            "groups": list(groups),
                        }
                        for n, host in enumerate(hosts)
                    }
                }
            },
            **sections,
        }
        path = tmp_path / "inventory.yaml"
        path.write_text(yaml.safe_dump(document))
        monkeypatch.setenv("OPSROOM_INVENTORY", str(path))
        get_settings.cache_clear()
        return path

    return make
