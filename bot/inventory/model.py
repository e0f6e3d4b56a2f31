"""The inventory file as pydantic models, and the checks that span keys.

The structure (types, required keys, no unknown keys) is checked by the models; what spans
keys (a host name used twice, a ``{placeholder}`` that no parameter declares, a deploy to a
group that does not exist) by :func:`cross_check`. Both report file, key and expectation.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    field_validator,
    model_validator,
)

from bot.durations import parse_duration
from bot.inventory.jenkins import EnvironmentJenkins, JenkinsSection, jenkins_problems
from bot.inventory.kubernetes import KubernetesEntry
from bot.inventory.validation import (
    BRACES,
    HOSTNAME,
    LEADING_DASH,
    NAME,
    NAME_RULE,
    PARAM_NAME,
    PROGRAM,
    UNIT,
    UNIT_RULE,
    USER,
    check_value,
    hint,
    one_of,
)


# --- the file, as pydantic models ---------------------------------------------------------------
def _matching(regex: re.Pattern[str], rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"expected {rule}")
        return value

    return AfterValidator(check)


def _scalar_text(value: object) -> object:
    """YAML reads ``lines: 100`` as a number; parameter values and argv words are text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be greater than zero")
    return value


def _address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not HOSTNAME.fullmatch(value):
            raise ValueError("expected a DNS name or an IP address") from None
    return value


def _unique(values: list[str]) -> list[str]:
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"listed more than once: {', '.join(repeated)}")
    return values


