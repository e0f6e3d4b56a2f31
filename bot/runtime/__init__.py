"""The action runtime: what plugin authors import.

from bot.runtime import Arg, Risk, action
"""

from bot.runtime.actions import Arg
from bot.runtime.chat import action
from bot.runtime.jobs import JobContext
from bot.runtime.policy import Risk

__all__ = ["Arg", "JobContext", "Risk", "action"]
