from __future__ import annotations

import pytest

from tests.alerts.world import World, base_config


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A world with one rule (restart ServiceDown's service on its host); tests that need
    other settings build their own with ``make_world``."""
    made = World(tmp_path, base_config(cooldown="10m"), monkeypatch)
    yield made
    made.close()


@pytest.fixture
def make_world(tmp_path, monkeypatch):
    made: list[World] = []

    def make(document):
        w = World(tmp_path, document, monkeypatch)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