Name = Annotated[str, _matching(NAME, NAME_RULE)]
ParamName = Annotated[
    str, _matching(PARAM_NAME, "a letter or '_', then letters, digits or '_' (at most 32)")
]
Unit = Annotated[str, _matching(UNIT, UNIT_RULE)]
User = Annotated[str, _matching(USER, "a user name: letters, digits, '_', '.' or '-'")]
Program = Annotated[
    str, _matching(PROGRAM, "a command name or path: letters, digits, '_', '.', '/' or '-'")
]
Address = Annotated[str, AfterValidator(_address)]
Port = Annotated[int, Field(ge=1, le=65535)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
Value = Annotated[str, BeforeValidator(_scalar_text)]


@dataclass(frozen=True)
class Word:
    """One argv word of a command template: literal text, or ``prefix{param}suffix``."""

    prefix: str
    param: str | None = None
    suffix: str = ""

    def render(self, values: Mapping[str, str]) -> str:
        if self.param is None:
            return self.prefix
        return self.prefix + values[self.param] + self.suffix


def parse_word(raw: object) -> Word:
    """Parse ``"--version={version}"`` into a :class:`Word`; ``{{`` and ``}}`` are braces."""
    raw = _scalar_text(raw)
    if not isinstance(raw, str):
        raise ValueError("each word of a step must be text (a step is a list of argv words)")
    if not raw:
        raise ValueError("a word must not be empty")
    if any(unicodedata.category(char) == "Cc" for char in raw):
        raise ValueError("a word must not contain control characters")
    param: str | None = None
    before: list[str] = []
    literal: list[str] = []
    position = 0
    for match in BRACES.finditer(raw):
        literal.append(raw[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif match.group(1) is None:
            raise ValueError("unbalanced brace (write {{ or }} for a literal one)")
        elif not PARAM_NAME.fullmatch(match.group(1)):
            raise ValueError(f"{{{match.group(1)}}} is not a parameter name")
        elif param is not None:
            raise ValueError("at most one {parameter} per word")
        else:
            param, before, literal = match.group(1), literal, []
    literal.append(raw[position:])
    if param is None:
        return Word("".join(literal))
    return Word("".join(before), param, "".join(literal))


def _program_is_literal(step: list[Word]) -> list[Word]:
    if step[0].param is not None:
        raise ValueError("the first word (the program) must be literal, not a {parameter}")
    return step


def _not_a_shell_string(step: object) -> object:
    if isinstance(step, str):
        raise ValueError("a step is a list of argv words such as [df, -h], not a shell string")
    return step


Step = Annotated[
    list[Annotated[Word, PlainValidator(parse_word)]],
    Field(min_length=1),
    BeforeValidator(_not_a_shell_string),
    AfterValidator(_program_is_literal),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Model):
    """A typed parameter: a value must full-match ``pattern`` or be one of ``choices``."""

    description: str = ""
    pattern: str | None = None
    choices: list[Value] | None = None
    required: bool | None = None
    default: Value | None = None
    _regex: re.Pattern[str] | None = PrivateAttr(None)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern, re.ASCII)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        if (self.pattern is None) == (self.choices is None):
            raise ValueError("give exactly one of pattern or choices")
        if self.pattern is not None:
            self._regex = re.compile(self.pattern, re.ASCII)
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices must not be empty")
            for choice in self.choices:
                check_value("choice", choice, allow_dash=True)
        if self.required and self.default is not None:
            raise ValueError("a parameter with a default is not required: drop one of the two")
        if self.required is False and self.default is None:
            raise ValueError("an optional parameter needs a default")
        if self.default is not None:
            self.check("default", self.default)
        return self

    @property
    def is_required(self) -> bool:
        return self.default is None

    @property
    def expectation(self) -> str:
        """What a value must be, for help and error messages."""
        return one_of(self.choices) if self.choices is not None else f"must match {self.pattern}"

    def usage(self, name: str) -> str:
        """How to give it, for listings: ``lines=<^[0-9]{1,4}$> (default 100): how many``."""
        rule = "|".join(self.choices) if self.choices is not None else self.pattern
        text = f"{name}=<{rule}>"
        if self.default is not None:
            text += f" (default {self.default})"
        return f"{text}: {self.description}" if self.description else text

    def check(self, name: str, value: object) -> str:
        """The value if it is allowed for this parameter, else :class:`InvalidParameter`."""
        allow_dash = self.pattern is not None and bool(LEADING_DASH.match(self.pattern))
        return check_value(
            name, value, pattern=self._regex, choices=self.choices, allow_dash=allow_dash
        )


class Defaults(_Model):
    """Connection and service settings for every host that does not set its own."""

    user: User | None = None
    port: Port = 22
    key_file: Path | None = None
    use_agent: bool = True
    known_hosts: Path | None = None
    service_manager: Program = "systemctl"
    sudo: bool = False
    connect_timeout: Duration = timedelta(seconds=10)


class HostEntry(_Model):
    address: Address
    user: User | None = None
    port: Port | None = None
    key_file: Path | None = None
    use_agent: bool | None = None
    known_hosts: Path | None = None
    service_manager: Program | None = None
    sudo: bool | None = None
    connect_timeout: Duration | None = None
    services: Annotated[list[Unit], AfterValidator(_unique)] = Field(default_factory=list)
    groups: Annotated[list[Name], AfterValidator(_unique)] = Field(default_factory=list)


class EnvironmentEntry(_Model):
    description: str = ""
    hosts: dict[Name, HostEntry] = Field(default_factory=dict)
    kubernetes: KubernetesEntry | None = None
    jenkins: EnvironmentJenkins | None = None

    @model_validator(mode="after")
    def _something_to_operate(self) -> EnvironmentEntry:
        # An environment may be a cluster or a Jenkins folder only; an empty one is a typo.
        if not self.hosts and self.kubernetes is None and self.jenkins is None:
            raise ValueError("an environment needs hosts, kubernetes or jenkins")
        return self


class Recipe(_Model):
    """A named, allow-listed command sequence: ``!run <recipe> on <target> [param=value]``."""

    description: str = ""
    params: dict[ParamName, Param] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    timeout: Duration = timedelta(seconds=60)


class HealthCheck(_Model):
    """Run on each host of a batch after its steps; healthy means exit status 0."""

    command: Step
    attempts: int = Field(3, ge=1, le=100)
    interval: Duration = timedelta(seconds=5)
    timeout: Duration = timedelta(seconds=30)


def _selection_shorthand(value: object) -> object:
    return {"group": value} if isinstance(value, str) else value


class HostSelection(_Model):
    """Which hosts of one environment an app is deployed to: a group (or host, or the
    environment's own name), or every host that runs a service."""

    group: Name | None = None
    service: Unit | None = None

    @model_validator(mode="after")
    def _one(self) -> HostSelection:
        if (self.group is None) == (self.service is None):
            raise ValueError("give exactly one of group or service")
        return self


def _rollback_shorthand(value: object) -> object:
    if isinstance(value, str):
        return {"recipe": value}
    if isinstance(value, list):
        return {"steps": value}
    return value


class Rollback(_Model):
    recipe: Name | None = None
    steps: list[Step] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> Rollback:
        if (self.recipe is None) == (self.steps is None):
            raise ValueError("give exactly one of recipe or steps")
        return self


class Deploy(_Model):
    """A rolling deploy of one app: ``!deploy <app> <version> to <env>``."""

    description: str = ""
    hosts: dict[Name, Annotated[HostSelection, BeforeValidator(_selection_shorthand)]] = Field(
        min_length=1
    )
    batch_size: int = Field(1, ge=1)
    params: dict[ParamName, Param]
    steps: list[Step] = Field(min_length=1)
    health_check: HealthCheck
    rollback: Annotated[Rollback | None, BeforeValidator(_rollback_shorthand)] = None
    timeout: Duration = timedelta(minutes=10)


class InventoryDocument(_Model):
    """The whole file."""

    defaults: Defaults = Field(default_factory=Defaults)
    environments: dict[Name, EnvironmentEntry] = Field(min_length=1)
    recipes: dict[Name, Recipe] = Field(default_factory=dict)
    deploys: dict[Name, Deploy] = Field(default_factory=dict)
    jenkins: JenkinsSection | None = None


# --- cross-references, checked after the structure ----------------------------------------------
Loc = tuple[int | str, ...]


def undeclared(
    steps: Sequence[Sequence[Word]], params: Mapping[str, Param], loc: Loc
) -> list[tuple[Loc, str]]:
    """A problem for each ``{placeholder}`` in ``steps`` that ``params`` does not declare."""
    return [
        problem
        for i, step in enumerate(steps)
        for problem in _undeclared_in_step(step, params, (*loc, i))
    ]


def _undeclared_in_step(
    step: Sequence[Word], params: Mapping[str, Param], loc: Loc
) -> list[tuple[Loc, str]]:
    return [
        ((*loc, j), f"{{{word.param}}} is not a declared parameter ({_declared(params)})")
        for j, word in enumerate(step)
        if word.param is not None and word.param not in params
    ]


def _declared(params: Mapping[str, Param]) -> str:
    return "declared: " + ", ".join(params) if params else "none are declared"


def cross_check(doc: InventoryDocument) -> list[tuple[Loc, str]]:
    """Problems that span keys: names used twice, references to things that do not exist."""
    problems: list[tuple[Loc, str]] = jenkins_problems(doc)
    first_env: dict[str, str] = {}
    for env, entry in doc.environments.items():
        for name in entry.hosts:
            if name in first_env:
                problems.append(
                    (
                        ("environments", env, "hosts", name),
                        f"host name already used in {first_env[name]}",
                    )
                )
            first_env.setdefault(name, env)
    for env, entry in doc.environments.items():
        for name, host in entry.hosts.items():
            for group in host.groups:
                where: Loc = ("environments", env, "hosts", name, "groups")
                if group in doc.environments:
                    problems.append((where, f"{group!r} is an environment: its hosts already are"))
                elif group in first_env:
                    problems.append((where, f"{group!r} is a host name; a group needs its own"))

    for name, recipe in doc.recipes.items():
        problems += undeclared(recipe.steps, recipe.params, ("recipes", name, "steps"))

    for app, deploy in doc.deploys.items():
        loc: Loc = ("deploys", app)
        if "version" not in deploy.params:
            problems.append(((*loc, "params"), "must declare the parameter version"))
        problems += undeclared(deploy.steps, deploy.params, (*loc, "steps"))
        problems += _undeclared_in_step(
            deploy.health_check.command, deploy.params, (*loc, "health_check", "command")
        )
        for env, selection in deploy.hosts.items():
            problem = _check_selection(doc, env, selection)
            if problem:
                problems.append(((*loc, "hosts", env), problem))
        if deploy.rollback is not None:
            problems += _check_rollback(doc, app, deploy.params, deploy.rollback)
    return problems


def _check_rollback(
    doc: InventoryDocument, app: str, params: Mapping[str, Param], rollback: Rollback
) -> list[tuple[Loc, str]]:
    """Inline steps use declared parameters; a named recipe exists and gets what it needs."""
    loc: Loc = ("deploys", app, "rollback")
    if rollback.steps is not None:
        return undeclared(rollback.steps, params, (*loc, "steps"))
    name = str(rollback.recipe)
    recipe = doc.recipes.get(name)
    if recipe is None:
        suggestion, _ = hint(name, doc.recipes)
        return [((*loc, "recipe"), f"no recipe {name!r}{suggestion}")]
    missing = [p for p, spec in recipe.params.items() if spec.is_required and p not in params]
    if missing:
        return [
            (
                (*loc, "recipe"),
                f"recipe {name} needs {', '.join(missing)}, which deploy {app} does not declare",
            )
        ]
    return []


def _check_selection(doc: InventoryDocument, env: str, selection: HostSelection) -> str | None:
    if env not in doc.environments:
        suggestion, _ = hint(env, doc.environments)
        return f"no environment {env!r}{suggestion}"
    hosts = doc.environments[env].hosts
    if selection.service is not None:
        if not any(selection.service in host.services for host in hosts.values()):
            return f"no host of {env} runs service {selection.service!r}"
        return None
    group = selection.group
    if group == env or group in hosts or any(group in h.groups for h in hosts.values()):
        return None
    known = {
        name
        for other, entry in doc.environments.items()
        for name in (other, *entry.hosts, *(g for h in entry.hosts.values() for g in h.groups))
    }
    if group in known:
        return f"{group!r} has no hosts in {env}"
    suggestion, _ = hint(str(group), sorted(known))
    return f"no group, host or environment {group!r}{suggestion}"
