"""OPSROOM_INCIDENTS: validated at start-up, errors naming the file and the key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.incidents.config import IncidentsConfigError, load_incidents_config
from bot.preflight import preflight
from bot.settings import SettingsError, load_settings


def write(tmp_path, text):
    path = tmp_path / "incidents.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load_incidents_config(None)
    assert config.channel.private and config.channel.name_pattern == "inc-{date}-{slug}"
    assert config.roles == ["commander", "comms", "scribe"]
    assert config.severity(1).update_every == timedelta(minutes=15)
    assert config.checklist_type("anything") == "default"


def test_the_example_file_validates():
    from pathlib import Path

    config = load_incidents_config(Path(__file__).parents[2] / "examples" / "incidents.yaml")
    assert config.stakeholder_channel


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("severities:\n  7: {}\n", "severities: severity 7 is not one of 1, 2, 3, 4"),
        ("severities:\n  1: {update_every: soon}\n", "severities.1.update_every:"),
        ("channel: {name_pattern: 'INC-{slug}'}\n", "channel.name_pattern: channel names"),
        ("channel: {name_pattern: 'inc-{when}'}\n", "unknown placeholder {when}"),
        (
            "services:\n  api: {responders: [bob]}\n",
            "services.api.responders.0: 'bob' must be @username or group:<name>",
        ),
        ("services:\n  api: {type: fire}\n", "services.api.type: no checklist 'fire'"),
        ("checklists:\n  db: [{title: x, args: y}]\n", "checklists.db.0: args are given"),
        ("roles: [comms]\n", "roles: must include commander"),
        ("stakeholders: x\n", "stakeholders: unknown key (allowed: channel,"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(IncidentsConfigError) as raised:
        load_incidents_config(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_preflight_stops_on_a_bad_file(tmp_path, monkeypatch):
    path = write(tmp_path, "severities:\n  9: {}\n")
    settings = load_settings(opsroom_incidents=path, opsroom_data_dir=tmp_path / "data")
    with pytest.raises(SettingsError, match="invalid incident configuration"):
        preflight(settings)
