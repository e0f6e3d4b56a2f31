"""SSH operations: the inventory's hosts and allow-listed commands, run over SSH. No chat.

This is the one supported way for any plugin (Opsroom's own ``SSHOps`` included) to use the
inventory and the SSH connector: look up an environment's hosts, and run an allow-listed
command on them with fan-out, cancellation and captured output. Commands come from
allow-listed templates (a recipe of the inventory, or a :func:`command` a plugin declares in
code), are rendered and validated *before* the first connection, and run as argv lists
through :class:`bot.connectors.ssh.SSHConnector` (each word quoted, no shell string)::

    from bot.operations import command, results_outcome, ssh_operations

    DF = command("df", ["df", "-h", "{path}"],
                 params={"path": {"pattern": r"/[A-Za-z0-9/._-]*", "default": "/"}},
                 timeout="30s")

    ops = ssh_operations()                       # NoInventory (a Refusal) when none is set
    plan = ops.prepare_run(DF, "web", "staging", {"path": "/var"})  # refuses bad input
    results = ops.run_plan(plan, cancel=ctx, progress=ctx.progress)
    return results_outcome(f"df on {len(results)} host(s)", results)

``docs/plugin-authoring.md`` ("Using the inventory and SSH from your plugin") walks through
a complete plugin, ``examples/plugins/disk_usage/``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from bot.connectors.ssh import CommandResult, SSHConnector, SSHTarget
from bot.errors import ConfigurationError, Refusal
from bot.inventory import DeployPlan, Host, Inventory, Recipe, RecipePlan, ServiceAction
from bot.inventory.model import undeclared
from bot.outcomes import Block, Code, Outcome, Table
from bot.settings import get_settings
from bot.yamlconfig import format_key, validate

__all__ = [
    "SERVICE_TIMEOUT",
    "Cancellable",
    "Command",
    "CommandResult",
    "DeployReport",
    "NoInventory",
    "RecipePlan",
    "SSHOperations",
    "ServicePlan",
    "command",
    "full_output",
    "output_blocks",
    "results_outcome",
    "results_table",
    "ssh_operations",
]

SERVICE_TIMEOUT = 120.0  # longest a service action may run on one host
TAIL_LINES = 20
Progress = Callable[[str], None]


class NoInventory(Refusal):
    """No inventory is configured (on Mattermost, ``OPSROOM_INVENTORY`` is unset)."""

    def __init__(self) -> None:
        super().__init__(
            "no inventory is configured: set OPSROOM_INVENTORY to a YAML file of your hosts "
            "(see docs/inventory.md and examples/inventory.yaml)"
        )


class Cancellable(Protocol):
    """Anything that calls back once on cancellation: an action's ``ctx`` is one."""

    def on_cancel(self, callback: Callable[[], Any]) -> object: ...


Cancel: TypeAlias = threading.Event | Cancellable | None


def _cancel_event(cancel: Cancel) -> threading.Event:
    if isinstance(cancel, threading.Event):
        return cancel
    event = threading.Event()
    if cancel is not None:
        cancel.on_cancel(event.set)
    return event


def _no_progress(text: str) -> None:
    """Progress goes nowhere."""


# --- commands a plugin declares -----------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """An allow-listed command declared in a plugin's code; make one with :func:`command`."""

    name: str
    recipe: Recipe


def command(
    name: str,
    argv: Sequence[str],
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    timeout: str | float = "60s",
    description: str = "",
) -> Command:
    """Declare an allow-listed command, with the rules of an inventory recipe: ``argv`` is a
    list of words (never a shell string), the first one literal, each ``{param}`` filling
    one word; every parameter has a ``pattern`` or ``choices`` (and optionally a
    ``default`` and a ``description``), so a chat value is checked like an inventory's.
    A bad declaration raises :class:`bot.errors.ConfigurationError` (at import time)."""
    source = f"command {name}"
    raw = {
        "description": description,
        "params": {key: dict(spec) for key, spec in (params or {}).items()},
        "steps": [argv if isinstance(argv, str) else list(argv)],  # a string is refused
        "timeout": timeout,
    }
    recipe = validate(Recipe, raw, source, ConfigurationError)
    problems = undeclared(recipe.steps, recipe.params, ("argv",))
    if problems:
        raise ConfigurationError(
            "\n".join(f"{source}: {format_key(loc[:1] + loc[2:])}: {m}" for loc, m in problems)
        )
    return Command(name, recipe)


