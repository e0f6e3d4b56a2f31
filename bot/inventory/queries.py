"""The questions asked of a loaded inventory: which hosts a name stands for, and the argv of
a service action, a recipe or a rolling deploy, validated before any connection.

:meth:`Inventory.load` reads and validates a file; nothing here talks to a host or to chat.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from bot.errors import UnknownTarget
from bot.inventory.model import Deploy, InventoryDocument, Param, Recipe, Word, cross_check
from bot.inventory.validation import (
    NAME,
    NAME_RULE,
    SERVICE_ACTIONS,
    UNIT,
    UNIT_RULE,
    AmbiguousTarget,
    InvalidParameter,
    InventoryError,
    NotAllowed,
    ServiceAction,
    check_value,
    close_matches,
    either,
    hint,
    show_value,
)
from bot.yamlconfig import format_key, load_yaml, validate

T = TypeVar("T")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()


# --- what the bot uses --------------------------------------------------------------------------
@dataclass(frozen=True)
class Host:
    """A host with its effective settings (its own, else the inventory's defaults)."""

    name: str
    environment: str
    address: str
    port: int
    user: str  # the inventory's, else the local user running the bot (as ssh does)
    key_file: Path | None
    use_agent: bool
    known_hosts: Path  # the inventory's, else ~/.ssh/known_hosts
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


@dataclass(frozen=True)
class RecipePlan:
    """A recipe (or a command a plugin declares) ready to run: its steps rendered and
    validated, the hosts resolved. Each step runs on every host, at most ``timeout`` each."""

    name: str
    hosts: list[Host]
    steps: list[list[str]]
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
        problems = cross_check(document)
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
                settings["user"] = settings["user"] or getpass.getuser()
                settings["known_hosts"] = settings["known_hosts"] or DEFAULT_KNOWN_HOSTS
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
        check_value("host", name, pattern=NAME, expected=f"must be a host name ({NAME_RULE})")
        if name not in self._hosts:
            suggestion, close = hint(name, self._hosts)
            raise UnknownTarget(name, f"unknown host {show_value(name)}{suggestion}", close)
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
            pattern=NAME,
            expected=f"must be a host or group name ({NAME_RULE})",
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
        suggestion, close = hint(selector, [*self._groups, *self._hosts, *self._by_env])
        raise UnknownTarget(
            selector, f"unknown host or group {show_value(selector)}{where}{suggestion}", close
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
            pattern=NAME,
            expected=f"must be an environment name ({NAME_RULE})",
        )
        if env not in self._by_env:
            suggestion, close = hint(env, self._by_env)
            raise UnknownTarget(env, f"unknown environment {show_value(env)}{suggestion}", close)
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
        check_value("service", service, pattern=UNIT, expected=f"must be {UNIT_RULE}")
        if service not in record.services:
            close = close_matches(service, record.services)
            raise NotAllowed(
                f"service {show_value(service)} is not managed on {record.name} "
                f"(its services: {', '.join(record.services) or 'none'})"
                + (f"; did you mean {either(close)}?" if close else "")
            )
        sudo = ["sudo", "-n"] if record.sudo else []
        return [*sudo, record.service_manager, action, service]

    def render_recipe(self, name: str, params: Mapping[str, str] | None = None) -> list[list[str]]:
        """The argv of each step of recipe ``name`` with ``params`` validated and filled in."""
        recipe = self._lookup("recipe", name, self.document.recipes)
        return _render(recipe.steps, _bind(f"recipe {name}", recipe.params, params or {}))

    def plan_recipe(
        self,
        recipe: str | Recipe,
        selector: str,
        env: str | None = None,
        params: Mapping[str, str] | None = None,
        *,
        name: str = "",
    ) -> RecipePlan:
        """Recipe ``recipe`` of the inventory (by name), or a :class:`Recipe` a plugin
        declares (``name`` names it in messages), on the hosts ``selector`` stands for."""
        if isinstance(recipe, str):
            name = recipe
            recipe = self._lookup("recipe", recipe, self.document.recipes)
        steps = _render(recipe.steps, _bind(f"recipe {name}", recipe.params, params or {}))
        return RecipePlan(name, self.resolve(selector, env), steps, recipe.timeout)

    def environment_description(self, env: str) -> str:
        """The environment's ``description`` from the file ("" when none)."""
        return self.document.environments[self._environment(env)].description

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
        check_value(kind, name, pattern=NAME, expected=f"must be the name of a configured {kind}")
        if name not in table:
            suggestion, _ = hint(name, table)
            raise NotAllowed(f"no {kind} named {show_value(name)}{suggestion}")
        return table[name]
