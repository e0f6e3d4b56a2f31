"""Pytest fixtures around :class:`FakeMattermost`; import them into a conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FakeMattermost


@pytest.fixture
def fake_mm() -> Iterator[FakeMattermost]:
    """A started, strict, empty fake server; stopped after the test."""
    server = FakeMattermost(strict=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
