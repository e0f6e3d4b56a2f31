"""Disk usage of inventory hosts over SSH: a complete third-party Opsroom action.

``!disk usage <host|group> [in <env>] [path=/var]`` runs ``df -h <path>`` on every host the
name stands for, in parallel, and answers with a per-host table and each host's output. It
uses only the supported API, :mod:`bot.plugin`:

- :func:`~bot.plugin.command` declares the one command this plugin may run, as argv
  words with a validated parameter (no shell string; a chat value fills one word);
- :func:`~bot.plugin.ssh_operations` is the process's inventory and SSH connector
  (it refuses, with how to configure one, when no inventory is set);
- ``prepare_run`` in ``check=`` refuses an unknown host or a bad path before any job exists;
  ``run_plan`` fans out, is cancelled with the job (``cancel=ctx``), and captures output.
"""

from collections.abc import Mapping
from typing import Annotated, Any

from errbot import BotPlugin

from bot.plugin import (
    ActionContext,
    ActionFailed,
    Arg,
    Outcome,
    RecipePlan,
    Risk,
    action,
    command,
    results_outcome,
    ssh_operations,
)

DF = command(
    "df",
    ["df", "-h", "{path}"],
    params={
        "path": {
            "pattern": r"/[A-Za-z0-9/._-]{0,100}",
            "default": "/",
            "description": "a mount point or directory",
        }
    },
    timeout="30s",
    description="Free space on the file system holding a path.",
)


def _plan(values: Mapping[str, Any]) -> RecipePlan:
    return ssh_operations().prepare_run(DF, values["host"], values["env"], {"path": values["path"]})


def _check(plugin: "DiskUsage", values: Mapping[str, Any]) -> None:
    _plan(values)  # an unknown host or a bad path is refused here, before any job


def _environment(plugin: "DiskUsage", values: Mapping[str, Any]) -> str:
    return ssh_operations().environment_of(values["host"], values["env"])


class DiskUsage(BotPlugin):
    """Disk usage of the inventory's hosts."""

    @action(
        "disk.usage",
        risk=Risk.READ,
        target="host",
        environment=_environment,
        check=_check,
        timeout=120,
    )
    def usage(
        self,
        ctx: ActionContext,
        host: str,
        env: Annotated[str | None, Arg(after="in")] = None,
        path: str = "/",
    ) -> Outcome:
        """Free space on a host or group (df -h), for a path (default /)."""
        plan = _plan({"host": host, "env": env, "path": path})
        ctx.progress(f"df -h {path} on {len(plan.hosts)} host(s)")
        results = ssh_operations().run_plan(plan, cancel=ctx)  # !cancel kills df on the hosts
        ctx.check()  # cancelled: end as cancelled, not with the partial results
        answered = sum(result.exit_code is not None for result in results)
        if not answered:
            raise ActionFailed(f"no host answered: {results[0].error or 'df did not finish'}")
        return results_outcome(f"disk usage of {path}: {answered}/{len(results)} host(s)", results)
