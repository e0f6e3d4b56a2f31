"""The incident configuration (``OPSROOM_INCIDENTS``): a YAML file, validated at start-up.

Errors name the file and the key (``incidents.yaml: severities.1.update_every: ...``).
Without a file every default applies: private channels named ``inc-<date>-<slug>``, the
roles commander, comms and scribe, one update an hour, a short default checklist, no
responders and no stakeholder channel. ``examples/incidents.yaml`` is a complete example.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from bot.durations import parse_duration
from bot.errors import ConfigurationError
from bot.yamlconfig import load_yaml, validate

SEVERITIES = (1, 2, 3, 4)
PLACEHOLDERS = ("date", "slug", "id")
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"


class IncidentsConfigError(ConfigurationError):
    """The incident configuration does not validate; names file and key."""


def _member(value: str) -> str:
    if value.startswith("@") and len(value) > 1:
        return value
    if value.startswith("group:") and len(value) > len("group:"):
        return value
    raise ValueError(f"{value!r} must be @username or group:<name>")


Member = Annotated[str, BeforeValidator(lambda v: _member(v) if isinstance(v, str) else v)]


class ChecklistItemTemplate(BaseModel):
    """One item of a checklist template: a text, optionally a runtime action to run."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    action: str = Field("", pattern=r"^$|^[a-z0-9][a-z0-9_.-]*$")
    args: str = Field("", max_length=500, description="the action's arguments, as typed in chat")

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        return {"title": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _args_need_an_action(self) -> ChecklistItemTemplate:
        if self.args and not self.action:
            raise ValueError("args are given but no action to run them with")
        return self


class ChannelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name_pattern: str = "inc-{date}-{slug}"
    private: bool = True
    team: str = Field("", description="team to create incident channels in (default: first)")

    @field_validator("name_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        used = re.findall(r"\{([^}]*)\}", value)
        unknown = [name for name in used if name not in PLACEHOLDERS]
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{unknown[0]}}} (allowed: {', '.join(PLACEHOLDERS)})"
            )
        if "slug" not in used and "id" not in used:
            raise ValueError("must contain {slug} or {id}")
        fixed = re.sub(r"\{[^}]*\}", "", value)
        if not re.fullmatch(r"[a-z0-9_-]*", fixed) or not re.match(r"[a-z0-9{]", value):
            raise ValueError(
                "channel names start with a lowercase letter or digit and hold only "
                "lowercase letters, digits, '-' and '_'"
            )
        return value


class SeveritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    update_every: Duration = Field(default_factory=lambda: timedelta(hours=1))
    responders: list[Member] = Field(default_factory=list)

    @field_validator("update_every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be greater than zero")
        return value


class ServiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    responders: list[Member] = Field(default_factory=list)
    by_severity: dict[int, list[Member]] = Field(default_factory=dict)
    type: str = Field("", description="checklist template of this service's incidents")

    @field_validator("by_severity")
    @classmethod
    def _known(cls, value: dict[int, list[str]]) -> dict[int, list[str]]:
        for severity in value:
            if severity not in SEVERITIES:
                raise ValueError(f"severity {severity} is not one of 1, 2, 3, 4")
        return value


DEFAULT_SEVERITIES: dict[int, dict[str, Any]] = {
    1: {"name": "critical", "update_every": "15m"},
    2: {"name": "major", "update_every": "30m"},
    3: {"name": "minor", "update_every": "1h"},
    4: {"name": "low", "update_every": "4h"},
}
DEFAULT_CHECKLIST = [
    ChecklistItemTemplate(title="Assign a commander, comms and scribe"),
    ChecklistItemTemplate(title="Assess impact and set the severity"),
    ChecklistItemTemplate(title="Post the first status update"),
    ChecklistItemTemplate(title="Mitigate"),
    ChecklistItemTemplate(title="Schedule the post-mortem"),
]


class IncidentsConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    channel: ChannelSettings = Field(default_factory=ChannelSettings)
    stakeholder_channel: str = Field("", description="~channel or team/channel")
    roles: list[Annotated[str, Field(pattern=NAME)]] = Field(
        default_factory=lambda: ["commander", "comms", "scribe"], min_length=1
    )
    default_severity: int = 3
    severities: dict[int, SeveritySettings] = Field(default_factory=dict)
    services: dict[Annotated[str, Field(pattern=NAME)], ServiceSettings] = Field(
        default_factory=dict
    )
    checklists: dict[Annotated[str, Field(pattern=NAME)], list[ChecklistItemTemplate]] = Field(
        default_factory=lambda: {"default": DEFAULT_CHECKLIST}
    )

    @field_validator("default_severity")
    @classmethod
    def _default_known(cls, value: int) -> int:
        if value not in SEVERITIES:
            raise ValueError("must be 1, 2, 3 or 4")
        return value

    @field_validator("severities", mode="before")
    @classmethod
    def _all_severities(cls, value: Any) -> Any:
        """Every severity, each setting not given taken from the defaults."""
        if not isinstance(value, dict):
            return value
        merged: dict[Any, Any] = {k: dict(v) for k, v in DEFAULT_SEVERITIES.items()}
        for key, given in value.items():
            number = int(key) if isinstance(key, str) and key.isdigit() else key
            if number not in SEVERITIES:
                raise ValueError(f"severity {key} is not one of 1, 2, 3, 4")
            merged[number] = {**merged[number], **given} if isinstance(given, dict) else given
        return merged

    @field_validator("roles")
    @classmethod
    def _commander_first(cls, value: list[str]) -> list[str]:
        if "commander" not in value:
            raise ValueError("must include commander")
        if len(set(value)) != len(value):
            raise ValueError("a role is listed twice")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_severities(cls, value: Any) -> Any:
        if isinstance(value, dict) and "severities" not in value:
            return {**value, "severities": {}}
        return value

    @model_validator(mode="after")
    def _types_exist(self) -> IncidentsConfig:
        if "default" not in self.checklists:
            self.checklists["default"] = list(DEFAULT_CHECKLIST)
        for name, service in self.services.items():
            if service.type and service.type not in self.checklists:
                raise ValueError(
                    f"services.{name}.type: no checklist {service.type!r} "
                    f"(checklists: {', '.join(sorted(self.checklists))})"
                )
        return self

    # --- questions -------------------------------------------------------------------------
    def severity(self, severity: int) -> SeveritySettings:
        return self.severities[severity]

    def severity_label(self, severity: int) -> str:
        name = self.severities[severity].name
        return f"SEV{severity} ({name})" if name else f"SEV{severity}"

    def responders(self, service: str, severity: int) -> list[str]:
        """Everyone to invite, in order, without repeats: the severity's, then the
        service's, then the service's for this severity."""
        members = list(self.severities[severity].responders)
        settings = self.services.get(service)
        if settings is not None:
            members += settings.responders + settings.by_severity.get(severity, [])
        return list(dict.fromkeys(members))

    def checklist_type(self, service: str, requested: str = "") -> str:
        if requested:
            return requested
        settings = self.services.get(service)
        return settings.type if settings and settings.type else "default"


def load_incidents_config(path: Path | None) -> IncidentsConfig:
    """The configuration in ``path`` (None: every default). Raises IncidentsConfigError."""
    if path is None:
        return IncidentsConfig()
    raw = load_yaml(path, IncidentsConfigError)
    return validate(IncidentsConfig, raw, str(path), IncidentsConfigError)
