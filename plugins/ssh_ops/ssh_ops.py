"""Hosts, service control, recipes and rolling deploys over SSH: the chat face.

Everything runs through the action runtime (authorization, approvals, jobs, audit); the
commands come from the inventory's allow-listed templates (``bot/inventory.py``) and run
through the SSH connector (``bot/connectors/ssh.py``) via ``bot/operations.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

from errbot import BotPlugin
from pydantic import StringConstraints

from bot.connectors.ssh import SSHConnector
from bot.inventory import Inventory
from bot.operations import SSHOperations, output_tail, summary_table
from bot.plugin import ActionContext, ActionFailed, Arg, Risk, action
from bot.settings import get_settings

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")]
Selector = Annotated[Name, Arg(after="on")]
InEnv = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{0,64}$"), Arg(after="in")]
COMMAND_TIMEOUT = 120.0
LONG_OUTPUT_CHARS = 4000  # more than this is attached as a file, not pasted


def _report(ctx, title: str, results) -> str:
    """The per-host table and output tails; the full output as a file when it is long."""
    full = "\n".join(f"==> {r.host} (exit {r.exit_code})\n{r.stdout}{r.stderr}" for r in results)
    text = summary_table(results)
    if len(full) > LONG_OUTPUT_CHARS and ctx.attach(
        f"{title}.txt", full, f"full output of {title}"
    ):
        return f"{text}\nfull output attached as {title}.txt"
    return f"{text}\n{output_tail(results)}".strip()


def _selector_environment(plugin: SSHOps, values: dict) -> str:
    return plugin.ops.environment_of(values["selector"], values["env"] or None)


def _recipe_environment(plugin: SSHOps, values: dict) -> str:
    plugin.ops.inventory.render_recipe(values["recipe"], values["params"])  # refuse early
    return plugin.ops.environment_of(values["selector"], values["env"] or None)


def _deploy_environment(plugin: SSHOps, values: dict) -> str:
    plugin.ops.inventory.render_deploy(values["app"], values["env"], _deploy_params(values))
    return values["env"]


def _deploy_params(values: dict) -> dict[str, str]:
    return {"version": values["version"], **values.get("params", {})}


def _cancel_event(ctx: ActionContext) -> threading.Event:
    event = threading.Event()
    ctx.on_cancel(event.set)
    return event


class SSHOps(BotPlugin):
    """Hosts, services, recipes and rolling deploys over SSH."""

    def activate(self) -> None:
        settings = get_settings()
        path = settings.opsroom_inventory or Path(self.bot_config.OPSROOM_SAMPLE_INVENTORY)
        connector = SSHConnector(
            max_parallel=settings.opsroom_ssh_max_parallel,
            trust_on_first_use=settings.opsroom_ssh_trust_on_first_use,
        )
        self.ops = SSHOperations(Inventory.load(path), connector)
        super().activate()

    def deactivate(self) -> None:
        self.ops.connector.close()
        super().deactivate()

    # --- reading the inventory -------------------------------------------------------
    @action(risk=Risk.READ)
    def hosts(self, ctx, env: str = ""):
        """List the hosts of the inventory, or of one environment."""
        hosts = self.ops.inventory.hosts(env or None)
        lines = ["| host | environment | address | groups | services |", "|---|---|---|---|---|"]
        for host in hosts:
            lines.append(
                f"| {host.name} | {host.environment} | {host.address}:{host.port} | "
                f"{', '.join(host.groups)} | {', '.join(host.services)} |"
            )
        return "\n".join(lines)

    @action(risk=Risk.READ)
    def services(self, ctx, selector: str = "", env: InEnv = ""):
        """List the services of a host or group (all hosts by default)."""
        found = self.ops.inventory.services(selector or None, env or None)
        return "\n".join(f"- **{host}**: {', '.join(units)}" for host, units in found.items())

    # --- service control -------------------------------------------------------------
    def _service(self, ctx: ActionContext, verb: str, service: str, selector: str, env: str) -> str:
        ctx.progress(f"{verb} {service} on {selector}")
        results = self.ops.service(
            verb, service, selector, env or None, timeout=COMMAND_TIMEOUT, cancel=_cancel_event(ctx)
        )
        text = _report(ctx, f"{verb}-{service}", results)
        # A stopped unit makes `status` exit non-zero: that is an answer, not a failure.
        failed = [r for r in results if r.error or (verb != "status" and not r.ok)]
        if failed:
            raise ActionFailed(f"{verb} {service} failed on some hosts\n{text}")
        return text

    @action("service.status", risk=Risk.READ, target="selector", environment=_selector_environment)
    def service_status(self, ctx, service: Name, selector: Selector, env: InEnv = ""):
        """Show a service's status on a host or group."""
        return self._service(ctx, "status", service, selector, env)

    @action(
        "service.restart", risk=Risk.CHANGE, target="selector", environment=_selector_environment
    )
    def service_restart(self, ctx, service: Name, selector: Selector, env: InEnv = ""):
        """Restart a service on a host or group."""
        return self._service(ctx, "restart", service, selector, env)

    @action("service.start", risk=Risk.CHANGE, target="selector", environment=_selector_environment)
    def service_start(self, ctx, service: Name, selector: Selector, env: InEnv = ""):
        """Start a service on a host or group."""
        return self._service(ctx, "start", service, selector, env)

    @action("service.stop", risk=Risk.CHANGE, target="selector", environment=_selector_environment)
    def service_stop(self, ctx, service: Name, selector: Selector, env: InEnv = ""):
        """Stop a service on a host or group."""
        return self._service(ctx, "stop", service, selector, env)

    # --- recipes and deploys ---------------------------------------------------------
    @action(risk=Risk.CHANGE, target="selector", environment=_recipe_environment)
    def run(
        self,
        ctx,
        recipe: Name,
        selector: Selector,
        env: InEnv = "",
        params: Annotated[dict[str, str], Arg(keywords=True)] = {},  # noqa: B006 - copied
    ):
        """Run an allow-listed recipe on a host or group; there is no arbitrary command."""
        results = self.ops.recipe(
            recipe,
            selector,
            params,
            env or None,
            timeout=COMMAND_TIMEOUT,
            cancel=_cancel_event(ctx),
            progress=ctx.progress,
        )
        text = _report(ctx, recipe, results)
        if not all(result.ok for result in results):
            raise ActionFailed(f"recipe {recipe} failed\n{text}")
        return text

    @action(risk=Risk.CHANGE, target="env", environment=_deploy_environment, timeout=3600)
    def deploy(self, ctx, app: Name, version: Name, env: Annotated[Name, Arg(after="to")]):
        """Rolling deploy of an application version to an environment, batch by batch."""
        report = self.ops.deploy(
            app,
            env,
            _deploy_params({"version": version}),
            cancel=_cancel_event(ctx),
            progress=ctx.progress,
        )
        if not report.ok:
            raise ActionFailed(report.text())
        return report.text()
