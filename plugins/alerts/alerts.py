"""Alerts: active alerts, silences, and the remediation rules' status, pause, resume, history.

The receivers, routing and remediation are :mod:`bot.alerts` (see docs/alerts.md); this
plugin starts them from ``OPSROOM_ALERTS`` and is their chat face. Every command is an
action: authorized by the policy, audited, answered with data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from errbot import BotPlugin

from bot.alerts.matchers import Matcher
from bot.alerts.posts import labels_text
from bot.alerts.service import AlertService, start_alerts
from bot.backends.actions import runtime_for, surface_for
from bot.backends.registry import registered_actions
from bot.durations import parse_duration
from bot.plugin import ActionContext, Arg, InvalidArgument, Refusal, Risk, Table, action
from bot.settings import get_settings

Labels = Annotated[dict[str, str], Arg(keywords=True)]
RuleName = Annotated[str, Arg(help="a remediation rule's name (!remediation status lists them)")]


def _service(plugin: Alerts) -> AlertService:
    if plugin.service is None:
        raise Refusal("alerts are not configured: set OPSROOM_ALERTS (see docs/alerts.md)")
    return plugin.service


def _check_configured(plugin: Alerts, values: Mapping[str, Any]) -> None:
    _service(plugin)


def _check_rule(plugin: Alerts, values: Mapping[str, Any]) -> None:
    config = _service(plugin).config
    if config.rule(values["rule"]) is None:
        known = ", ".join(r.name for r in config.rules) or "none"
        raise InvalidArgument(f"no remediation rule {values['rule']!r} (rules: {known})")


def _check_silence(plugin: Alerts, values: Mapping[str, Any]) -> None:
    if _service(plugin).engine.alertmanager is None:
        raise Refusal("no Alertmanager is configured (the alertmanager section of OPSROOM_ALERTS)")
    _matchers(values["matchers"])
    try:
        parse_duration(values["duration"])
    except ValueError as exc:
        raise InvalidArgument(f"duration: {exc}") from None


def _matchers(given: Mapping[str, str]) -> list[Matcher]:
    """``name=value``, ``name=~regex``, ``name!=value``, ``name!~regex`` as chat splits them
    (``name!`` and a value starting with ``~``)."""
    if not given:
        raise InvalidArgument("give at least one matcher, e.g. alertname=ServiceDown")
    matchers = []
    for name, value in given.items():
        negative = name.endswith("!")
        regex = value.startswith("~")
        op = ("!" if negative else "=") + ("~" if regex else "")
        op = {"=": "=", "!": "!=", "=~": "=~", "!~": "!~"}[op]
        matchers.append(Matcher(name.rstrip("!"), op, value[1:] if regex else value))
    return matchers


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Alerts(BotPlugin):  # type: ignore[misc]
    """Alerts routed to channels, silences, and remediation rules with guardrails."""

    service: AlertService | None = None

    def activate(self) -> None:
        super().activate()
        settings = get_settings()
        path = settings.opsroom_alerts
        if path is None:
            self.log.info("OPSROOM_ALERTS is unset: no alert receivers")
            return
        surface = surface_for(self._bot)
        self.service = start_alerts(
            Path(path),
            settings.opsroom_data_dir,
            runtime_for(self._bot),
            lambda: registered_actions(self._bot),
            surface.place_named,
            self.get_plugin("HttpServer").server,
        )

    def callback_connect(self) -> None:
        if self.service is not None:
            self.service.start_engine()

    def deactivate(self) -> None:
        if self.service is not None:
            self.service.stop()
            self.service = None
        super().deactivate()

    # --- alerts ------------------------------------------------------------------------------
    @action("alerts.list", risk=Risk.READ, check=_check_configured)
    def alerts_list(self, ctx: ActionContext, labels: Labels) -> Table:
        """List the firing alerts, optionally only those with the given labels (name=value)."""
        firing = [
            c
            for c in _service(self).store.firing()
            if all(c.alert.labels.get(k) == v for k, v in labels.items())
        ]
        return Table(
            ("alert", "labels", "since", "channel", "fingerprint"),
            [
                (
                    c.alert.name,
                    labels_text(c),
                    c.alert.starts_at[:19],
                    c.channel,
                    c.alert.fingerprint,
                )
                for c in firing
            ],
            title=f"{len(firing)} firing alert(s)",
            limit=50,
        )

    @action("alerts.silence", risk=Risk.CHANGE, check=_check_silence)
    def alerts_silence(
        self,
        ctx: ActionContext,
        duration: Annotated[str, Arg(after="for", help="a duration such as 30m or 2h")],
        matchers: Labels,
        comment: Annotated[str, Arg(after="because")] = "",
    ) -> str:
        """Silence alerts in Alertmanager (name=value, name=~regex, name!=value) for a while."""
        alertmanager = _service(self).engine.alertmanager
        assert alertmanager is not None
        parsed = _matchers(matchers)
        silence_id = alertmanager.silence(
            parsed,
            parse_duration(duration),
            comment or f"silenced from chat by {ctx.caller.describe()}",
            ctx.caller.describe(),
        )
        shown = ", ".join(str(m) for m in parsed)
        return f"silenced {shown} for {duration} (silence {silence_id})"

    # --- remediation --------------------------------------------------------------------------
    @action("remediation.status", risk=Risk.READ, check=_check_configured)
    def remediation_status(self, ctx: ActionContext) -> Table:
        """Show each remediation rule: its action, state, failures in a row, runs in its window."""
        service = _service(self)
        now = time.time()
        rows = []
        for rule in service.config.rules:
            state = service.store.rule_state(rule.name)
            shown = "paused" if state.paused else "breaker open" if state.tripped else "active"
            if rule.dry_run or service.config.dry_run:
                shown += " (dry run)"
            runs = service.store.runs_since(rule.name, now - rule.window.total_seconds())
            rows.append(
                (
                    rule.name,
                    rule.action,
                    shown,
                    state.failures,
                    f"{runs}/{rule.max_runs}",
                    state.note,
                )
            )
        return Table(("rule", "action", "state", "failures", "runs in window", "note"), rows)

    @action("remediation.pause", risk=Risk.CHANGE, check=_check_rule)
    def remediation_pause(
        self, ctx: ActionContext, rule: RuleName, because: Annotated[str, Arg(after="because")] = ""
    ) -> str:
        """Pause a remediation rule: its alerts are still posted, nothing runs for them."""
        note = f"paused by {ctx.caller.describe()}" + (f": {because}" if because else "")
        _service(self).engine.remediator.pause(rule, note)
        return f"rule {rule} paused; {self._bot.prefix}remediation resume {rule} resumes it"

    @action("remediation.resume", risk=Risk.CHANGE, check=_check_rule)
    def remediation_resume(self, ctx: ActionContext, rule: RuleName) -> str:
        """Resume a paused rule, or one its circuit breaker stopped (failures reset)."""
        _service(self).engine.remediator.resume(rule)
        return f"rule {rule} resumed"

    @action("remediation.history", risk=Risk.READ, check=_check_rule)
    def remediation_history(self, ctx: ActionContext, rule: RuleName) -> Table:
        """Show the last decisions of a rule: runs, dry runs, frozen and skipped alerts."""
        runs = _service(self).store.history(rule, 20)
        return Table(
            ("when", "alert", "fingerprint", "mode", "state", "job", "detail"),
            [
                (
                    _when(r.started_at),
                    r.alert_name,
                    r.fingerprint,
                    r.mode,
                    r.state,
                    r.job_id,
                    r.detail or r.command,
                )
                for r in runs
            ],
            title=f"last {len(runs)} decision(s) of rule {rule}",
        )
