"""A fake Jenkins server for Opsroom's tests and for plugin authors (see server.py)."""

from .fixtures import fake_jenkins
from .server import FakeBuild, FakeJenkins, FakeJob, FakeQueueItem, RecordedRequest

__all__ = [
    "FakeBuild",
    "FakeJenkins",
    "FakeJob",
    "FakeQueueItem",
    "RecordedRequest",
    "fake_jenkins",
]
