"""Who asks for an action: a person in chat, an alert rule acting as a role, or an operator.

Every request reaches the runtime with one of these typed callers. The policy decides on
the caller's :attr:`principal`; the audit log records ``actor`` and ``trigger`` from it;
the channel echo names it with :meth:`describe`.

- :class:`Person`: someone in chat, by immutable user id (the username is a label).
- :class:`Rule`: an alert rule, acting as the named policy role (``as_role:``) that must
  hold the grant; the alert's fingerprint is the trigger.
- :class:`Operator`: someone at the bot's host (the ``opsroom`` CLI), acting as named roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from bot.runtime.policy import Principal


@dataclass(frozen=True)
class Person:
    """A chat user. ``principal.user_id`` is the immutable id."""

    principal: Principal

    @property
    def trigger(self) -> str:
        return "chat"

    def describe(self) -> str:
        return f"@{self.principal.username}"


@dataclass(frozen=True)
class Rule:
    """An alert rule acting as a policy role (never as a person)."""

    name: str
    role: str
    alert: str = ""  # the alert's fingerprint
    alert_name: str = ""  # e.g. ServiceDown, for messages

    @property
    def principal(self) -> Principal:
        return Principal(f"rule:{self.name}", f"rule:{self.name}", roles=frozenset({self.role}))

    @property
    def trigger(self) -> str:
        return f"alert:{self.alert}" if self.alert else f"rule:{self.name}"

    def describe(self) -> str:
        alert = self.alert_name or self.alert
        return f"rule {self.name} for alert {alert}" if alert else f"rule {self.name}"


@dataclass(frozen=True)
class Operator:
    """Someone at the bot's host, acting as the roles given on the command line."""

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def principal(self) -> Principal:
        return Principal(f"operator:{self.name}", f"operator:{self.name}", roles=self.roles)

    @property
    def trigger(self) -> str:
        return "cli"

    def describe(self) -> str:
        return f"operator {self.name}"


Caller: TypeAlias = Person | Rule | Operator
