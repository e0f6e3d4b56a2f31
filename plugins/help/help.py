"""Errbot's help, plus what it leaves out: the actions the policy does not let you run.

Errbot's ``Help`` hides commands the command filter refuses (``HIDE_RESTRICTED_COMMANDS``),
which is right, but then nobody can tell that more exist. This subclass adds one line saying
how many are hidden and how to find out why. It replaces Errbot's ``Help`` core plugin.
"""

from __future__ import annotations

from typing import Any

import errbot.core_plugins.help as errbot_help  # the module, so only our class is found
from errbot import botcmd

from bot.backends.actions import runtime_for
from bot.runtime.actions import ACTION_ATTRIBUTE


class OpsroomHelp(errbot_help.Help):  # type: ignore[misc]
    """Commands you may run, and how many more the policy keeps from you."""

    # Errbot lists a command under the class that defines it: every command is redefined
    # here so that help lists them under this plugin, which has the description.
    @botcmd(template="about")  # type: ignore[misc]
    def about(self, msg: Any, args: str) -> Any:
        """Return information about this Errbot instance and version."""
        return super().about(msg, args)

    @botcmd  # type: ignore[misc]
    def apropos(self, msg: Any, args: str) -> Any:
        """Return help on commands matching a search term: !apropos <term>."""
        return super().apropos(msg, args)

    @botcmd  # type: ignore[misc]
    def help(self, msg: Any, args: str) -> str:
        """List the commands you may run (``!help <command>`` for one)."""
        text: str = super().help(msg, args)
        if args:
            return text
        hidden = sorted(
            name.replace("_", " ")
            for name, command in self._bot.all_commands.items()
            if getattr(command, ACTION_ATTRIBUTE, None) is not None
            and not self.may_access_command(msg, name)
        )
        if not hidden:
            return text
        runtime = runtime_for(self._bot)
        prefix = runtime.prefix
        why = (
            "no policy is loaded (OPSROOM_POLICY), so every change is denied"
            if not runtime.policy.loaded
            else "the policy grants you none of them"
        )
        return (
            f"{text.rstrip()}\n\n{len(hidden)} more action(s) are hidden because {why}: "
            f"{', '.join(hidden)}. {prefix}whoami shows your roles; "
            f"{prefix}can @you <action> explains one."
        )
