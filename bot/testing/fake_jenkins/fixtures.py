"""Pytest fixture around :class:`FakeJenkins`; import it into a conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import FakeJenkins


@pytest.fixture
def fake_jenkins() -> Iterator[FakeJenkins]:
    """A started, empty fake Jenkins (user ``opsbot``, ``.token``); stopped after the test."""
    server = FakeJenkins()
    server.start()
    try:
        yield server
    finally:
        server.stop()