# --- plans and results --------------------------------------------------------------------------
@dataclass(frozen=True)
class ServicePlan:
    """``status|restart|start|stop`` of a service on hosts: one argv per host."""

    action: ServiceAction
    service: str
    commands: list[tuple[Host, list[str]]]


def _result_word(result: CommandResult) -> str:
    if result.ok:
        return "ok"
    if result.error:
        return result.error
    if result.timed_out:
        return "timed out"
    if result.cancelled:
        return "cancelled"
    return "failed"


def results_table(results: Sequence[CommandResult], title: str = "") -> Table:
    """One row per host: host, result, exit code, time."""
    return Table(
        ("host", "result", "exit", "time"),
        [(r.host, _result_word(r), r.exit_code, f"{r.duration:.1f}s") for r in results],
        title=title,
    )


def output_blocks(results: Sequence[CommandResult], lines: int = TAIL_LINES) -> list[Code]:
    """The last ``lines`` lines of each host's output, one block per host that printed."""
    blocks = []
    for result in results:
        text = (result.stdout + result.stderr).strip()
        if text:
            tail = "\n".join(text.splitlines()[-lines:])
            note = " (truncated)" if result.truncated else ""
            blocks.append(Code(tail, title=f"{result.host}{note}"))
    return blocks


def full_output(results: Sequence[CommandResult]) -> str:
    """Every host's whole captured output, for a file."""
    return "\n".join(f"==> {r.host} (exit {r.exit_code})\n{r.stdout}{r.stderr}" for r in results)


def results_outcome(
    summary: str, results: Sequence[CommandResult], *, tails: bool = True
) -> Outcome:
    """The summary, the per-host table and (with ``tails``) the output tails."""
    blocks: list[Block] = [results_table(results)]
    if tails:
        blocks += output_blocks(results)
    return Outcome(summary, *blocks)


