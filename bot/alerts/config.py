"""The alerts file (``OPSROOM_ALERTS``): receivers, routes, storm control, freeze windows
and remediation rules. Validated at start-up (``opsroom check-config`` and ``run``) with
errors naming the file and the key; rules are also checked against the actions that exist
(:func:`check_rules`). See docs/alerts.md and examples/alerts.yaml.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from bot.alerts import templates
from bot.alerts.matchers import Matcher, parse_matcher
from bot.durations import parse_duration
from bot.errors import ConfigurationError
from bot.runtime.actions import ActionSpec, Param
from bot.yamlconfig import load_yaml, validate

NAME = r"^[a-z0-9][a-z0-9_.-]*$"
DECLARE = "incident.declare"  # the action a rule's incident: option submits
INCIDENT_PARAMS = {"severity": "sev"}  # incident: keys named otherwise by incident.declare


class AlertsConfigError(ConfigurationError):
    """The alerts file is missing, not YAML, or does not validate; names file and key."""


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be greater than zero")
    return value


def _size(value: object) -> object:
    """``1048576``, ``512KiB``, ``1MiB``, ``2MB`` -> bytes."""
    if isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+)\s*(B|KB|KiB|MB|MiB)?\s*", value)
        if not found:
            raise ValueError("expected a size such as 1048576, 512KiB or 1MiB")
        units = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2}
        return int(found.group(1)) * units[found.group(2) or "B"]
    return value


def _matchers(value: object) -> object:
    if isinstance(value, list):
        return [parse_matcher(v) if isinstance(v, str) else v for v in value]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
Size = Annotated[int, BeforeValidator(_size), Field(ge=1, le=64 * 1024**2)]
Matchers = Annotated[list[Matcher], BeforeValidator(_matchers)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Secret(_Strict):
    """Where a secret is: a file (e.g. a mounted secret) or an environment variable."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of file or env")
        return self

    def read(self) -> bytes:
        """The secret's value; raises AlertsConfigError naming where it should be."""
        if self.file is not None:
            try:
                value = self.file.read_bytes().strip()
            except OSError as exc:
                raise AlertsConfigError(
                    f"cannot read secret file {self.file}: {exc.strerror}"
                ) from None
            where = f"secret file {self.file}"
        else:
            assert self.env is not None
            value = os.environ.get(self.env, "").strip().encode()
            where = f"environment variable {self.env}"
        if len(value) < 16:
            raise AlertsConfigError(f"{where} is unset or shorter than 16 characters")
        return value


class Bearer(_Strict):
    token: Secret


class Hmac(_Strict):
    """HMAC-SHA256 of the body, hex-encoded, in ``header`` (Grafana: its code sends
    ``X-Grafana-Alerting-Signature``; some of its examples say ``X-Grafana-Alert-Signature``).
    With ``timestamp_header`` the signed message is ``<timestamp>:<body>``, as Grafana does."""

    secret: Secret
    header: str = "X-Grafana-Alerting-Signature"
    timestamp_header: str | None = None
    prefix: str = ""  # e.g. "sha256=" where the sender writes one before the hex digest
    max_skew: Duration = timedelta(minutes=5)


class Auth(_Strict):
    bearer: Bearer | None = None
    hmac: Hmac | None = None

    @model_validator(mode="after")
    def _one_method(self) -> Auth:
        if (self.bearer is None) == (self.hmac is None):
            raise ValueError("give exactly one of bearer or hmac")
        return self


class Mapping_(_Strict):
    """Where a generic JSON payload keeps each field (dotted paths)."""

    alerts: str = ""  # a list of alerts; "" = the body is one alert
    fingerprint: str = ""  # "" = computed from the labels
    status: str = "status"
    firing: list[str] = ["firing"]  # status values meaning firing; anything else resolved
    labels: str = "labels"
    annotations: str = ""
    starts_at: str = ""
    ends_at: str = ""
    generator_url: str = ""
    group_key: str = ""  # "" = each alert is its own group


