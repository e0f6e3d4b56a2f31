"""Fake Mattermost server for Opsroom's tests."""

from .server import FakeMattermost, RecordedRequest, rate_limit_headers

__all__ = ["FakeMattermost", "RecordedRequest", "rate_limit_headers"]
