"""Rules for values and names, and the errors of the inventory.

Every value that reaches the inventory from chat or an alert passes :func:`check_value`:
text, not empty, at most 128 characters, printable ASCII, no leading ``-`` (so it cannot be
smuggled in as an option), then the position's own pattern or choices. A refusal names the
parameter, the value (escaped, truncated) and the rule, in one line fit for chat.

Errors: :class:`InventoryError` is a bad file (a :class:`bot.errors.ConfigurationError`);
the requests the inventory does not allow are :class:`bot.errors.Refusal` subclasses
(:class:`InvalidParameter`, :class:`bot.errors.UnknownTarget`, :class:`AmbiguousTarget`,
:class:`NotAllowed`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

from bot.errors import ConfigurationError, InvalidArgument, Refusal

MAX_VALUE_LENGTH = 128
ServiceAction = Literal["status", "restart", "start", "stop"]
SERVICE_ACTIONS: tuple[str, ...] = get_args(ServiceAction)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
NAME_RULE = "1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
# systemd unit names, without the leading '-' of "-.mount" and without '\' escapes.
UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9:_.@-]{0,127}")
UNIT_RULE = "a systemd unit name: letters, digits, ':', '_', '.', '@' or '-', not starting with '-'"
USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
PROGRAM = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]{0,127}")
HOSTNAME = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# A placeholder, an escaped brace, or a stray brace (an error).
BRACES = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# A pattern "explicitly allows" a leading '-' when its first token is a literal dash.
LEADING_DASH = re.compile(r"\^?\\?-")


# --- errors -------------------------------------------------------------------------------------
class InventoryError(ConfigurationError):
    """The inventory file is missing, not YAML, or does not validate; names file and key."""


class InvalidParameter(InvalidArgument):
    """A value that fails its rule: the parameter, the value (escaped, truncated) and why."""

    def __init__(self, parameter: str, value: object, reason: str) -> None:
        self.parameter = parameter
        self.value = value
        self.reason = reason
        if value is None:
            super().__init__(f"missing {parameter}: {reason}")
        else:
            super().__init__(f"invalid {parameter} {show_value(value)}: {reason}")


class AmbiguousTarget(Refusal):
    """A group with hosts in several environments was named without an environment.

    One request never spans environments: authorization and approval are per environment.
    """

    def __init__(self, name: str, environments: Sequence[str]) -> None:
        self.name = name
        self.environments = tuple(environments)
        super().__init__(f"{name} has hosts in {' and '.join(environments)}; name the environment")


class NotAllowed(Refusal):
    """Well-formed, but not in the allow-list: a service not on the host, an unknown recipe."""


# --- value checks -------------------------------------------------------------------------------
def show_value(value: object, limit: int = 40) -> str:
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
            raise InvalidParameter(parameter, value, expected or one_of(choices))
        return value
    if value.startswith("-") and not allow_dash:
        raise InvalidParameter(
            parameter, value, "must not start with '-' (it would be read as an option)"
        )
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidParameter(parameter, value, expected or f"must match {pattern.pattern}")
    return value


def one_of(choices: Iterable[str]) -> str:
    return "must be one of: " + ", ".join(choices)


def either(names: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def close_matches(value: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(value, list(candidates), n=3, cutoff=0.6)


def hint(value: str, candidates: Iterable[str]) -> tuple[str, list[str]]:
    """``("; did you mean web1?", ["web1"])``, or the known names when nothing is close."""
    names = list(candidates)
    close = close_matches(value, names)
    if close:
        return f"; did you mean {either(close)}?", close
    if not names:
        return "", []
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f" (known: {shown})", []
