from bot.testing.fake_mattermost.fixtures import fake_mm  # noqa: F401
