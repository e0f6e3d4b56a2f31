"""Pytest fixture around :class:`FakeKubernetes`; import it into a conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import FakeKubernetes


@pytest.fixture
def fake_k8s(tmp_path: Path) -> Iterator[FakeKubernetes]:
    """A started, empty fake API server; its kubeconfig (context ``fake``) is
    ``tmp_path/kubeconfig``. Stopped after the test, which fails if the fake crashed."""
    server = FakeKubernetes(tmp_path / "fake-kubernetes")
    server.start()
    server.kubeconfig(tmp_path / "kubeconfig")
    try:
        yield server
    finally:
        server.stop()
    assert server.violations == []