class Receiver(_Strict):
    kind: Literal["alertmanager", "grafana", "generic"]
    auth: Auth
    path: str = ""  # default /alerts/<name>
    max_body: Size = 1024**2
    mapping: Mapping_ | None = None

    @model_validator(mode="after")
    def _mapping_for_generic(self) -> Receiver:
        if self.kind == "generic" and self.mapping is None:
            raise ValueError("a generic receiver needs a mapping")
        if self.kind != "generic" and self.mapping is not None:
            raise ValueError(f"mapping is for generic receivers, not {self.kind}")
        if self.path and not re.fullmatch(r"/[A-Za-z0-9/_.-]*", self.path):
            raise ValueError("path must start with / and hold letters, digits, / _ . -")
        return self


class Server(_Strict):
    url: AnyHttpUrl
    token: Secret | None = None  # sent as Authorization: Bearer
    timeout: Duration = timedelta(seconds=10)


class Route(_Strict):
    matchers: Matchers = []
    channel: str = Field(min_length=1)
    mention: list[str] = []

    @field_validator("mention")
    @classmethod
    def _mentions(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(r"@[A-Za-z0-9_.-]+", name):
                raise ValueError(f"{name!r}: mention users or groups as @name")
        return value


class Storm(_Strict):
    posts_per_minute: int = Field(10, ge=1, le=1000)


class Freeze(_Strict):
    start: datetime
    end: datetime
    reason: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("give start and end with a time zone, e.g. 2025-12-24T00:00:00Z")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self

    def covers(self, when: datetime) -> bool:
        return self.start <= when < self.end


class Verify(_Strict):
    """How to check the real state after a remediation (not the alert's "resolved")."""

    prometheus: str | None = None  # a PromQL query; healthy when it returns any sample
    action: str | None = None  # a read action; healthy when it succeeds
    arguments: dict[str, str] = {}

    @model_validator(mode="after")
    def _one(self) -> Verify:
        if (self.prometheus is None) == (self.action is None):
            raise ValueError("give exactly one of prometheus or action")
        if self.prometheus is not None and self.arguments:
            raise ValueError("arguments go with action")
        return self


class IncidentOption(_Strict):
    """A rule's ``incident:``: declare an incident for the alert's group (templated)."""

    title: str = Field(min_length=1)
    severity: int | None = Field(None, ge=1)  # None: the incidents file's default
    service: str = ""
    type: str = ""  # the checklist template; "" = the service's or the default

    def templated(self) -> dict[str, str]:
        """The templated fields, by their key in the alerts file."""
        return {"title": self.title, "service": self.service, "type": self.type}


class Rule(_Strict):
    name: str = Field(pattern=NAME)
    matchers: Matchers = Field(min_length=1)
    action: str = ""  # "" only with incident
    incident: IncidentOption | None = None
    arguments: dict[str, str] = {}
    as_role: str = Field(min_length=1)
    cooldown: Duration = timedelta(minutes=15)
    max_runs: int = Field(5, ge=1)
    window: Duration = timedelta(hours=1)
    breaker_after: int = Field(3, ge=1)
    max_targets: int = Field(5, ge=1)
    dry_run: bool = False
    require_approval: bool = False
    verify_within: Duration | None = None
    verify: Verify | None = None
    silence: bool = False
    mention: list[str] = []

    @model_validator(mode="after")
    def _verify_pair(self) -> Rule:
        if not self.action and self.incident is None:
            raise ValueError("give an action, an incident, or both")
        if not self.action and (self.arguments or self.verify):
            raise ValueError("arguments and verify go with action")
        if (self.verify_within is None) != (self.verify is None):
            raise ValueError("verify_within and verify go together")
        checked = list(self.arguments.values())
        if self.incident is not None:
            checked += self.incident.templated().values()
        if self.verify is not None:
            checked += [self.verify.prometheus or "", *self.verify.arguments.values()]
        for value in checked:
            for name in templates.fields(value):
                problem = templates.field_problem(name)
                if problem:
                    raise ValueError(problem)
        return self


class AlertsConfig(_Strict):
    receivers: dict[str, Receiver] = {}
    alertmanager: Server | None = None
    prometheus: Server | None = None
    routes: list[Route] = []
    storm: Storm = Storm()
    freeze: list[Freeze] = []
    dry_run: bool = False  # every rule in dry-run
    rules: list[Rule] = []

    @field_validator("receivers")
    @classmethod
    def _receiver_names(cls, value: dict[str, Receiver]) -> dict[str, Receiver]:
        for name in value:
            if not re.fullmatch(NAME, name):
                raise ValueError(f"{name!r}: receiver names are lower-case letters, digits, _.-")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AlertsConfig:
        names = [rule.name for rule in self.rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)}")
        paths = [self.path_of(name) for name in self.receivers]
        if len(set(paths)) != len(paths):
            raise ValueError("two receivers share a path")
        if any(r.silence for r in self.rules) and self.alertmanager is None:
            raise ValueError("rules with silence: true need the alertmanager section")
        if any(r.verify and r.verify.prometheus for r in self.rules) and self.prometheus is None:
            raise ValueError("rules verified with a prometheus query need the prometheus section")
        return self

    def path_of(self, receiver: str) -> str:
        return self.receivers[receiver].path or f"/alerts/{receiver}"

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


