"""Hosts, service control, recipes and rolling deploys over SSH: the chat face.

Everything runs through the action runtime (authorization, approvals, jobs, audit). Every
action checks its arguments against the inventory in its ``check=`` hook, so a bad name or
value is refused before any job exists; the work goes through :func:`bot.operations.ssh_operations`,
the same API any plugin uses. Results are :mod:`bot.outcomes` data, rendered at the edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from errbot import BotPlugin

from bot.connectors.ssh import CommandResult
from bot.inventory import Host, ServiceAction
from bot.operations import (
    full_output,
    results_outcome,
    results_table,
    ssh_operations,
)
from bot.outcomes import Outcome, Table, Text
from bot.plugin import ActionContext, ActionFailed, Arg, Risk, action

# Values are checked by the inventory (its names, units and parameter patterns), not here.
Selector = Annotated[str, Arg(after="on")]
# None: not given (no narrowing); an explicit empty environment is refused by the inventory.
InEnv = Annotated[str | None, Arg(after="in")]
LONG_OUTPUT_CHARS = 4000  # more than this is attached as a file, not pasted
SAMPLE_NOTE = (
    "This is the sample inventory (fake example.com hosts): set OPSROOM_INVENTORY to your "
    "own file, see docs/inventory.md."
)


def _failed(outcome: Outcome) -> ActionFailed:
    """A failure whose table and output tails are shown below its summary."""
    return ActionFailed(outcome.summary or "failed", details=outcome)


def _report(ctx: ActionContext, summary: str, title: str, results: list[CommandResult]) -> Outcome:
    """The per-host table and output tails; the whole output as a file when it is long."""
    full = full_output(results)
    if len(full) > LONG_OUTPUT_CHARS and ctx.attach(f"{title}.txt", full, f"output of {title}"):
        return Outcome(
            summary, results_table(results), Text(f"full output attached as {title}.txt")
        )
    return results_outcome(summary, results)


def _ok_count(results: list[CommandResult]) -> str:
    return f"{sum(r.ok for r in results)}/{len(results)} host(s) ok"


# --- the checks (before policy and before any job) and the environment for the policy ----------
def _check_hosts(plugin: SSHOps, values: Mapping[str, Any]) -> None:
    ssh_operations().hosts(values["env"])


def _check_services(plugin: SSHOps, values: Mapping[str, Any]) -> None:
    _services_hosts(values["selector"], values["env"])


def _services_hosts(selector: str | None, env: str | None) -> list[Host]:
    ops = ssh_operations()
    return ops.resolve(selector, env) if selector is not None else ops.hosts(env)


def _check_inventory(plugin: SSHOps, values: Mapping[str, Any]) -> None:
    ssh_operations()  # refuses when no inventory is configured


def _service_check(verb: ServiceAction) -> Callable[[SSHOps, Mapping[str, Any]], None]:
    def check(plugin: SSHOps, values: Mapping[str, Any]) -> None:
        ssh_operations().prepare_service(verb, values["service"], values["selector"], values["env"])

    return check


def _check_run(plugin: SSHOps, values: Mapping[str, Any]) -> None:
    ssh_operations().prepare_run(
        values["recipe"], values["selector"], values["env"], values["params"]
    )


def _check_deploy(plugin: SSHOps, values: Mapping[str, Any]) -> None:
    ssh_operations().plan_deploy(values["app"], values["env"], {"version": values["version"]})


def _selector_environment(plugin: SSHOps, values: Mapping[str, Any]) -> str:
    return ssh_operations().environment_of(values["selector"], values["env"])


class SSHOps(BotPlugin):
    """Hosts, services, recipes and rolling deploys over SSH."""

    # --- reading the inventory -------------------------------------------------------
    @action(risk=Risk.READ, check=_check_hosts)
    def hosts(self, ctx: ActionContext, env: str | None = None) -> Outcome:
        """List the hosts of the inventory, or of one environment."""
        ops = ssh_operations()
        inventory = ops.inventory
        environments = [env] if env is not None else inventory.environments()
        tables = []
        for name in environments:
            description = inventory.environment_description(name)
            tables.append(
                Table(
                    ("host", "address", "groups", "services"),
                    [
                        (
                            h.name,
                            f"{h.address}:{h.port}",
                            ", ".join(h.groups),
                            ", ".join(h.services),
                        )
                        for h in inventory.hosts(name)
                    ],
                    title=f"{name}: {description}" if description else name,
                )
            )
        note = [Text(SAMPLE_NOTE)] if ops.sample else []
        count = sum(len(table.rows) for table in tables)
        return Outcome(f"{count} host(s)", *tables, *note)

    @action(risk=Risk.READ, check=_check_services)
    def services(self, ctx: ActionContext, selector: str | None = None, env: InEnv = None) -> Table:
        """List the services of a host or group (all hosts by default)."""
        hosts = _services_hosts(selector, env)
        return Table(
            ("host", "environment", "services"),
            [(h.name, h.environment, ", ".join(h.services)) for h in hosts],
        )

    @action(risk=Risk.READ, check=_check_inventory)
    def recipes(self, ctx: ActionContext) -> Outcome:
        """List the recipes (!run) and deploys (!deploy), with their parameters."""
        inventory = ssh_operations().inventory
        recipes = Table(
            ("recipe", "parameters", "timeout", "description"),
            [
                (
                    name,
                    "\n".join(spec.usage(param) for param, spec in recipe.params.items()),
                    f"{recipe.timeout.total_seconds():g}s per step",
                    recipe.description,
                )
                for name, recipe in inventory.recipes.items()
            ],
            title="recipes: !run <recipe> on <host|group> [name=value ...]",
        )
        deploys = Table(
            ("app", "environments", "parameters", "description"),
            [
                (
                    app,
                    ", ".join(deploy.hosts),
                    "\n".join(spec.usage(param) for param, spec in deploy.params.items()),
                    deploy.description,
                )
                for app, deploy in inventory.deploys.items()
            ],
            title="deploys: !deploy <app> <version> to <env>",
        )
        return Outcome("", recipes, deploys)

    # --- service control -------------------------------------------------------------
    def _service(
        self,
        ctx: ActionContext,
        verb: ServiceAction,
        service: str,
        selector: str,
        env: str | None,
    ) -> Outcome:
        ctx.progress(f"{verb} {service} on {selector}")
        results = ssh_operations().service(verb, service, selector, env, cancel=ctx)
        outcome = _report(
            ctx, f"{verb} {service}: {_ok_count(results)}", f"{verb}-{service}", results
        )
        # A stopped unit makes `status` exit non-zero: that is an answer, not a failure.
        if any(r.error or (verb != "status" and not r.ok) for r in results):
            raise _failed(outcome)
        return outcome

    @action(
        "service.status",
        risk=Risk.READ,
        target="selector",
        environment=_selector_environment,
        check=_service_check("status"),
    )
    def service_status(
        self, ctx: ActionContext, service: str, selector: Selector, env: InEnv = None
    ) -> Outcome:
        """Show a service's status on a host or group."""
        return self._service(ctx, "status", service, selector, env)

    @action(
        "service.restart",
        risk=Risk.CHANGE,
        target="selector",
        environment=_selector_environment,
        check=_service_check("restart"),
    )
    def service_restart(
        self, ctx: ActionContext, service: str, selector: Selector, env: InEnv = None
    ) -> Outcome:
        """Restart a service on a host or group."""
        return self._service(ctx, "restart", service, selector, env)

    @action(
        "service.start",
        risk=Risk.CHANGE,
        target="selector",
        environment=_selector_environment,
        check=_service_check("start"),
    )
    def service_start(
        self, ctx: ActionContext, service: str, selector: Selector, env: InEnv = None
    ) -> Outcome:
        """Start a service on a host or group."""
        return self._service(ctx, "start", service, selector, env)

    @action(
        "service.stop",
        risk=Risk.CHANGE,
        target="selector",
        environment=_selector_environment,
        check=_service_check("stop"),
    )
    def service_stop(
        self, ctx: ActionContext, service: str, selector: Selector, env: InEnv = None
    ) -> Outcome:
        """Stop a service on a host or group."""
        return self._service(ctx, "stop", service, selector, env)

    # --- recipes and deploys ---------------------------------------------------------
    @action(
        risk=Risk.CHANGE,
        target="selector",
        environment=_selector_environment,
        check=_check_run,
        timeout=3600,
    )
    def run(
        self,
        ctx: ActionContext,
        recipe: str,
        selector: Selector,
        env: InEnv = None,
        params: Annotated[dict[str, str], Arg(keywords=True)] = {},  # noqa: B006 - copied
    ) -> Outcome:
        """Run an allow-listed recipe on a host or group; there is no arbitrary command."""
        ops = ssh_operations()
        plan = ops.prepare_run(recipe, selector, env, params)
        results = ops.run_plan(plan, cancel=ctx, progress=ctx.progress)
        outcome = _report(ctx, f"{recipe}: {_ok_count(results)}", recipe, results)
        if not all(result.ok for result in results):
            raise _failed(outcome)
        return outcome

    @action(
        risk=Risk.CHANGE,
        target="env",
        check=_check_deploy,
        timeout=3600,
    )
    def deploy(
        self, ctx: ActionContext, app: str, version: str, env: Annotated[str, Arg(after="to")]
    ) -> Outcome:
        """Rolling deploy of an application version to an environment, batch by batch."""
        report = ssh_operations().deploy(
            app, env, {"version": version}, cancel=ctx, progress=ctx.progress
        )
        if not report.ok:
            raise _failed(report.outcome())
        return report.outcome()
