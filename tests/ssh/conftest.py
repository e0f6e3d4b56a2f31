"""Fixtures: real OpenSSH sshd instances on loopback standing for hosts (see ``sshd.py``).

The pool is session-scoped: hosts start on first use (about 40 ms each) and are shared by all
tests; per test, each host's stand-in systemctl state is reset. Without sshd the tests are
skipped with the reason, or fail when ``CI=true`` (CI must not silently lose them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bot.connectors.ssh import SSHTarget
from tests.ssh.sshd import SSHDHost, SSHDPool, SSHDUnavailable

HOSTS = 5


@pytest.fixture(scope="session")
def sshd_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHDPool]:
    try:
        pool = SSHDPool(tmp_path_factory.mktemp("sshd"))
    except SSHDUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real sshd is required on CI: {exc}")
        pytest.skip(f"real sshd unavailable: {exc}")
    yield pool
    pool.close()


@pytest.fixture
def ssh_hosts(sshd_pool: SSHDPool) -> list[SSHDHost]:
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
def make_target(sshd_pool: SSHDPool, known_hosts: Path) -> Callable[..., SSHTarget]:
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
