"""One error hierarchy for Opsroom.

Every error Opsroom raises on purpose is an :class:`OpsroomError`, and the branch says who
should read it and what happens next:

- :class:`ConfigurationError`: a file or setting is wrong; start-up stops and the message
  names the file, the key and what was expected.
- :class:`Refusal`: a request is refused *before anything ran* (a bad argument, an unknown
  target, a busy target, a denied or undecidable approval). The message is written for the
  person who asked and is shown to them as it is; the refusal is audited.
- :class:`ActionFailed`: an action ran and failed in a way it can explain (a host refused,
  a health check failed, the API answered 403). The message is the outcome shown in chat
  and recorded in the audit log.
- :class:`AuditError`: the audit store cannot record or cannot be trusted.
- :class:`ChatError`: the chat surface cannot deliver.

Anything else that escapes an action or the runtime is a bug: it is logged with its
traceback and reported as an internal error, never dressed up as a denial.

:class:`JobCancelled` is deliberately *not* an ``Exception`` (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.outcomes import Outcome


class OpsroomError(Exception):
    """Base of every error Opsroom raises on purpose."""


class ConfigurationError(OpsroomError):
    """A setting or configuration file is missing or invalid; names file, key, expectation."""


class Refusal(OpsroomError):
    """A request refused before anything ran. The message is fit for chat as it is.

    ``secrets``: values the refusal found to be secret (a password given where none is
    taken): the runtime scrubs them from the refusal's record and answer.
    """

    def __init__(self, message: str = "", *, secrets: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.secrets = tuple(secrets)


class InvalidArgument(Refusal, ValueError):
    """An argument does not fit its parameter (type, pattern, length, unknown name).

    Also a ``ValueError`` so that the same checks can run inside pydantic validators
    (which turn only ``ValueError`` into a validation error)."""


class UnknownTarget(Refusal):
    """No such host, group, environment, service, pod, job... The message is complete
    (it already names the suggestions, if any); ``suggestions`` are there for code."""

    def __init__(self, name: str, message: str, suggestions: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        super().__init__(message)


class TargetBusy(Refusal):
    """A job was asked with ``lock="refuse"`` for a target another job is working on."""

    def __init__(self, target: str, running_job_id: str) -> None:
        super().__init__(
            f"{target} is busy: job {running_job_id} is working on it; "
            f"wait for it to finish or cancel it"
        )
        self.target = target
        self.running_job_id = running_job_id


class ApprovalError(Refusal):
    """A confirmation or approval that cannot be given (unknown, expired, own request,
    not an approver, arguments changed since the request)."""


class ActionFailed(OpsroomError):
    """An action failed in a way it can explain: the message is the outcome, as is.

    ``details`` (an :class:`bot.outcomes.Outcome`, e.g. a per-host table and output) is
    shown below the message when given.
    """

    def __init__(self, message: str, details: Outcome | None = None) -> None:
        super().__init__(message)
        self.details = details

    @property
    def outcome(self) -> Outcome:
        from bot.outcomes import Outcome

        if self.details is None:
            return Outcome(str(self))
        return Outcome(str(self), *self.details.blocks)


class AuditError(OpsroomError):
    """The audit store cannot append, or what it holds does not verify."""


class ChatError(OpsroomError):
    """The chat surface cannot deliver (closed, or the server refused for good)."""


class JobCancelled(BaseException):
    """Raised inside a job's function by ``ctx.check()`` / ``ctx.wait()`` once cancelled.

    A ``BaseException``, like ``asyncio.CancelledError``, so that the ``except Exception``
    blocks common in job code do not swallow the cancellation.
    """
