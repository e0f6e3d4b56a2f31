from __future__ import annotations

import pytest

from bot.testing.fake_mattermost.fixtures import fake_mm  # noqa: F401
from tests.e2e.harness import BotProcess, Seed, seed


@pytest.fixture
def world(fake_mm) -> Seed:  # noqa: F811
    """A seeded server; after the test, every request the bot made must match the docs."""
    seeded = seed(fake_mm)
    yield seeded
    assert fake_mm.contract_violations == []
    assert fake_mm.unexpected_requests == []


@pytest.fixture
def make_bot(fake_mm, world, tmp_path):  # noqa: F811
    """Factory for bot processes sharing one data directory (so restarts keep state)."""
    started: list[BotProcess] = []

    def make(wait: bool = True, token: str | None = None, **env: str) -> BotProcess:
        bot = BotProcess(fake_mm.url, token or world.token, tmp_path / "data", **env)
        started.append(bot)
        return bot.start(wait=wait)

    yield make
    for bot in started:
        if bot.proc and bot.proc.poll() is None:
            bot.stop()


@pytest.fixture
def bot(make_bot) -> BotProcess:
    return make_bot()
