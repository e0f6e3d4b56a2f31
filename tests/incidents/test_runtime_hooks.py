"""What incidents need from the runtime (two small generic additions), the alert seam, and
a domain that imports no chat code."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime

import pytest

from bot.errors import ConfigurationError
from bot.incidents import alerts
from bot.redaction import Redactor
from bot.runtime.actions import declare
from bot.runtime.audit import AuditEvent, AuditStore
from bot.runtime.callers import Operator, Rule
from bot.runtime.jobs import JobExecutor
from bot.runtime.policy import Policy, Risk
from bot.runtime.runtime import Runtime
from bot.runtime.surface import Place


class Ops:
    places: list[Place | None] = []

    @declare("touch", risk=Risk.CHANGE)
    def touch(self, ctx, name: str):
        Ops.places.append(ctx.place)
        return "touched " + name


@pytest.fixture
def runtime(tmp_path):
    policy = Policy.from_mapping(
        {"roles": {"ops": {"members": [], "grants": [{"action": "touch"}]}}}
    )
    audit = AuditStore(tmp_path / "audit.sqlite3")
    rt = Runtime(policy=policy, audit=audit, executor=JobExecutor(), redactor=Redactor([]))
    yield rt
    rt.executor.shutdown(wait=1)
    audit.close()


def test_listeners_hear_every_record_and_the_action_knows_its_place(runtime):
    heard, done = [], threading.Event()

    def listen(record):
        heard.append(record.event)
        if record.event is AuditEvent.SUCCEEDED:
            done.set()

    def broken(record):
        raise RuntimeError("a listener bug")

    runtime.add_listener(broken)  # logged, changes nothing for the run
    runtime.add_listener(listen)
    caller = Operator("root", frozenset({"ops"}))
    runtime.submit(Ops.touch._opsroom_action, Ops(), {"name": "x"}, caller, Place("ch-1"))
    assert done.wait(10)
    assert heard == [AuditEvent.REQUESTED, AuditEvent.STARTED, AuditEvent.SUCCEEDED]
    assert Ops.places[-1] == Place("ch-1")
    runtime.remove_listener(listen)
    runtime.remove_listener(broken)
    runtime.submit(Ops.touch._opsroom_action, Ops(), {"name": "y"}, caller)
    pause = threading.Event()
    while len(runtime.audit.last(10)) < 6:  # the second run's three records
        pause.wait(0.01)
    assert len(heard) == 3 and Ops.places[-1] is None


def test_an_alert_rule_declares_through_the_registered_action(runtime):
    calls = []
    alerts.register(
        runtime, lambda values, caller, place: calls.append((values, caller, place)), None
    )  # type: ignore[arg-type]
    rule = Rule("api-down", role="responder", alert="f00d", alert_name="ApiDown")
    started = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    alerts.declare_incident(
        runtime, "API down", rule=rule, started_at=started, severity=1, service="api"
    )
    assert calls == [
        (
            {
                "title": "API down",
                "service": "api",
                "sev": 1,
                "started": "2030-01-02T03:04:00+00:00",
            },
            rule,
            None,
        )
    ]
    alerts.unregister(runtime)
    with pytest.raises(ConfigurationError, match="incidents plugin is not loaded"):
        alerts.declare_incident(runtime, "API down", rule=rule)


def test_the_domain_imports_no_chat_code():
    script = (
        "import sys\n"
        "import bot.incidents.service, bot.incidents.postmortem, bot.incidents.metrics\n"
        "import bot.incidents.alerts, bot.incidents.cli\n"
        "bad = [m for m in sys.modules if m.startswith(('errbot', 'mattermostdriver'))]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
