"""Fixtures for this plugin's tests: Errbot's test bot and Opsroom's settings."""

from errbot.backends.test import testbot  # noqa: F401  (Errbot's fixture)

from bot.testing import opsroom  # noqa: F401  (autouse: fresh data dir and policy per test)
