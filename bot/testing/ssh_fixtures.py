"""A pytest fixture of real OpenSSH hosts on loopback, for plugins that work over SSH.

In a ``conftest.py``::

    from bot.testing.ssh_fixtures import sshd_pool  # noqa: F401 (a fixture)

then ``sshd_pool.hosts(3)`` gives three running :class:`~bot.testing.sshd.SSHDHost` with a
stand-in ``systemctl``, a throwaway host key (``host.host_key_line``) and a client key for the
current user (``sshd_pool.client_key``). Needs Debian's ``openssh-server``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bot.testing.sshd import SSHDPool, SSHDUnavailable


@pytest.fixture(scope="session")
def sshd_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHDPool]:
    """Real OpenSSH sshd hosts on loopback for a test session (``pool.hosts(n)``). Skips
    where sshd cannot run, and fails instead when ``CI=true``: CI must run them."""
    try:
        pool = SSHDPool(tmp_path_factory.mktemp("sshd"))
    except SSHDUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real sshd is required on CI: {exc}")
        pytest.skip(f"real sshd unavailable: {exc}")
    yield pool
    pool.close()
