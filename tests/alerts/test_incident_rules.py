"""A rule's ``incident:`` option in the engine (real runtime, injected clock): one incident
per alert group while it is open, the group's further alerts on its timeline, and what
dry run, freeze and pause do to a declaration. The incidents side is a recording desk."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from bot.alerts.config import Freeze
from bot.alerts.model import Status
from bot.incidents import alerts as seam
from tests.alerts.world import alert, base_config

INCIDENT = {"title": "{{alertname}} on {{labels.service}}", "severity": 2, "service": "nginx"}


@dataclass
class Desk:
    """Stands in for the incidents plugin: declarations open incidents at once."""

    declared: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    open: list[Any] = field(default_factory=list)
    timeline: list[tuple[str, str]] = field(default_factory=list)

    def submit(self, values, caller, place):
        self.declared.append((dict(values), caller))
        ref = f"INC-{len(self.declared)}"
        self.open.append(SimpleNamespace(ref=ref, alert=SimpleNamespace(fingerprint=caller.alert)))
        return f"job-{len(self.declared)}"

    # the IncidentService surface the seam uses
    @property
    def store(self):
        return SimpleNamespace(open_incidents=lambda: list(self.open))

    def incident(self, ref):
        return next(i for i in self.open if i.ref == ref)

    def add_alert(self, incident, ref, actor):
        self.timeline.append((incident.ref, f"alert {ref.name} ({ref.fingerprint}): {ref.summary}"))


@pytest.fixture
def incident_world(make_world):
    def make(**rule):
        document = base_config()
        document["rules"] = [
            {
                "name": "declare",
                "matchers": ["alertname=ServiceDown"],
                "incident": INCIDENT,
                "as_role": "responder",
                **rule,
            }
        ]
        world = make_world(document)
        desk = Desk()
        seam.register(world.runtime, desk.submit, desk)  # type: ignore[arg-type]
        return world, desk

    yield make


def test_one_incident_per_group_and_the_groups_alerts_on_its_timeline(incident_world):
    world, desk = incident_world()
    world.receive(alert("web1"))
    [(values, caller)] = desk.declared
    assert values["title"] == "ServiceDown on nginx" and values["sev"] == 2
    assert (caller.name, caller.role) == ("declare", "responder")
    assert caller.alert == "fp-ServiceDown-web1"
    world.receive(alert("web1"), alert("web2"))  # a repeat and another alert of the group
    world.receive(alert("web1", Status.RESOLVED), alert("web2"))
    world.engine.step()
    assert len(desk.declared) == 1
    assert desk.timeline == [
        ("INC-1", "alert ServiceDown (fp-ServiceDown-web2): firing · nginx down on web2"),
        ("INC-1", "alert ServiceDown (fp-ServiceDown-web1): resolved · nginx down on web1"),
    ]
    desk.open.clear()  # INC-1 resolved: the group's next firing alert declares anew
    world.receive(alert("web1", starts_at="2024-01-01T01:00:00Z"))
    world.engine.step()
    assert len(desk.declared) == 2 and len(desk.timeline) == 2


def test_dry_run_says_what_would_be_declared_and_declares_nothing(incident_world):
    world, desk = incident_world(dry_run=True)
    world.receive(alert("web1"))
    assert desk.declared == []
    [group] = world.chat.in_channel("~web")
    [said] = world.chat.in_channel("~web", thread=group["id"])
    assert said["text"] == (
        '🧪 dry run: rule declare would declare an incident "ServiceDown on nginx", sev 2, '
        "service nginx as role responder for alert ServiceDown (fp-ServiceDown-web1); "
        "nothing was declared"
    )


def test_a_freeze_does_not_stop_a_declaration_and_a_pause_does(incident_world):
    world, desk = incident_world()
    always = Freeze(start=datetime(2000, 1, 1, tzinfo=UTC), end=datetime(2100, 1, 1, tzinfo=UTC))
    world.config = world.config.model_copy(update={"freeze": [always]})
    world.engine = world.make_engine()
    assert world.engine.remediator._freeze(world.clock()) is not None  # on now
    world.receive(alert("web1"))
    assert len(desk.declared) == 1
    world.engine.remediator.pause("declare", "maintenance")
    world.receive(alert("web9"), group="other")
    assert len(desk.declared) == 1
    assert world.store.history("declare") == []  # no remediation run was recorded
