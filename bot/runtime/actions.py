"""Actions: declared once, with typed parameters, a risk level and a target.

An action is a plugin method decorated with ``bot.runtime.action`` (which calls
:func:`declare` and makes the method an Errbot command). Its signature is the contract:
every parameter after ``ctx`` is typed, and the type (any pydantic-validatable type:
``int``, ``Literal[...]``, ``Annotated[str, StringConstraints(pattern=...)]``, enums...)
validates what comes from chat or from an alert rule. A value that does not validate is
refused with a message naming the parameter, before anything runs.

Chat arguments are split like a shell would split them (``shlex``, never executed), then
bound positionally or as ``name=value``. A parameter may also be introduced by a word,
declared with :class:`Arg`: ``env: Annotated[str, Arg(after="to")]`` lets
``!deploy api 1.4.2 to staging`` bind ``staging`` to ``env``.

Example::

    class Deploys(BotPlugin):
        @action(risk=Risk.CHANGE, target="env", timeout=1800)
        def deploy(self, ctx, app: App, version: Version, env: Annotated[Env, Arg(after="to")]):
            \"\"\"Deploy an application version to an environment.\"\"\"
            ...
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import shlex
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import TypeAdapter, ValidationError
from typing_extensions import Unpack

from bot.errors import InvalidArgument
from bot.runtime.policy import Risk

ACTION_ATTRIBUTE = "_opsroom_action"
MAX_ARGUMENT_LENGTH = 512  # one value
MAX_ARGUMENTS_LENGTH = 4096  # the whole text, checked before it is split


class ActionArgumentError(InvalidArgument):
    """Chat arguments that do not fit the action; the message is shown to the user."""


@dataclass(frozen=True)
class Arg:
    """Extra information for a parameter, given with ``Annotated[type, Arg(...)]``."""

    help: str = ""
    after: str = ""  # a word that introduces this parameter in chat ("to", "on")
    keywords: bool = False  # collects every other name=value pair into a dict


@dataclass(frozen=True)
class Param:
    name: str
    annotation: Any
    required: bool
    default: Any
    arg: Arg

    @functools.cached_property
    def adapter(self) -> TypeAdapter:
        return TypeAdapter(self.annotation)

    def validate(self, value: Any) -> Any:
        values = value.values() if isinstance(value, dict) else [value]
        if any(isinstance(v, str) and len(v) > MAX_ARGUMENT_LENGTH for v in values):
            raise ActionArgumentError(f"{self.name}: longer than {MAX_ARGUMENT_LENGTH} characters")
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise ActionArgumentError(
                f"{self.name}: {self._explain(exc)} (got {_shown(value)})"
            ) from None

    def _explain(self, exc: ValidationError) -> str:
        """Say what was expected in the parameter's own words (``Arg(help=...)``), or in
        plain words for the common cases; pydantic's wording is the last resort."""
        if self.arg.help:
            return f"expected {self.arg.help}"
        reasons = []
        for error in exc.errors():
            kind, context = error["type"], error.get("ctx") or {}
            if kind == "literal_error":
                reasons.append(f"must be {context.get('expected', 'one of the allowed values')}")
            elif kind == "string_pattern_mismatch":
                reasons.append(f"must match {context.get('pattern', 'its pattern')}")
            elif kind in ("int_parsing", "int_from_float", "int_type"):
                reasons.append("must be a whole number")
            elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
                reasons.append(error["msg"].replace("Input should be", "must be"))
            else:
                reasons.append(error["msg"])
        return "; ".join(reasons)

    def describe(self) -> str:
        """The parameter as shown in usage: ``<name>``, ``to <env>``, ``[<name>]``."""
        if self.arg.keywords:
            return "[name=value ...]"
        shown = f"<{self.name}>"
        if self.arg.after:
            shown = f"{self.arg.after} {shown}"
        return shown if self.required else f"[{shown}]"


