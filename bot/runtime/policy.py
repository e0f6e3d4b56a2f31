"""Who may run what: roles and grants from a YAML policy file, decided on immutable user ids.

A policy names roles; each role has members (``@username``, a Mattermost user id, or
``group:<name>`` for a Mattermost group) and grants. A grant allows an action (glob, e.g.
``deploy`` or ``service.*``) in some environments (globs), optionally only for some argument
values (``where: {service: [nginx, "api-*"]}``). Read actions are open to the policy's readers;
change and dangerous actions are denied unless a grant allows them. A denial names the roles
that would have allowed the request, so the answer to "why not?" is always concrete.

Example (``examples/policy.yaml`` has a complete one)::

    readers: ["*"]                 # who may run read actions ("*": everyone the bot sees)
    protected_environments: [production]
    approvals: {expire_after: 15m}
    roles:
      deployer:
        members: ["@alice", "group:sre"]
        grants:
          - {action: deploy, environments: [staging]}
      prod-deployer:
        members: ["@carol"]
        grants:
          - {action: deploy, environments: [production]}
      approver:
        members: ["@dave"]
        approves: ["*"]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from bot.durations import parse_duration
from bot.errors import ConfigurationError
from bot.yamlconfig import load_yaml, validate


class Risk(StrEnum):
    """How much an action can change; decides the default rules."""

    READ = "read"
    CHANGE = "change"
    DANGEROUS = "dangerous"


NO_POLICY_HINT = (
    "no policy is loaded, so every change is denied; set OPSROOM_POLICY to a policy "
    "file that grants it (examples/policy.yaml shows one, docs/runtime.md explains it)"
)


class PolicyError(ConfigurationError):
    """The policy file is missing, not YAML, or does not validate; names file and key."""


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


Globs = Annotated[list[str], BeforeValidator(_as_list)]


class Grant(BaseModel):
    """Permission to run ``action`` in ``environments``, for the argument values in ``where``."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1)
    environments: Globs = Field(default_factory=lambda: ["*"])
    where: dict[str, Globs] = Field(default_factory=dict)

    def allows(self, action: str, environment: str, arguments: Mapping[str, Any]) -> bool:
        if not fnmatch.fnmatchcase(action, self.action):
            return False
        if not any(fnmatch.fnmatchcase(environment or "", env) for env in self.environments):
            return False
        for name, patterns in self.where.items():
            value = str(arguments.get(name, ""))
            if not any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns):
                return False
        return True


