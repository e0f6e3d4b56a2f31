"""What a plugin author's conftest.py holds to test against a Mattermost server
(docs/plugin-authoring.md; tests/packaging runs this folder against the installed wheel)."""

from bot.testing import fake_mm  # noqa: F401  (a started fake server, stopped after the test)
