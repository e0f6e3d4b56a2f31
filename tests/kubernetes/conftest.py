from __future__ import annotations

from bot.testing.fake_kubernetes.fixtures import fake_k8s  # noqa: F401
from bot.testing.fake_mattermost.fixtures import fake_mm  # noqa: F401
from tests.e2e.conftest import make_bot, world  # noqa: F401