@dataclass(frozen=True)
class ActionSpec:
    """Everything the runtime needs to know about one action."""

    name: str
    func: Callable[..., Any]
    params: tuple[Param, ...]
    target: str | None = None  # name of the parameter holding the target (locks, policy)
    summary: str = ""
    risk: Risk = Risk.READ
    environment: Callable[[Any, Mapping[str, Any]], str] | None = None  # for the policy
    # The action's own checks of its arguments (inventory look-ups), run before the
    # policy and before any job exists; raises bot.errors.Refusal to refuse.
    check: Callable[[Any, Mapping[str, Any]], None] | None = None
    timeout: float = 600.0
    confirm: bool | None = None  # None: confirm change actions on protected environments
    approval: bool | None = None  # None: dangerous actions need a second person's approval
    lock: Literal["queue", "refuse"] = "queue"  # a second run on a busy target

    # --- arguments -------------------------------------------------------------------------
    def help(self, prefix: str = "!") -> str:
        """The command's help: summary, usage, risk and each documented parameter."""
        lines = [f"{self.summary} Usage: {self.usage(prefix)} ({self.risk} action)"]
        lines += [f"  {p.name}: {p.arg.help}" for p in self.params if p.arg.help]
        return "\n".join(lines)

    def usage(self, prefix: str = "!") -> str:
        words = " ".join(param.describe() for param in self.params)
        return f"{prefix}{self.name.replace('.', ' ')} {words}".rstrip()

    def parse(self, text: str) -> dict[str, Any]:
        """Bind chat text to parameters and validate them. Raises ActionArgumentError."""
        if len(text) > MAX_ARGUMENTS_LENGTH:
            raise ActionArgumentError(
                f"the arguments are {len(text)} characters long; at most "
                f"{MAX_ARGUMENTS_LENGTH} are read"
            )
        try:
            tokens = shlex.split(text, posix=True)
        except ValueError as exc:
            raise ActionArgumentError(f"cannot read the arguments: {exc}") from None
        by_word = {param.arg.after: param for param in self.params if param.arg.after}
        keywords = next((param for param in self.params if param.arg.keywords), None)
        by_name = {param.name: param for param in self.params}
        raw: dict[str, Any] = {}
        positional = [p for p in self.params if not p.arg.keywords]
        # Parameters whose word appears later: a plain word is never bound to them.
        introduced = {by_word[token].name for token in tokens[:-1] if token in by_word}
        index = 0
        while index < len(tokens):
            token = tokens[index]
            name, eq, value = token.partition("=")
            if eq and name in by_name and not by_name[name].arg.keywords:
                self._bind(raw, by_name[name], value)
            elif eq and keywords is not None:
                collected = raw.setdefault(keywords.name, {})
                if name in collected:
                    raise ActionArgumentError(f"{name} given twice")
                collected[name] = value
            elif token in by_word and index + 1 < len(tokens):
                index += 1
                self._bind(raw, by_word[token], tokens[index])
            else:
                # In the signature's order, introduced or not: `!cache flush sessions
                # staging` binds like `!cache flush sessions in staging`.
                free = [
                    param
                    for param in positional
                    if param.name not in raw and param.name not in introduced
                ]
                if not free:
                    raise ActionArgumentError(f"unexpected argument {token!r}")
                self._bind(raw, free[0], token)
            index += 1
        return self.validate(raw)

    @staticmethod
    def _bind(raw: dict[str, Any], param: Param, value: str) -> None:
        if param.name in raw:
            raise ActionArgumentError(f"{param.name} given twice")
        raw[param.name] = value

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate already-bound values (from chat or an alert rule)."""
        unknown = set(values) - {param.name for param in self.params}
        if unknown:
            raise ActionArgumentError(f"unknown parameter {', '.join(sorted(unknown))}")
        result = {}
        for param in self.params:
            if param.name in values:
                result[param.name] = param.validate(values[param.name])
            elif param.required:
                raise ActionArgumentError(f"missing {param.name}")
            else:
                result[param.name] = copy.copy(param.default)  # never share a mutable default
        return result

    def target_of(self, values: Mapping[str, Any]) -> str:
        return str(values.get(self.target, "")) if self.target else ""

    def precheck(self, plugin: Any, values: Mapping[str, Any]) -> None:
        """Run the action's own checks (raise Refusal) before anything is decided."""
        if self.check is not None:
            self.check(plugin, values)

    def environment_of(self, plugin: Any, values: Mapping[str, Any]) -> str:
        """The environment the policy decides on: derived, or the target's value."""
        if self.environment is not None:
            return self.environment(plugin, values)
        return self.target_of(values)

    def digest(self, values: Mapping[str, Any]) -> str:
        """A hash of the action and its exact arguments: what an approval is bound to."""
        canonical = json.dumps(
            {"action": self.name, "arguments": values}, sort_keys=True, default=str
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _shown(value: Any) -> str:
    """A value as shown back in an error: repr'd (control characters escaped), cut."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


class ActionOptions(TypedDict, total=False):
    """The options of an action (``declare`` and ``bot.plugin.action`` take them as
    keyword arguments); see docs/plugin-authoring.md."""

    risk: Risk  # READ (default), CHANGE or DANGEROUS
    target: str | None  # the parameter whose value is locked and recorded
    environment: Callable[[Any, Mapping[str, Any]], str] | None  # derive the policy env
    check: Callable[[Any, Mapping[str, Any]], None] | None  # refuse early (raise Refusal)
    timeout: float  # seconds the job may run (default 600)
    confirm: bool | None  # None: confirm changes on protected environments
    approval: bool | None  # None: dangerous actions need a second person
    lock: Literal["queue", "refuse"]  # a second run on a busy target


def declare(
    name: str | None = None, **options: Unpack[ActionOptions]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach an ActionSpec to a function (``bot.plugin.action`` also makes it a chat
    command; this is the chat-free part).

    ``target`` names the parameter whose value is locked (one job per target at a time)
    and, unless ``environment`` is given, the environment the policy decides on.
    ``environment(plugin, values)`` derives that environment otherwise (for instance the
    environment of the hosts a selector names).
    """
    target = options.pop("target", None)
    if options.get("lock", "queue") not in ("queue", "refuse"):
        raise ValueError("lock must be 'queue' or 'refuse'")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        spec = dataclasses.replace(build_spec(func, name or func.__name__, target), **options)
        setattr(func, ACTION_ATTRIBUTE, spec)
        return func

    return decorate


def build_spec(func: Callable[..., Any], name: str, target: str | None = None) -> ActionSpec:
    """Read the parameters of ``func(self, ctx, ...)`` into an ActionSpec (defaults for
    everything the signature does not say)."""
    hints = typing.get_type_hints(func, include_extras=True)
    signature = inspect.signature(func)
    params = []
    for param in list(signature.parameters.values())[2:]:  # skip self and ctx
        if param.name not in hints:
            raise TypeError(f"action {name}: parameter {param.name} needs a type annotation")
        annotation = hints[param.name]
        arg = next(
            (extra for extra in getattr(annotation, "__metadata__", ()) if isinstance(extra, Arg)),
            Arg(),
        )
        required = param.default is inspect.Parameter.empty
        params.append(
            Param(param.name, annotation, required, None if required else param.default, arg)
        )
    if target and target not in {param.name for param in params}:
        raise TypeError(f"action {name}: target {target!r} is not one of its parameters")
    summary = (inspect.getdoc(func) or "").split("\n", 1)[0]
    return ActionSpec(name=name, func=func, params=tuple(params), target=target, summary=summary)


def spec_of(func: Callable[..., Any]) -> ActionSpec | None:
    """The ActionSpec of a decorated function or bound method, if it is an action."""
    return getattr(getattr(func, "__func__", func), ACTION_ATTRIBUTE, None)