@dataclass
class DeployReport:
    """How a rolling deploy went: batches completed, the failed hosts and the rollback."""

    plan: DeployPlan
    completed_batches: int = 0
    failed: list[CommandResult] = field(default_factory=list)
    rolled_back: list[CommandResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and self.completed_batches == len(self.plan.batches)

    def outcome(self) -> Outcome:
        total = len(self.plan.batches)
        where = f"{self.plan.app} {self.plan.params.get('version', '')} to {self.plan.environment}"
        if self.ok:
            return Outcome(f"deployed {where}: {total}/{total} batches")
        blocks: list[Block] = [results_table(self.failed, title="failed")]
        if self.rolled_back:
            blocks.append(results_table(self.rolled_back, title="rollback"))
        blocks += output_blocks(self.failed)
        return Outcome(
            f"deploy of {where} stopped in batch {self.completed_batches + 1}/{total}; "
            "later batches untouched",
            *blocks,
        )


def target_of(host: Host) -> SSHTarget:
    """The connector's view of an inventory host."""
    return SSHTarget(
        name=host.name,
        address=host.address,
        user=host.user,
        known_hosts=host.known_hosts,
        port=host.port,
        key_file=host.key_file,
        use_agent=host.use_agent,
        connect_timeout=host.connect_timeout.total_seconds(),
    )


# --- the operations -----------------------------------------------------------------------------
class SSHOperations:
    """The inventory's hosts and commands, run over one SSH connector. Thread-safe.

    ``prepare_*`` methods validate a request against the inventory and return a plan
    (raising :class:`bot.errors.Refusal` subclasses; call them in an action's ``check=``);
    the other methods run plans and return one :class:`CommandResult` per host, in host
    order. Hosts run in parallel, at most the connector's ``max_parallel`` at once
    (``OPSROOM_SSH_MAX_PARALLEL``)."""

    def __init__(self, inventory: Inventory, connector: SSHConnector, *, sample: bool = False):
        self.inventory = inventory
        self.connector = connector
        self.sample = sample  # the sample inventory (terminal mode without OPSROOM_INVENTORY)

    # --- looking up ------------------------------------------------------------------------
    def hosts(self, env: str | None = None) -> list[Host]:
        """Every host, or those of environment ``env`` (refused if unknown)."""
        return self.inventory.hosts(env)

    def resolve(self, selector: str, env: str | None = None) -> list[Host]:
        """The hosts a host, group or environment name stands for (within ``env``)."""
        return self.inventory.resolve(selector, env)

    def environment_of(self, selector: str, env: str | None = None) -> str:
        """The one environment a selector lies in: what the policy decides on."""
        return self.resolve(selector, env)[0].environment

    # --- running ---------------------------------------------------------------------------
    def run_each(
        self,
        commands: Sequence[tuple[Host, Sequence[str]]],
        *,
        timeout: float,
        cancel: Cancel = None,
    ) -> list[CommandResult]:
        """Run one argv per host in parallel (one bounded pool); results in host order,
        connection failures as results with ``error`` set."""
        return self.connector.run_each(
            [(target_of(host), argv) for host, argv in commands],
            timeout=timeout,
            cancel=_cancel_event(cancel),
        )

    def prepare_service(
        self, action: ServiceAction, service: str, selector: str, env: str | None = None
    ) -> ServicePlan:
        """Refuses a unit that any of the hosts does not list."""
        hosts = self.resolve(selector, env)
        commands = [(h, self.inventory.service_command(h, action, service)) for h in hosts]
        return ServicePlan(action, service, commands)

    def service(
        self,
        action: ServiceAction,
        service: str,
        selector: str,
        env: str | None = None,
        *,
        cancel: Cancel = None,
    ) -> list[CommandResult]:
        plan = self.prepare_service(action, service, selector, env)
        return self.run_each(plan.commands, timeout=SERVICE_TIMEOUT, cancel=cancel)

    def prepare_run(
        self,
        command: str | Command,
        selector: str,
        env: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> RecipePlan:
        """An inventory recipe (by name) or a plugin's :class:`Command` on the hosts of
        ``selector``, its parameters validated."""
        if isinstance(command, Command):
            return self.inventory.plan_recipe(
                command.recipe, selector, env, params, name=command.name
            )
        return self.inventory.plan_recipe(command, selector, env, params)

    def run(
        self,
        command: str | Command,
        selector: str,
        env: str | None = None,
        params: Mapping[str, str] | None = None,
        *,
        cancel: Cancel = None,
        progress: Progress = _no_progress,
    ) -> list[CommandResult]:
        """:meth:`prepare_run`, then :meth:`run_plan`."""
        plan = self.prepare_run(command, selector, env, params)
        return self.run_plan(plan, cancel=cancel, progress=progress)

    def run_plan(
        self, plan: RecipePlan, *, cancel: Cancel = None, progress: Progress = _no_progress
    ) -> list[CommandResult]:
        """Each step on every host, in order, each at most the recipe's ``timeout`` per
        host; stops after the first step that fails anywhere (later steps do not run).
        The results are those of the last step that ran."""
        event = _cancel_event(cancel)
        results: list[CommandResult] = []
        for number, argv in enumerate(plan.steps, 1):
            if len(plan.steps) > 1:
                progress(f"step {number}/{len(plan.steps)} on {len(plan.hosts)} host(s)")
            results = self.run_each(
                [(host, argv) for host in plan.hosts],
                timeout=plan.timeout.total_seconds(),
                cancel=event,
            )
            if not all(result.ok for result in results):
                break
        return results

    def plan_deploy(self, app: str, env: str, params: Mapping[str, str]) -> DeployPlan:
        return self.inventory.render_deploy(app, env, params)

    def deploy(
        self,
        app: str,
        env: str,
        params: Mapping[str, str],
        *,
        cancel: Cancel = None,
        progress: Progress = _no_progress,
    ) -> DeployReport:
        """Rolling deploy: batch by batch, steps then health check on every host of a batch;
        at the first failure stop, leave later batches untouched, run the rollback on the
        batch that failed. A cancelled deploy stops where it is, without rollback."""
        plan = self.plan_deploy(app, env, params)
        event = _cancel_event(cancel)
        report = DeployReport(plan)
        total_hosts = sum(len(batch) for batch in plan.batches)
        done = 0
        step_timeout = plan.timeout.total_seconds()
        for number, batch in enumerate(plan.batches, 1):
            progress(f"batch {number}/{len(plan.batches)}: {done}/{total_hosts} hosts done")
            failed = self._run_batch(batch, plan, step_timeout, event)
            if failed:
                report.failed = failed
                if event.is_set():
                    return report  # cancelled by a person: they decide what happens next
                if plan.rollback:
                    progress(f"batch {number} failed; rolling back")
                    for argv in plan.rollback:
                        report.rolled_back = self.run_each(
                            [(host, argv) for host in batch], timeout=step_timeout
                        )
                return report
            done += len(batch)
            report.completed_batches = number
            progress(f"batch {number}/{len(plan.batches)}: {done}/{total_hosts} hosts done")
        return report

    def _run_batch(
        self, batch: list[Host], plan: DeployPlan, timeout: float, cancel: threading.Event
    ) -> list[CommandResult]:
        """The failed results of one batch (empty when every host is deployed and healthy)."""
        for argv in plan.steps:
            results = self.run_each(
                [(host, argv) for host in batch], timeout=timeout, cancel=cancel
            )
            failed = [result for result in results if not result.ok]
            if failed:
                return failed
        check = plan.health_check
        pending = list(batch)
        for attempt in range(check.attempts):
            results = self.run_each(
                [(host, check.argv) for host in pending],
                timeout=check.timeout.total_seconds(),
                cancel=cancel,
            )
            unhealthy = {r.host for r in results if not r.ok}
            pending = [host for host in pending if host.name in unhealthy]
            if not pending:
                return []
            if attempt + 1 < check.attempts and cancel.wait(check.interval.total_seconds()):
                break
        return [r for r in results if r.host in {h.name for h in pending}]

    def close(self) -> None:
        """Close the kept SSH connections (they are opened again when needed)."""
        self.connector.close()


# --- the process-wide instance ------------------------------------------------------------------
_lock = threading.Lock()
_current: tuple[tuple[Path, bool, int, bool], SSHOperations] | None = None


def ssh_operations() -> SSHOperations:
    """The process's :class:`SSHOperations`, built on first use from the settings: the
    inventory in effect (``OPSROOM_INVENTORY``; the sample on the terminal backend only),
    ``OPSROOM_SSH_MAX_PARALLEL`` and ``OPSROOM_SSH_TRUST_ON_FIRST_USE``. Built again when
    those settings change. Raises :class:`NoInventory` (a Refusal, fit for chat) when no
    inventory is configured."""
    global _current
    settings = get_settings()
    path, sample = settings.inventory_in_effect()
    if path is None:
        raise NoInventory()
    key = (
        path.resolve(),
        sample,
        settings.opsroom_ssh_max_parallel,
        settings.opsroom_ssh_trust_on_first_use,
    )
    with _lock:
        previous = _current
        if previous is not None and previous[0] == key:
            return previous[1]
        ops = SSHOperations(
            Inventory.load(path),
            SSHConnector(max_parallel=key[2], trust_on_first_use=key[3]),
            sample=sample,
        )
        _current = (key, ops)
    if previous is not None:
        previous[1].close()
    return ops
