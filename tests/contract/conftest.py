from tests.fake_mattermost.fixtures import fake_mm  # noqa: F401
