"""The plugin author's API: everything a third-party Opsroom plugin imports, and nothing else.

    from bot.plugin import ActionContext, Arg, Risk, Table, action

    class Cache(BotPlugin):
        @action("cache.flush", risk=Risk.CHANGE, target="env")
        def flush(self, ctx: ActionContext, name: str, env: Annotated[str, Arg(after="in")]):
            \"\"\"Flush a cache.\"\"\"
            ...

The inventory and SSH (``ssh_operations()``, ``command()``, ``results_outcome()``) are
described in docs/plugin-authoring.md, "Using the inventory and SSH from your plugin".
See docs/plugin-authoring.md. Names not exported here are internal and may change.
"""

from bot.backends.actions import action
from bot.errors import ActionFailed, InvalidArgument, JobCancelled, Refusal, UnknownTarget
from bot.operations import RecipePlan, command, results_outcome, results_table, ssh_operations
from bot.outcomes import Code, Outcome, Table, Text
from bot.runtime.actions import Arg
from bot.runtime.callers import Caller, Operator, Person, Rule
from bot.runtime.policy import Risk
from bot.runtime.runtime import ActionContext

__all__ = [
    "ActionContext",
    "ActionFailed",
    "Arg",
    "Caller",
    "Code",
    "InvalidArgument",
    "JobCancelled",
    "Operator",
    "Outcome",
    "Person",
    "RecipePlan",
    "Refusal",
    "Risk",
    "Rule",
    "Table",
    "Text",
    "UnknownTarget",
    "action",
    "command",
    "results_outcome",
    "results_table",
    "ssh_operations",
]
