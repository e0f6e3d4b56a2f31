"""The inventory: environments, hosts, services, and the only commands the bot may run on them.

Nothing here talks to a host or to chat. The inventory turns a request ("restart nginx on web in
staging", "run tail-log with lines=50", "deploy api 1.4.2 to production") into argv lists, and
refuses anything it does not allow *before* a connection is made:

- hosts, groups, environments, services, recipes and apps must be named in the inventory;
- every parameter value must match its declared pattern or choices, be printable ASCII, at most
  128 characters, and not start with ``-`` (so it cannot be smuggled in as an option);
- commands are lists of argv words written in the inventory; a parameter fills exactly one
  word, never a shell string, so a value stays one argument however it is quoted later.

The file format is documented in ``docs/inventory.md``; ``examples/inventory.yaml`` is complete.

Errors form two families. :class:`InventoryError` is a bad file (start-up stops; the message
names file, key and expectation). :class:`Refused` and its subclasses are requests the
inventory does not allow; their messages are written to be shown in chat as they are.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar, get_args

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
from bot.errors import ConfigurationError, InvalidArgument, Refusal, UnknownTarget
from bot.yamlconfig import format_key, load_yaml, validate

MAX_VALUE_LENGTH = 128
T = TypeVar("T")
ServiceAction = Literal["status", "restart", "start", "stop"]
SERVICE_ACTIONS: tuple[str, ...] = get_args(ServiceAction)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
# systemd unit names, without the leading '-' of "-.mount" and without '\' escapes.
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9:_.@-]{0,127}")
_UNIT_RULE = (
    "a systemd unit name: letters, digits, ':', '_', '.', '@' or '-', not starting with '-'"
)
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_PROGRAM = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]{0,127}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# A placeholder, an escaped brace, or a stray brace (an error).
_BRACES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# A pattern "explicitly allows" a leading '-' when its first token is a literal dash.
_LEADING_DASH = re.compile(r"\^?\\?-")


# --- errors -------------------------------------------------------------------------------------
class InventoryError(ConfigurationError):
    """The inventory file is missing, not YAML, or does not validate; names file and key."""


Refused = Refusal  # what the inventory does not allow: nothing ran; the message is for chat


class InvalidParameter(InvalidArgument):
    """A value that fails its rule: the parameter, the value (escaped, truncated) and why."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        self.parameter = parameter
        self.value = value
        self.reason = reason
        if value is None:
            super().__init__(f"missing {parameter}: {reason}")
        else:
            super().__init__(f"invalid {parameter} {_show(value)}: {reason}")


class AmbiguousTarget(Refused):
    """A group with hosts in several environments was named without an environment.

    One request never spans environments: authorization and approval are per environment.
    """

    def __init__(self, name: str, environments: Sequence[str]) -> None:
        self.name = name
        self.environments = tuple(environments)
        super().__init__(f"{name} has hosts in {' and '.join(environments)}; name the environment")


class NotAllowed(Refused):
    """Well-formed, but not in the allow-list: a service not on the host, an unknown recipe."""


# --- value checks -------------------------------------------------------------------------------
def _show(value: object, limit: int = 40) -> str:
    """``ascii()`` of the value, truncated: escapes make look-alikes and control characters
    visible (``'ngin\\u0445'``), and a long value cannot flood the chat."""
    if isinstance(value, str) and len(value) > limit:
        return f"{ascii(value[:limit])[:-1]}...' ({len(value)} characters)"
    return ascii(value)


def check_value(
    parameter: str,
    value: object,
    *,
    pattern: re.Pattern[str] | None = None,
    choices: Sequence[str] | None = None,
    expected: str | None = None,
    allow_dash: bool = False,
) -> str:
    """Return ``value`` if it passes every rule, else raise :class:`InvalidParameter`.

    Rules, in order: text, not empty, at most 128 characters, printable ASCII (no control
    characters, no look-alikes), no leading ``-`` unless ``allow_dash`` or it is one of the
    ``choices``, then one of ``choices`` or a full match of ``pattern``. ``expected`` replaces
    the default "must match <pattern>" in the message.
    """
    if not isinstance(value, str):
        raise InvalidParameter(parameter, value, "must be text")
    if not value:
        raise InvalidParameter(parameter, value, "must not be empty")
    if len(value) > MAX_VALUE_LENGTH:
        raise InvalidParameter(parameter, value, f"must be at most {MAX_VALUE_LENGTH} characters")
    for position, char in enumerate(value, 1):
        if not " " <= char <= "~":
            raise InvalidParameter(
                parameter,
                value,
                f"must be printable ASCII (character {position} is {char!a})",
            )
    if choices is not None:
        if value not in choices:
            raise InvalidParameter(parameter, value, expected or _one_of(choices))
        return value
    if value.startswith("-") and not allow_dash:
        raise InvalidParameter(
            parameter, value, "must not start with '-' (it would be read as an option)"
        )
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidParameter(parameter, value, expected or f"must match {pattern.pattern}")
    return value


