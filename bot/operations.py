"""Service control, recipes and rolling deploys over SSH: inventory + connector, no chat.

Everything here works on validated inventory objects: the commands are rendered from
allow-listed templates (``bot.inventory``) before the first connection, and run as argv
lists through :class:`bot.connectors.ssh.SSHConnector` (each word quoted, no shell string).
Progress and cancellation come from the job context the runtime gives the action.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bot.connectors.ssh import CommandResult, SSHConnector, SSHTarget
from bot.inventory import DeployPlan, Host, Inventory, ServiceAction

DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()
TAIL_LINES = 20
Progress = Callable[[str], None]


def target_of(host: Host) -> SSHTarget:
    """The connector's view of an inventory host."""
    return SSHTarget(
        name=host.name,
        address=host.address,
        user=host.user or "root",
        known_hosts=host.known_hosts or DEFAULT_KNOWN_HOSTS,
        port=host.port,
        key_file=host.key_file,
        use_agent=host.use_agent,
        connect_timeout=host.connect_timeout.total_seconds(),
    )


def summary_table(results: Sequence[CommandResult]) -> str:
    """Per-host Markdown table: host, result, exit code, time."""
    lines = ["| host | result | exit | time |", "|---|---|---|---|"]
    for result in results:
        if result.ok:
            outcome = "ok"
        elif result.error:
            outcome = result.error.replace("|", "/")
        elif result.timed_out:
            outcome = "timed out"
        elif result.cancelled:
            outcome = "cancelled"
        else:
            outcome = "failed"
        code = "" if result.exit_code is None else str(result.exit_code)
        lines.append(f"| {result.host} | {outcome} | {code} | {result.duration:.1f}s |")
    return "\n".join(lines)


def output_tail(results: Sequence[CommandResult], lines: int = TAIL_LINES) -> str:
    """The last lines of each host's output, for the channel."""
    parts = []
    for result in results:
        text = (result.stdout + result.stderr).strip()
        if not text:
            continue
        tail = "\n".join(text.splitlines()[-lines:])
        note = " (truncated)" if result.truncated else ""
        parts.append(f"{result.host}{note}:\n```\n{tail}\n```")
    return "\n".join(parts)


