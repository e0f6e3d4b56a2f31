from bot.testing.fake_jenkins import fake_jenkins  # noqa: F401