def _one_of(choices: Iterable[str]) -> str:
    return "must be one of: " + ", ".join(choices)


def _either(names: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def _close(value: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(value, list(candidates), n=3, cutoff=0.6)


def _hint(value: str, candidates: Iterable[str]) -> tuple[str, list[str]]:
    """``("; did you mean web1?", ["web1"])``, or the known names when nothing is close."""
    names = list(candidates)
    close = _close(value, names)
    if close:
        return f"; did you mean {_either(close)}?", close
    if not names:
        return "", []
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f" (known: {shown})", []


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
        if not _HOSTNAME.fullmatch(value):
            raise ValueError("expected a DNS name or an IP address") from None
    return value


def _unique(values: list[str]) -> list[str]:
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ValueError(f"listed more than once: {', '.join(repeated)}")
    return values


Name = Annotated[str, _matching(_NAME, _NAME_RULE)]
ParamName = Annotated[
    str, _matching(_PARAM_NAME, "a letter or '_', then letters, digits or '_' (at most 32)")
]
Unit = Annotated[str, _matching(_UNIT, _UNIT_RULE)]
User = Annotated[str, _matching(_USER, "a user name: letters, digits, '_', '.' or '-'")]
Program = Annotated[
    str, _matching(_PROGRAM, "a command name or path: letters, digits, '_', '.', '/' or '-'")
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


def _parse_word(raw: object) -> Word:
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
    for match in _BRACES.finditer(raw):
        literal.append(raw[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif match.group(1) is None:
            raise ValueError("unbalanced brace (write {{ or }} for a literal one)")
        elif not _PARAM_NAME.fullmatch(match.group(1)):
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
    list[Annotated[Word, PlainValidator(_parse_word)]],
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
        return _one_of(self.choices) if self.choices is not None else f"must match {self.pattern}"

    def check(self, name: str, value: object) -> str:
        """The value if it is allowed for this parameter, else :class:`InvalidParameter`."""
        allow_dash = self.pattern is not None and bool(_LEADING_DASH.match(self.pattern))
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
    hosts: dict[Name, HostEntry] = Field(min_length=1)


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


# --- cross-references, checked after the structure ----------------------------------------------
Loc = tuple[int | str, ...]


def _undeclared(
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


def _cross_check(doc: InventoryDocument) -> list[tuple[Loc, str]]:
    """Problems that span keys: names used twice, references to things that do not exist."""
    problems: list[tuple[Loc, str]] = []
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
        problems += _undeclared(recipe.steps, recipe.params, ("recipes", name, "steps"))

    for app, deploy in doc.deploys.items():
        loc: Loc = ("deploys", app)
        if "version" not in deploy.params:
            problems.append(((*loc, "params"), "must declare the parameter version"))
        problems += _undeclared(deploy.steps, deploy.params, (*loc, "steps"))
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
        return _undeclared(rollback.steps, params, (*loc, "steps"))
    name = str(rollback.recipe)
    recipe = doc.recipes.get(name)
    if recipe is None:
        hint, _ = _hint(name, doc.recipes)
        return [((*loc, "recipe"), f"no recipe {name!r}{hint}")]
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
        hint, _ = _hint(env, doc.environments)
        return f"no environment {env!r}{hint}"
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
    hint, _ = _hint(str(group), sorted(known))
    return f"no group, host or environment {group!r}{hint}"


# --- what the bot uses --------------------------------------------------------------------------
@dataclass(frozen=True)
class Host:
    """A host with its effective settings (its own, else the inventory's defaults)."""

    name: str
    environment: str
    address: str
    port: int
    user: str | None
    key_file: Path | None
    use_agent: bool
    known_hosts: Path | None
    sudo: bool
    service_manager: str
    connect_timeout: timedelta
    services: tuple[str, ...]
    groups: tuple[str, ...]


@dataclass(frozen=True)
class HealthCheckPlan:
    argv: list[str]
    attempts: int
    interval: timedelta
    timeout: timedelta


@dataclass(frozen=True)
class DeployPlan:
    """Everything a rolling deploy runs, rendered and validated before the first connection.

    Each host of a batch runs ``steps`` in order, then ``health_check``; the next batch starts
    only when the whole batch is healthy. ``rollback`` (possibly empty) runs after a failure.
    """

    app: str
    environment: str
    params: dict[str, str]
    batches: list[list[Host]]
    steps: list[list[str]]
    health_check: HealthCheckPlan
    rollback: list[list[str]]
    timeout: timedelta


def _render(steps: Sequence[Sequence[Word]], values: Mapping[str, str]) -> list[list[str]]:
    return [[word.render(values) for word in step] for step in steps]


def _bind(owner: str, specs: Mapping[str, Param], given: Mapping[str, str]) -> dict[str, str]:
    """Validate ``given`` against ``specs``; fill defaults; refuse unknown and missing ones."""
    for name in given:
        if name not in specs:
            takes = f"it takes: {', '.join(specs)}" if specs else "it takes none"
            raise InvalidParameter("parameter", name, f"{owner} has no such parameter ({takes})")
    values = {}
    for name, spec in specs.items():
        if name in given:
            values[name] = spec.check(name, given[name])
        elif spec.default is not None:
            values[name] = spec.default
        else:
            raise InvalidParameter(name, None, f"{owner} requires it ({spec.expectation})")
    return values


def _resolve_path(path: Path | None, base_dir: Path | None) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


class Inventory:
    """The validated inventory and the questions the plugins ask of it."""

    def __init__(
        self,
        document: InventoryDocument,
        source: str = "<inventory>",
        base_dir: Path | None = None,
    ) -> None:
        problems = _cross_check(document)
        if problems:
            raise InventoryError(
                "\n".join(f"{source}: {format_key(loc)}: {message}" for loc, message in problems)
            )
        self.document = document
        self.source = source
        self.recipes: Mapping[str, Recipe] = MappingProxyType(document.recipes)
        self.deploys: Mapping[str, Deploy] = MappingProxyType(document.deploys)
        self._hosts: dict[str, Host] = {}
        self._by_env: dict[str, list[Host]] = {}
        self._groups: dict[str, list[Host]] = {}
        defaults = document.defaults.model_dump()
        for env, entry in document.environments.items():
            self._by_env[env] = []
            for name, raw in entry.hosts.items():
                # A host's own settings win over the defaults; unset ones are None.
                own = raw.model_dump(include=set(defaults), exclude_none=True)
                settings = {**defaults, **own}
                for key in ("key_file", "known_hosts"):
                    settings[key] = _resolve_path(settings[key], base_dir)
                host = Host(
                    name=name,
                    environment=env,
                    address=raw.address,
                    services=tuple(raw.services),
                    groups=tuple(raw.groups),
                    **settings,
                )
                self._hosts[name] = host
                self._by_env[env].append(host)
                for group in host.groups:
                    self._groups.setdefault(group, []).append(host)

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> Inventory:
        """Read and validate an inventory file. Relative ``key_file`` and ``known_hosts``
        paths are relative to the file's directory."""
        return cls.from_mapping(load_yaml(path, InventoryError), str(path), path.parent)

    @classmethod
    def from_mapping(
        cls, raw: Any, source: str = "<inventory>", base_dir: Path | None = None
    ) -> Inventory:
        return cls(validate(InventoryDocument, raw, source, InventoryError), source, base_dir)

    # --- targets ---------------------------------------------------------------------------
    def environments(self) -> list[str]:
        return list(self._by_env)

    def hosts(self, env: str | None = None) -> list[Host]:
        if env is None:
            return list(self._hosts.values())
        return list(self._by_env[self._environment(env)])

    def host(self, name: str) -> Host:
        """One host by name (not a group)."""
        check_value("host", name, pattern=_NAME, expected=f"must be a host name ({_NAME_RULE})")
        if name not in self._hosts:
            hint, close = _hint(name, self._hosts)
            raise UnknownTarget(name, f"unknown host {_show(name)}{hint}", close)
        return self._hosts[name]

    def resolve(self, selector: str, env: str | None = None) -> list[Host]:
        """The hosts a host name, group name or environment name stands for, in file order.

        With ``env``, only hosts of that environment. Without it, a group whose hosts lie in
        several environments is :class:`AmbiguousTarget`: one request never spans
        environments, because authorization and approvals are decided per environment.
        """
        check_value(
            "host or group",
            selector,
            pattern=_NAME,
            expected=f"must be a host or group name ({_NAME_RULE})",
        )
        if env is not None:
            env = self._environment(env)
        if selector in self._hosts:
            host = self._hosts[selector]
            if env is not None and host.environment != env:
                raise UnknownTarget(
                    selector, f"host {selector} is in {host.environment}, not {env}"
                )
            return [host]
        if selector in self._by_env:
            if env is not None and selector != env:
                raise UnknownTarget(selector, f"{selector} is an environment, not a group of {env}")
            return list(self._by_env[selector])
        if selector in self._groups:
            hosts = [h for h in self._groups[selector] if env is None or h.environment == env]
            if not hosts:
                raise UnknownTarget(selector, f"group {selector} has no hosts in {env}")
            environments = list(dict.fromkeys(h.environment for h in hosts))
            if len(environments) > 1:
                raise AmbiguousTarget(selector, environments)
            return hosts
        where = f" in {env}" if env else ""
        hint, close = _hint(selector, [*self._groups, *self._hosts, *self._by_env])
        raise UnknownTarget(
            selector, f"unknown host or group {_show(selector)}{where}{hint}", close
        )

    def services(
        self, selector: str | None = None, env: str | None = None
    ) -> dict[str, tuple[str, ...]]:
        """Host name -> the services the bot may control there, for a target or everything."""
        hosts = self.resolve(selector, env) if selector is not None else self.hosts(env)
        return {host.name: host.services for host in hosts}

    def _environment(self, env: str) -> str:
        check_value(
            "environment",
            env,
            pattern=_NAME,
            expected=f"must be an environment name ({_NAME_RULE})",
        )
        if env not in self._by_env:
            hint, close = _hint(env, self._by_env)
            raise UnknownTarget(env, f"unknown environment {_show(env)}{hint}", close)
        return env

    # --- commands --------------------------------------------------------------------------
    def service_command(self, host: Host | str, action: ServiceAction, service: str) -> list[str]:
        """argv to ``status|restart|start|stop`` one of the host's listed services:
        ``[sudo, -n,] <service manager>, <action>, <unit>``. ``action`` is checked at run time
        too, since it comes from chat.

        The inventory's own record of the host decides (a :class:`Host` passed in is looked up
        again by name), so a caller cannot widen what is allowed.
        """
        record = self.host(host.name if isinstance(host, Host) else host)
        check_value("action", action, choices=SERVICE_ACTIONS)
        check_value("service", service, pattern=_UNIT, expected=f"must be {_UNIT_RULE}")
        if service not in record.services:
            close = _close(service, record.services)
            raise NotAllowed(
                f"service {_show(service)} is not managed on {record.name} "
                f"(its services: {', '.join(record.services) or 'none'})"
                + (f"; did you mean {_either(close)}?" if close else "")
            )
        sudo = ["sudo", "-n"] if record.sudo else []
        return [*sudo, record.service_manager, action, service]

    def render_recipe(self, name: str, params: Mapping[str, str] | None = None) -> list[list[str]]:
        """The argv of each step of recipe ``name`` with ``params`` validated and filled in."""
        recipe = self._lookup("recipe", name, self.document.recipes)
        return _render(recipe.steps, _bind(f"recipe {name}", recipe.params, params or {}))

    def render_deploy(self, app: str, env: str, params: Mapping[str, str]) -> DeployPlan:
        """The whole rolling deploy of ``app`` to ``env``: batches of hosts and rendered argv."""
        deploy = self._lookup("app", app, self.document.deploys)
        env = self._environment(env)
        if env not in deploy.hosts:
            raise NotAllowed(
                f"{app} is not deployed to {env} (it deploys to: {', '.join(deploy.hosts)})"
            )
        values = _bind(f"deploy {app}", deploy.params, params)
        selection = deploy.hosts[env]
        if selection.service is not None:
            hosts = [h for h in self._by_env[env] if selection.service in h.services]
        else:
            hosts = self.resolve(str(selection.group), env)
        size = deploy.batch_size
        rollback: list[list[str]] = []
        if deploy.rollback is not None and deploy.rollback.steps is not None:
            rollback = _render(deploy.rollback.steps, values)
        elif deploy.rollback is not None and deploy.rollback.recipe is not None:
            recipe = self.document.recipes[deploy.rollback.recipe]
            rollback = self.render_recipe(
                deploy.rollback.recipe, {k: v for k, v in values.items() if k in recipe.params}
            )
        check = deploy.health_check
        return DeployPlan(
            app=app,
            environment=env,
            params=values,
            batches=[hosts[i : i + size] for i in range(0, len(hosts), size)],
            steps=_render(deploy.steps, values),
            health_check=HealthCheckPlan(
                argv=_render([check.command], values)[0],
                attempts=check.attempts,
                interval=check.interval,
                timeout=check.timeout,
            ),
            rollback=rollback,
            timeout=deploy.timeout,
        )

    def _lookup(self, kind: str, name: str, table: Mapping[str, T]) -> T:
        check_value(kind, name, pattern=_NAME, expected=f"must be the name of a configured {kind}")
        if name not in table:
            hint, _ = _hint(name, table)
            raise NotAllowed(f"no {kind} named {_show(name)}{hint}")
        return table[name]
