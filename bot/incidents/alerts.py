"""The seam between alert rules (``bot/alerts``) and incidents.

An alert rule declares an incident the way it runs any action: through the runtime's one
entry point, as a :class:`~bot.runtime.callers.Rule` acting as a policy role, so the policy
decides (grant ``incident.declare`` to the rule's role), the audit log records it with the
alert as its trigger and the declaration is echoed. The incidents plugin registers its
``incident.declare`` action here when it starts::

    from bot.incidents.alerts import declare_incident
    declare_incident(runtime, "API is down", rule=Rule("api-down", role="responder",
                     alert=fingerprint, alert_name="ApiDown"), started_at=alert_start,
                     severity=1, service="api")

:func:`route_alert` puts a further alert on an open incident's timeline;
:func:`open_incident` finds the open incident declared for an alert.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.errors import ConfigurationError
from bot.incidents.model import Actor, AlertRef
from bot.incidents.service import IncidentService
from bot.runtime.callers import Caller, Rule
from bot.runtime.surface import Place

Submit = Callable[[Mapping[str, Any], Caller, Place | None], str | None]


@dataclass(frozen=True)
class _Desk:
    submit: Submit  # submits incident.declare with bound values
    service: IncidentService


_desks: dict[int, _Desk] = {}
_lock = threading.Lock()


def register(runtime: object, submit: Submit, service: IncidentService) -> None:
    """Called by the incidents plugin: how to declare through ``runtime``."""
    with _lock:
        _desks[id(runtime)] = _Desk(submit, service)


def unregister(runtime: object) -> None:
    with _lock:
        _desks.pop(id(runtime), None)


def _desk(runtime: object) -> _Desk:
    with _lock:
        desk = _desks.get(id(runtime))
    if desk is None:
        raise ConfigurationError("the incidents plugin is not loaded: no incident can be declared")
    return desk


def declare_incident(
    runtime: object,
    title: str,
    *,
    rule: Rule,
    started_at: datetime | None = None,
    severity: int | None = None,
    service: str = "",
    kind: str = "",
    place: Place | None = None,
) -> str | None:
    """Submit ``incident.declare`` as ``rule`` (linked to ``rule.alert``); ``started_at``
    is the alert's start (the incident's start for the metrics). ``place`` is where the
    echo goes (e.g. the alerts channel); the war room is created either way. Returns the
    declaration's job id (None when refused or denied before it ran)."""
    values: dict[str, Any] = {"title": title}
    if service:
        values["service"] = service
    if kind:
        values["type"] = kind  # "" is refused by the parameter's pattern: leave it out
    if severity is not None:
        values["sev"] = severity
    if started_at is not None:
        values["started"] = started_at.isoformat()
    return _desk(runtime).submit(values, rule, place)


def open_incident(runtime: object, fingerprint: str) -> str | None:
    """The open incident declared for the alert ``fingerprint`` (``INC-7``), if any."""
    for incident in _desk(runtime).service.store.open_incidents():
        if incident.alert is not None and incident.alert.fingerprint == fingerprint:
            return incident.ref
    return None


def route_alert(runtime: object, incident_ref: str, alert: AlertRef, rule: str) -> None:
    """Put an alert on the timeline of an open incident (``INC-7``)."""
    service = _desk(runtime).service
    incident = service.incident(incident_ref)
    service.add_alert(incident, alert, Actor(f"rule:{rule}", f"rule {rule}", human=False))