@dataclass
class DeployReport:
    plan: DeployPlan
    completed_batches: int = 0
    failed: list[CommandResult] = field(default_factory=list)
    rolled_back: list[CommandResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and self.completed_batches == len(self.plan.batches)

    def text(self) -> str:
        total = len(self.plan.batches)
        where = f"{self.plan.app} {self.plan.params.get('version', '')} to {self.plan.environment}"
        if self.ok:
            return f"deployed {where}: {total}/{total} batches"
        lines = [
            f"deploy of {where} stopped in batch {self.completed_batches + 1}/{total}; "
            f"later batches untouched",
            summary_table(self.failed),
        ]
        if self.rolled_back:
            lines += ["rollback:", summary_table(self.rolled_back)]
        return "\n".join(lines)


class SSHOperations:
    """What the SSH plugin does, chat-free."""

    def __init__(self, inventory: Inventory, connector: SSHConnector) -> None:
        self.inventory = inventory
        self.connector = connector

    def environment_of(self, selector: str, env: str | None = None) -> str:
        """The one environment a host or group selector lies in (for the policy)."""
        return self.inventory.resolve(selector, env)[0].environment

    def _fan_out(
        self,
        commands: Sequence[tuple[Host, list[str]]],
        timeout: float,
        cancel: threading.Event | None,
    ) -> list[CommandResult]:
        """Run one argv per host (they may differ, e.g. with sudo), in parallel bounded by
        the connector's ``max_parallel``; results in host order, failures as results."""
        if not commands:
            return []

        def one(command: tuple[Host, list[str]]) -> CommandResult:
            host, argv = command
            return self.connector.run_many([target_of(host)], argv, timeout=timeout, cancel=cancel)[
                0
            ]

        workers = max(1, min(self.connector.max_parallel, len(commands)))
        with ThreadPoolExecutor(workers, thread_name_prefix="ssh-ops") as pool:
            return list(pool.map(one, commands))

    def service(
        self,
        action: ServiceAction,
        service: str,
        selector: str,
        env: str | None = None,
        *,
        timeout: float,
        cancel: threading.Event | None = None,
    ) -> list[CommandResult]:
        hosts = self.inventory.resolve(selector, env)
        commands = [(host, self.inventory.service_command(host, action, service)) for host in hosts]
        return self._fan_out(commands, timeout, cancel)

    def recipe(
        self,
        name: str,
        selector: str,
        params: dict[str, str],
        env: str | None = None,
        *,
        timeout: float,
        cancel: threading.Event | None = None,
        progress: Progress = lambda text: None,
    ) -> list[CommandResult]:
        """Run a recipe's steps in order on every selected host; stop at the first step
        that fails anywhere (later steps do not run)."""
        steps = self.inventory.render_recipe(name, params)
        hosts = self.inventory.resolve(selector, env)
        results: list[CommandResult] = []
        for number, argv in enumerate(steps, 1):
            progress(f"step {number}/{len(steps)} on {len(hosts)} host(s)")
            results = self._fan_out([(host, argv) for host in hosts], timeout, cancel)
            if not all(result.ok for result in results):
                break
        return results

    def deploy(
        self,
        app: str,
        env: str,
        params: dict[str, str],
        *,
        cancel: threading.Event | None = None,
        progress: Progress = lambda text: None,
    ) -> DeployReport:
        """Rolling deploy: batch by batch, steps then health check on every host of a batch;
        at the first failure stop, leave later batches untouched, run the rollback on the
        batch that failed. A cancelled deploy stops where it is, without rollback."""
        plan = self.inventory.render_deploy(app, env, params)
        report = DeployReport(plan)
        total_hosts = sum(len(batch) for batch in plan.batches)
        done = 0
        step_timeout = plan.timeout.total_seconds()
        for number, batch in enumerate(plan.batches, 1):
            progress(f"batch {number}/{len(plan.batches)}: {done}/{total_hosts} hosts done")
            failed = self._run_batch(batch, plan, step_timeout, cancel)
            if failed:
                report.failed = failed
                if cancel is not None and cancel.is_set():
                    return report  # cancelled by a person: they decide what happens next
                if plan.rollback:
                    progress(f"batch {number} failed; rolling back")
                    for argv in plan.rollback:
                        report.rolled_back = self._fan_out(
                            [(host, argv) for host in batch], step_timeout, None
                        )
                return report
            done += len(batch)
            report.completed_batches = number
            progress(f"batch {number}/{len(plan.batches)}: {done}/{total_hosts} hosts done")
        return report

    def _run_batch(
        self,
        batch: list[Host],
        plan: DeployPlan,
        timeout: float,
        cancel: threading.Event | None,
    ) -> list[CommandResult]:
        """The failed results of one batch (empty when every host is deployed and healthy)."""
        for argv in plan.steps:
            results = self._fan_out([(host, argv) for host in batch], timeout, cancel)
            failed = [result for result in results if not result.ok]
            if failed:
                return failed
        check = plan.health_check
        pending = list(batch)
        for attempt in range(check.attempts):
            results = self._fan_out(
                [(host, check.argv) for host in pending], check.timeout.total_seconds(), cancel
            )
            unhealthy = {r.host for r in results if not r.ok}
            pending = [host for host in pending if host.name in unhealthy]
            if not pending:
                return []
            if attempt + 1 < check.attempts:
                pause = check.interval.total_seconds()
                if cancel is not None and cancel.wait(pause):
                    break
                if cancel is None:
                    time.sleep(pause)
        return [r for r in results if r.host in {h.name for h in pending}]
