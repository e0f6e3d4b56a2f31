"""The action runtime: what plugin authors import.

from bot.runtime import Arg, Risk, action
"""

from bot.runtime.actions import Arg, spec_of
from bot.runtime.chat import action, close_runtime, runtime_for
from bot.runtime.jobs import ActionFailed, JobContext
from bot.runtime.policy import Principal, Risk
from bot.runtime.runtime import ActionContext, Caller

__all__ = [
    "ActionContext",
    "ActionFailed",
    "Arg",
    "Caller",
    "JobContext",
    "Principal",
    "Risk",
    "action",
    "close_runtime",
    "runtime_for",
    "spec_of",
]