def _check_members(members: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    for member in members:
        if member in extra or member.startswith(tuple(p for p in extra if p.endswith(":"))):
            continue
        if not (member.startswith(("@", "group:")) or (len(member) == 26 and member.isalnum())):
            allowed = ", ".join(("@username", "group:<name>", "a 26-character user id", *extra))
            raise ValueError(f"{member!r} must be one of: {allowed}")
    return members


class Role(BaseModel):
    model_config = ConfigDict(extra="forbid")

    members: Globs = Field(default_factory=list)
    grants: list[Grant] = Field(default_factory=list)
    approves: Globs = Field(default_factory=list, description="actions this role may approve")

    @field_validator("members")
    @classmethod
    def _member_syntax(cls, members: list[str]) -> list[str]:
        return _check_members(members)


class ApprovalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expire_after: Annotated[timedelta, BeforeValidator(parse_duration)] = timedelta(minutes=15)
    # Environments where every change needs a second person's approval (not only the
    # requester's confirmation), whatever the action's own default: e.g. [production].
    required_in: Globs = Field(default_factory=list)


class PolicyDocument(BaseModel):
    """The YAML file, validated."""

    model_config = ConfigDict(extra="forbid")

    readers: Globs = Field(default_factory=lambda: ["*"])
    protected_environments: Globs = Field(default_factory=lambda: ["production", "prod"])
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    roles: dict[str, Role] = Field(default_factory=dict)

    @field_validator("readers")
    @classmethod
    def _reader_syntax(cls, readers: list[str]) -> list[str]:
        return _check_members(readers, extra=("*", "role:"))


@dataclass(frozen=True)
class Principal:
    """Who asks: the immutable user id, the current username (for messages), their groups,
    and ``roles`` held by declaration (an alert rule acting as a role; never a person)."""

    user_id: str
    username: str
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    roles: tuple[str, ...] = ()  # roles that granted it, or that would have
    missing_roles: tuple[str, ...] = field(default=())


class Policy:
    """Authorization decisions. Members are resolved to user ids once, at load time."""

    def __init__(
        self,
        document: PolicyDocument,
        resolve_user: Callable[[str], str | None] = lambda name: None,
        source: str = "<policy>",
        loaded: bool = True,
    ) -> None:
        self.document = document
        self.source = source
        self.loaded = loaded  # False: no policy file, the built-in default deny
        self._user_ids: dict[str, set[str]] = {}  # role -> user ids
        self._groups: dict[str, set[str]] = {}  # role -> group names
        self.unresolved: list[str] = []  # "@name (where)" that the server did not know
        self._resolve = resolve_user
        for name, role in document.roles.items():
            self._user_ids[name], self._groups[name] = self._split(role.members, f"role {name}")
        readers = [r for r in document.readers if not r.startswith("role:")]
        self._everyone = "*" in readers
        self._reader_ids, self._reader_groups = self._split(
            [r for r in readers if r != "*"], "readers"
        )
        self._reader_roles = {
            r.removeprefix("role:") for r in document.readers if r.startswith("role:")
        }

    def _split(self, members: list[str], where: str) -> tuple[set[str], set[str]]:
        """User ids and group names of a member list; unknown usernames are remembered."""
        ids, groups = set(), set()
        for member in members:
            if member.startswith("group:"):
                groups.add(member.removeprefix("group:"))
            elif member.startswith("@"):
                user_id = self._resolve(member)
                if user_id:
                    ids.add(user_id)
                else:
                    self.unresolved.append(f"{member} ({where})")
            else:
                ids.add(member)
        return ids, groups

    # --- loading ---------------------------------------------------------------------------
    @classmethod
    def none(cls) -> Policy:
        """No policy file: reads are open to everyone, every change is denied."""
        return cls(PolicyDocument(), source="(no OPSROOM_POLICY)", loaded=False)

    @classmethod
    def load(cls, path: Path, resolve_user: Callable[[str], str | None] = lambda n: None) -> Policy:
        """Read and validate a policy file; errors name the file, the key and the problem."""
        return cls.from_mapping(load_yaml(path, PolicyError), resolve_user, source=str(path))

    @classmethod
    def from_mapping(
        cls,
        raw: Any,
        resolve_user: Callable[[str], str | None] = lambda n: None,
        source: str = "<policy>",
    ) -> Policy:
        return cls(validate(PolicyDocument, raw, source, PolicyError), resolve_user, source)

    # --- questions -------------------------------------------------------------------------
    def roles_of(self, who: Principal) -> list[str]:
        return sorted(
            name
            for name in self.document.roles
            if who.user_id in self._user_ids[name]
            or who.groups & self._groups[name]
            or name in who.roles
        )

    def is_reader(self, who: Principal) -> bool:
        if self._everyone or who.user_id in self._reader_ids or who.groups & self._reader_groups:
            return True
        return bool(self._reader_roles & set(self.roles_of(who)))

    def needs_approval(self, environment: str) -> bool:
        """Do changes in ``environment`` need a second person (``approvals.required_in``)?"""
        return any(
            fnmatch.fnmatchcase(environment or "", pattern)
            for pattern in self.document.approvals.required_in
        )

    def is_protected(self, environment: str) -> bool:
        return any(
            fnmatch.fnmatchcase(environment or "", pattern)
            for pattern in self.document.protected_environments
        )

    def _granting_roles(
        self, action: str, environment: str, arguments: Mapping[str, Any]
    ) -> list[str]:
        return sorted(
            name
            for name, role in self.document.roles.items()
            if any(grant.allows(action, environment, arguments) for grant in role.grants)
        )

    def authorize(
        self,
        who: Principal,
        action: str,
        risk: Risk,
        environment: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> Decision:
        """May ``who`` run ``action`` in ``environment`` with these arguments?"""
        arguments = arguments or {}
        mine = self.roles_of(who)
        where = f" in {environment}" if environment else ""
        if risk is Risk.READ:
            if self.is_reader(who):
                return Decision(True, "read actions are open to readers", tuple(mine))
            return Decision(False, f"{action}{where}: you are not among the policy's readers")
        if not self.loaded:
            return Decision(False, f"{action}{where}: {NO_POLICY_HINT}")
        granting = self._granting_roles(action, environment, arguments)
        held = [role for role in granting if role in mine]
        if held:
            return Decision(True, f"granted by role {', '.join(held)}", tuple(held))
        have = ", ".join(mine) or "no role"
        if not granting:
            return Decision(
                False,
                f"{action}{where} is not granted to any role (you have: {have})",
            )
        needed = " or ".join(granting)
        return Decision(
            False,
            f"{action}{where} needs role {needed} (you have: {have})",
            missing_roles=tuple(granting),
        )

    def grants_any(self, who: Principal, action: str) -> bool:
        """Does any of the user's roles grant ``action`` somewhere? (What help shows.)"""
        roles = set(self.roles_of(who))
        return any(
            fnmatch.fnmatchcase(action, grant.action)
            for name, role in self.document.roles.items()
            if name in roles
            for grant in role.grants
        )

    def can_approve(self, who: Principal, action: str) -> bool:
        return any(
            any(fnmatch.fnmatchcase(action, pattern) for pattern in role.approves)
            for name, role in self.document.roles.items()
            if name in self.roles_of(who)
        )

    def approvers(self, action: str) -> list[str]:
        """Roles that may approve ``action`` (for the approval request message)."""
        return sorted(
            name
            for name, role in self.document.roles.items()
            if any(fnmatch.fnmatchcase(action, pattern) for pattern in role.approves)
        )
