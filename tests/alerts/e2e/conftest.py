"""The real bot process against the fake Mattermost, real sshd hosts, and real Prometheus
and Alertmanager (Debian's packages). Without Prometheus or Alertmanager the tests skip
with the reason, or fail when ``CI=true``."""

from __future__ import annotations

import os

import pytest

from bot.testing.fake_mattermost.fixtures import fake_mm  # noqa: F401
from tests.alerts.servers import Exporter, unavailable_reason
from tests.e2e.conftest import make_bot, world  # noqa: F401
from tests.ssh.conftest import inventory_for, known_hosts, ssh_hosts, sshd_pool  # noqa: F401


@pytest.fixture
def prometheus_stack():
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Prometheus and Alertmanager are required on CI: {reason}")
        pytest.skip(reason)
    started = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def exporter():
    made = Exporter()
    yield made
    made.close()