def load_config(path: Path) -> AlertsConfig:
    """Read and validate the alerts file; raises AlertsConfigError naming file and key."""
    raw = load_yaml(path, AlertsConfigError)
    config = validate(AlertsConfig, raw, str(path), AlertsConfigError)
    problems = []
    for name, receiver in config.receivers.items():
        secrets = [receiver.auth.bearer.token] if receiver.auth.bearer else []
        if receiver.auth.hmac:
            secrets.append(receiver.auth.hmac.secret)
        for secret in secrets:
            try:
                secret.read()
            except AlertsConfigError as exc:
                problems.append(f"{path}: receivers.{name}.auth: {exc}")
    if problems:
        raise AlertsConfigError("\n".join(problems))
    return config


def check_rules(config: AlertsConfig, actions: Mapping[str, ActionSpec], source: str) -> list[str]:
    """Problems of the rules against the actions that exist (empty when none): unknown
    action, unknown or missing parameter, a fixed value the parameter refuses."""
    problems = []

    def fixed(where: str, param: Param, value: str) -> None:
        if not templates.is_templated(value):
            try:
                param.validate(value)
            except Exception as exc:
                problems.append(f"{source}: {where}: {exc}")

    def check(where: str, action: str, arguments: Mapping[str, str]) -> None:
        spec = actions.get(action)
        if spec is None:
            known = ", ".join(sorted(actions)) or "none"
            problems.append(f"{source}: {where}.action: unknown action {action!r} (known: {known})")
            return
        params = {p.name: p for p in spec.params}
        for name, value in arguments.items():
            param = params.get(name)
            if param is None:
                problems.append(
                    f"{source}: {where}.arguments.{name}: {action} has no parameter {name!r} "
                    f"(parameters: {', '.join(params) or 'none'})"
                )
            else:
                fixed(f"{where}.arguments.{name}", param, value)
        for name, param in params.items():
            if param.required and name not in arguments:
                problems.append(f"{source}: {where}.arguments: {action} needs {name!r}")

    for index, rule in enumerate(config.rules):
        if rule.incident is not None:
            declare = actions.get(DECLARE)
            if declare is None:
                problems.append(
                    f"{source}: rules.{index}.incident: {DECLARE} is not loaded "
                    "(the Incidents plugin declares it)"
                )
            else:
                params = {p.name: p for p in declare.params}
                values = rule.incident.templated()
                if rule.incident.severity is not None:
                    values["severity"] = str(rule.incident.severity)
                for key, value in values.items():
                    param = params.get(INCIDENT_PARAMS.get(key, key))
                    if param is not None and value:
                        fixed(f"rules.{index}.incident.{key}", param, value)
        if not rule.action:
            continue
        check(f"rules.{index}", rule.action, rule.arguments)
        if rule.verify and rule.verify.action:
            check(f"rules.{index}.verify", rule.verify.action, rule.verify.arguments)
            spec = actions.get(rule.verify.action)
            if spec is not None and spec.risk != "read":
                problems.append(
                    f"{source}: rules.{index}.verify.action: {rule.verify.action} is a "
                    f"{spec.risk} action; verify with a read action"
                )
    return problems
