"""Jenkins: trigger, follow, inspect and abort builds. Chat-free and typed.

:class:`JenkinsClient` talks to one server over the session of ``python-jenkins``
(``requests`` underneath) with the server's REST paths. It sends every request itself,
rather than through python-jenkins' high-level methods, because of what those do on
Jenkins 2.4xx (each handled here, each with a test in tests/jenkins/):

- every request has a timeout (python-jenkins has none by default: a hung Jenkins blocks);
- the CSRF crumb is fetched when the server issues one, and fetched again once on a
  403 "No valid crumb" (python-jenkins caches it for the life of the client);
- credentials go with every request (``get_version()`` sends none);
- build parameters go in a form body, never in the URL (``build_job()`` puts them, passwords
  included, in the query string); a parameterised job is always triggered through
  ``buildWithParameters`` (``/build`` answers 400); an identical trigger that Jenkins merges
  into the queued one (a redirect instead of 201) is found in the queue, not reported as
  "not found";
- every HTTP status and network failure becomes one :class:`JenkinsError` line that says
  what happened (an outage is never reported as "no such job");
- jobs are listed through folders (``get_jobs()`` lists the top level only);
- a queue item that has left the queue without an executable yet is still starting, not
  cancelled; ``cancel_queue`` reads the item back (the endpoint's 404 says nothing).

Reads (GET) are retried on transient failures (connection refused or reset, 502/503/504),
with tenacity; writes never are. :func:`follow` polls a queue item to its build and the
build to its result. :func:`jenkins_access` gives the servers and allow-lists of the
inventory in effect (``bot.inventory.jenkins``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import jenkins
import requests
from requests.auth import HTTPBasicAuth
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from bot.connectors import ConnectorError
from bot.errors import InvalidArgument, Refusal
from bot.inventory import Inventory
from bot.inventory.jenkins import JenkinsMap, JenkinsServerConfig, JobPlace
from bot.settings import get_settings

log = logging.getLogger(__name__)

__all__ = [
    "BuildHandle",
    "BuildInfo",
    "BuildProgress",
    "JenkinsAccess",
    "JenkinsClient",
    "JenkinsError",
    "JenkinsNotFound",
    "JenkinsServer",
    "JenkinsUnavailable",
    "JobInfo",
    "JobPlace",
    "JobSummary",
    "NoJenkins",
    "ParameterDefinition",
    "QueueItem",
    "Stage",
    "Triggered",
    "check_parameters",
    "follow",
    "jenkins_access",
]

READ_ATTEMPTS = 3
PIPELINE_CLASS = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
FOLDER_DEPTH = 4  # levels of folders read by one listing request
_JOB_TREE = (
    "name,fullName,url,description,buildable,color,inQueue,nextBuildNumber,"
    "lastBuild[number,url],property[parameterDefinitions[name,type,description,choices,"
    "defaultParameterValue[value]]],jobs[name]"
)
_BUILD_TREE = (
    "number,url,building,result,duration,estimatedDuration,timestamp,displayName,"
    "actions[parameters[name,value]]"
)
_QUEUE_TREE = "id,why,blocked,stuck,cancelled,inQueueSince,task[name,url],executable[number,url]"
_LIST_TREE = (
    "jobs[name,url,color,_class"
    + ",jobs[name,url,color,_class" * FOLDER_DEPTH
    + "]" * (FOLDER_DEPTH + 1)
)
_TRANSIENT_STATUS = frozenset({502, 503, 504})


# --- errors -------------------------------------------------------------------------------------
class JenkinsError(ConnectorError):
    """A Jenkins request failed; the message is one line naming the server and what failed."""

    def __init__(self, server: str, message: str, status: int | None = None) -> None:
        super().__init__(server, message)
        self.status = status


class JenkinsNotFound(JenkinsError):
    """Jenkins answered 404: the job, build or queue item does not exist (or is hidden)."""


class JenkinsUnavailable(JenkinsError):
    """Jenkins could not be reached, did not answer in time, or answered 502/503/504."""


class NoJenkins(Refusal):
    """No Jenkins is configured in the inventory in effect."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"no Jenkins is configured: {why} (see docs/jenkins.md and docs/inventory.md)"
        )


# --- data ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JenkinsServer:
    """How to reach one server. ``token`` is the API token in clear: never log it."""

    name: str
    url: str
    user: str
    token: str = field(repr=False)
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout: float = 30.0


@dataclass(frozen=True)
class ParameterDefinition:
    """One parameter a job declares. ``kind``: string, text, boolean, choice, password or
    the Jenkins type for anything else (file, run, credentials...)."""

    name: str
    kind: str
    default: str | None = None
    choices: tuple[str, ...] = ()
    description: str = ""

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} (one of {'|'.join(self.choices)})"
        return f"{self.name} ({self.kind})"


_KINDS = {
    "StringParameterDefinition": "string",
    "TextParameterDefinition": "text",
    "BooleanParameterDefinition": "boolean",
    "ChoiceParameterDefinition": "choice",
    "PasswordParameterDefinition": "password",
}


@dataclass(frozen=True)
class JobInfo:
    path: str
    url: str
    buildable: bool
    pipeline: bool
    folder: bool
    parameters: tuple[ParameterDefinition, ...] | None  # None: the job takes no parameters
    last_build: int | None
    in_queue: bool
    color: str
    description: str = ""


@dataclass(frozen=True)
class JobSummary:
    path: str
    url: str
    color: str
    pipeline: bool


@dataclass(frozen=True)
class BuildInfo:
    job: str
    number: int
    url: str
    building: bool
    result: str | None  # SUCCESS, FAILURE, UNSTABLE, ABORTED, NOT_BUILT; None while running
    duration: float  # seconds (0 while running)
    estimated: float  # seconds; <= 0 when Jenkins has no estimate
    started: float  # epoch seconds
    parameters: tuple[tuple[str, str], ...] = ()

    def elapsed(self, now: float | None = None) -> float:
        if not self.building:
            return self.duration
        return max(0.0, (now if now is not None else time.time()) - self.started)


@dataclass(frozen=True)
class QueueItem:
    id: int
    job: str
    why: str
    blocked: bool
    cancelled: bool
    left: bool  # left the queue (started or cancelled)
    executable: int | None  # the build number, once it exists
    executable_url: str = ""
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Stage:
    name: str
    status: str  # SUCCESS, FAILED, IN_PROGRESS, PAUSED_PENDING_INPUT, NOT_EXECUTED, ...
    duration: float


@dataclass(frozen=True)
class Triggered:
    queue_id: int
    merged: bool  # Jenkins merged it into an identical queued trigger


@dataclass(frozen=True)
class ConsoleChunk:
    text: str
    size: int  # offset of the next chunk (X-Text-Size)
    more: bool  # the build is still writing (X-More-Data)


@dataclass(frozen=True)
class CancelResult:
    cancelled: bool  # the item was cancelled before it started
    build: int | None  # the build it became, when it was too late


# --- the client ---------------------------------------------------------------------------------
def job_path_url(job: str) -> tuple[str, str]:
    """``("job/team/job/", "app")`` for ``team/app``, quoted: python-jenkins' folder_url."""
    parts = job.split("/")
    folder = "".join(f"job/{quote(part, safe='')}/" for part in parts[:-1])
    return folder, quote(parts[-1], safe="")


def job_of_url(url: str) -> str:
    """``team/app`` for ``https://ci/job/team/job/app/`` (and ``.../job/app/12/``)."""
    segments = [unquote(s) for s in urlsplit(url).path.split("/") if s]
    names = [segments[i + 1] for i, s in enumerate(segments[:-1]) if s == "job"]
    return "/".join(names)


def _parameters(actions: Any) -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    for action in actions or ():
        for parameter in (action or {}).get("parameters") or ():
            if "name" in parameter and "value" in parameter:  # a password has no value
                value = parameter["value"]
                text = str(value).lower() if isinstance(value, bool) else str(value)
                found.append((str(parameter["name"]), text))
    return tuple(found)


class JenkinsClient:
    """One Jenkins server. Thread-safe: one session, a lock around the crumb."""

    def __init__(
        self, server: JenkinsServer, *, read_attempts: int = READ_ATTEMPTS, retry_wait: float = 0.5
    ) -> None:
        self.server = server
        self.name = server.name
        self.url = server.url.rstrip("/") + "/"
        # python-jenkins' session class: verify=False is not overridden by REQUESTS_CA_BUNDLE.
        self._session = jenkins.WrappedSession()
        self._session.auth = HTTPBasicAuth(server.user, server.token)
        self._session.verify = (
            str(server.ca_file) if server.verify_tls and server.ca_file else server.verify_tls
        )
        self._session.headers["Accept"] = "application/json"
        self._crumb_lock = threading.Lock()
        self._crumb: dict[str, str] | None = None
        self._crumb_known = False
        self._read = retry(
            retry=retry_if_exception_type(JenkinsUnavailable),
            stop=stop_after_attempt(read_attempts),
            wait=wait_exponential(multiplier=retry_wait, max=5),
            reraise=True,
        )(self._send)

    def close(self) -> None:
        self._session.close()

    # --- requests ------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        doing: str = "read",
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        crumb: bool = False,
        follow_redirects: bool = True,
        _retried: bool = False,
    ) -> requests.Response:
        url = urljoin(self.url, path)
        headers = self._crumb_header() if crumb else {}
        try:
            response = self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=self.server.timeout,
                allow_redirects=follow_redirects,
            )
        except requests.Timeout:
            raise JenkinsUnavailable(
                self.name,
                f"Jenkins {self.name} did not answer within {self.server.timeout:g}s "
                f"(to {doing} {what})",
            ) from None
        except requests.exceptions.SSLError as exc:
            raise JenkinsError(
                self.name, f"TLS with Jenkins {self.name} at {self.url} failed: {_reason(exc)}"
            ) from None
        except requests.ConnectionError as exc:
            raise JenkinsUnavailable(
                self.name, f"cannot reach Jenkins {self.name} at {self.url}: {_reason(exc)}"
            ) from None
        if (
            crumb
            and not _retried
            and response.status_code == 403
            and "No valid crumb" in response.text
        ):
            with self._crumb_lock:  # Jenkins restarted, or the crumb expired: fetch a new one
                self._crumb_known = False
            return self._send(
                method,
                path,
                what=what,
                doing=doing,
                params=params,
                data=data,
                crumb=True,
                follow_redirects=follow_redirects,
                _retried=True,
            )
        if response.status_code >= 400:
            raise self._error(response, what, doing)
        return response

    def _error(self, response: requests.Response, what: str, doing: str) -> JenkinsError:
        code, reason = response.status_code, response.reason or ""
        status = f"{code} {reason}".strip()
        if code == 404:
            return JenkinsNotFound(self.name, f"Jenkins {self.name}: no {what}", code)
        if code == 401:
            return JenkinsError(
                self.name,
                f"Jenkins {self.name} refused the credentials of {self.server.user} ({status}): "
                "check the user and its API token",
                code,
            )
        if code == 403:
            return JenkinsError(
                self.name,
                f"Jenkins {self.name}: {self.server.user} is not allowed to {doing} {what} "
                f"({status})",
                code,
            )
        if code in _TRANSIENT_STATUS or code >= 500:
            return JenkinsUnavailable(
                self.name,
                f"Jenkins {self.name} failed to {doing} {what} ({status}): the server or a "
                "proxy in front of it is failing, try again later",
                code,
            )
        detail = response.headers.get("X-Error", "")
        return JenkinsError(
            self.name,
            f"Jenkins {self.name} refused to {doing} {what} ({status}"
            + (f": {detail[:200]}" if detail else "")
            + ")",
            code,
        )

    def _crumb_header(self) -> dict[str, str]:
        with self._crumb_lock:
            if not self._crumb_known:
                try:
                    body = self._read(
                        "GET", jenkins.CRUMB_URL, what="CSRF crumb", doing="fetch"
                    ).json()
                    self._crumb = {body["crumbRequestField"]: body["crumb"]}
                except JenkinsNotFound:
                    self._crumb = None  # the server issues no crumbs
                self._crumb_known = True
            return dict(self._crumb or {})

    def _json(self, path: str, what: str, tree: str | None = None) -> Any:
        response = self._read("GET", path, what=what, params={"tree": tree} if tree else None)
        try:
            return response.json()
        except ValueError:
            raise JenkinsError(
                self.name, f"Jenkins {self.name} answered something that is not JSON for {what}"
            ) from None

    # --- reads -----------------------------------------------------------------------------
    def whoami(self) -> tuple[str, str]:
        """The user the token belongs to and the Jenkins version (with credentials)."""
        response = self._read("GET", jenkins.WHOAMI_URL % {"depth": 0}, what="user")
        return str(response.json().get("id", "")), response.headers.get("X-Jenkins", "")

    def job(self, job: str) -> JobInfo:
        folder, short = job_path_url(job)
        path = jenkins.JOB_INFO % {"folder_url": folder, "short_name": short, "depth": 0}
        data = self._json(path, f"job {job}", _JOB_TREE)
        definitions: tuple[ParameterDefinition, ...] | None = None
        for prop in data.get("property") or ():
            if "parameterDefinitions" in (prop or {}):
                definitions = tuple(
                    _definition(d) for d in prop["parameterDefinitions"] or () if d.get("name")
                )
        last = data.get("lastBuild") or {}
        return JobInfo(
            path=job,
            url=str(data.get("url", "")),
            buildable=bool(data.get("buildable", "jobs" not in data)),
            pipeline=data.get("_class") == PIPELINE_CLASS,
            folder="jobs" in data,
            parameters=definitions or None,
            last_build=last.get("number"),
            in_queue=bool(data.get("inQueue")),
            color=str(data.get("color") or ""),
            description=str(data.get("description") or ""),
        )

    def jobs(self, folder: str = "") -> list[JobSummary]:
        """Every job under ``folder`` (all of them by default), through sub-folders."""
        path = "api/json"
        if folder:
            prefix, short = job_path_url(folder)
            path = f"{prefix}job/{short}/api/json"
        found: list[JobSummary] = []
        pending: list[tuple[str, list[dict[str, Any]]]] = [
            (folder, self._json(path, f"folder {folder or '/'}", _LIST_TREE).get("jobs") or [])
        ]
        while pending:
            parent, items = pending.pop(0)
            for item in items:
                name = f"{parent}/{item['name']}" if parent else str(item["name"])
                if "jobs" in item or "color" not in item:  # a folder (jobs have a color)
                    children = item.get("jobs")
                    if children is None:  # deeper than one request reads: ask that folder
                        children = self._folder_jobs(name)
                    pending.append((name, children))
                    continue
                found.append(
                    JobSummary(
                        name,
                        str(item.get("url", "")),
                        str(item.get("color") or ""),
                        item.get("_class") == PIPELINE_CLASS,
                    )
                )
        return sorted(found, key=lambda summary: summary.path)

    def _folder_jobs(self, folder: str) -> list[dict[str, Any]]:
        prefix, short = job_path_url(folder)
        data = self._json(f"{prefix}job/{short}/api/json", f"folder {folder}", _LIST_TREE)
        return list(data.get("jobs") or [])

    def build(self, job: str, number: int) -> BuildInfo:
        folder, short = job_path_url(job)
        path = jenkins.BUILD_INFO % {
            "folder_url": folder,
            "short_name": short,
            "number": number,
            "depth": 0,
        }
        data = self._json(path, f"build {job} #{number}", _BUILD_TREE)
        return BuildInfo(
            job=job,
            number=int(data["number"]),
            url=str(data.get("url", "")),
            building=bool(data.get("building")),
            result=data.get("result"),
            duration=float(data.get("duration") or 0) / 1000,
            estimated=float(data.get("estimatedDuration") or -1) / 1000,
            started=float(data.get("timestamp") or 0) / 1000,
            parameters=_parameters(data.get("actions")),
        )

    def last_build(self, job: str) -> BuildInfo | None:
        info = self.job(job)
        return self.build(job, info.last_build) if info.last_build is not None else None

    def stages(self, job: str, number: int) -> list[Stage] | None:
        """The stages of a pipeline build (wfapi), or None when the job is no pipeline."""
        folder, short = job_path_url(job)
        path = jenkins.BUILD_STAGES % {"folder_url": folder, "short_name": short, "number": number}
        try:
            data = self._json(path, f"stages of {job} #{number}")
        except JenkinsNotFound:
            return None
        return [
            Stage(
                str(s.get("name", "")),
                str(s.get("status", "")),
                float(s.get("durationMillis") or 0) / 1000,
            )
            for s in data.get("stages") or ()
        ]

    def console(self, job: str, number: int, start: int = 0) -> ConsoleChunk:
        """Console text from byte ``start`` on (progressiveText)."""
        folder, short = job_path_url(job)
        response = self._read(
            "GET",
            f"{folder}job/{short}/{number}/logText/progressiveText",
            what=f"console of {job} #{number}",
            params={"start": start},
        )
        size = int(response.headers.get("X-Text-Size", start + len(response.content)))
        more = response.headers.get("X-More-Data", "").lower() == "true"
        return ConsoleChunk(response.text, size, more)

    def console_text(self, job: str, number: int, limit: int = 5_000_000) -> str:
        """The whole console text so far (at most ``limit`` bytes read)."""
        parts: list[str] = []
        start = 0
        while True:
            chunk = self.console(job, number, start)
            parts.append(chunk.text)
            if not chunk.more or chunk.size <= start or chunk.size >= limit:
                return "".join(parts)
            start = chunk.size

    def queue_item(self, item: int) -> QueueItem:
        data = self._json(jenkins.Q_ITEM % {"number": item, "depth": 0}, f"queue item {item}")
        return _queue_item(data)

    def queue(self) -> list[QueueItem]:
        data = self._json(jenkins.Q_INFO, "queue", f"items[{_QUEUE_TREE},actions[parameters[*]]]")
        return [_queue_item(item) for item in data.get("items") or ()]

    # --- writes (never retried) ------------------------------------------------------------
    def trigger(self, job: str, parameters: Mapping[str, str] | None) -> Triggered:
        """Queue a build. ``parameters`` None: a job without parameters (``/build``); a
        mapping (even empty): ``buildWithParameters`` with the values as a form body."""
        folder, short = job_path_url(job)
        template = jenkins.BUILD_JOB if parameters is None else jenkins.BUILD_WITH_PARAMS_JOB
        response = self._send(
            "POST",
            template % {"folder_url": folder, "short_name": short},
            what=f"job {job}",
            doing="trigger",
            data=dict(parameters or {}),
            crumb=True,
            follow_redirects=False,
        )
        location = response.headers.get("Location", "")
        if response.status_code == 201 and "/queue/item/" in location:
            return Triggered(int(location.rstrip("/").rsplit("/", 1)[1]), merged=False)
        # Jenkins merged it into an identical trigger still queued (a redirect, no item).
        for item in self.queue():
            if item.job == job and _same(item.parameters, parameters or {}):
                return Triggered(item.id, merged=True)
        raise JenkinsError(
            self.name,
            f"Jenkins {self.name} did not queue job {job} (it answered "
            f"{response.status_code} without a queue item: is the job disabled?)",
            response.status_code,
        )

    def stop(self, job: str, number: int) -> None:
        folder, short = job_path_url(job)
        self._send(
            "POST",
            jenkins.STOP_BUILD % {"folder_url": folder, "short_name": short, "number": number},
            what=f"build {job} #{number}",
            doing="abort",
            crumb=True,
            follow_redirects=False,
        )

    def cancel_queue(self, item: int) -> CancelResult:
        """Cancel a queue item; the item read back says whether it was in time."""
        # A 404 is also what Jenkins answers when the item has just left: read it back.
        with contextlib.suppress(JenkinsNotFound):
            self._send(
                "POST",
                jenkins.CANCEL_QUEUE % {"id": item},
                what=f"queue item {item}",
                doing="cancel",
                crumb=True,
                follow_redirects=False,
            )
        after = self.queue_item(item)
        return CancelResult(after.cancelled, after.executable)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "Connection reset"):
        if known in text:
            return known.lower()
    return text.rsplit(": ", 1)[-1].strip("')( ")[:160] or type(exc).__name__


def _definition(raw: Mapping[str, Any]) -> ParameterDefinition:
    kind = _KINDS.get(str(raw.get("type", "")), str(raw.get("type", "other")))
    default = (raw.get("defaultParameterValue") or {}).get("value")
    if kind == "password":
        default = None  # never carried around
    return ParameterDefinition(
        name=str(raw["name"]),
        kind=kind,
        default=None
        if default is None
        else str(default).lower()
        if kind == "boolean"
        else str(default),
        choices=tuple(str(c) for c in raw.get("choices") or ()),
        description=str(raw.get("description") or ""),
    )


def _queue_item(data: Mapping[str, Any]) -> QueueItem:
    executable = data.get("executable") or {}
    kind = str(data.get("_class", ""))
    return QueueItem(
        id=int(data["id"]),
        job=job_of_url(str((data.get("task") or {}).get("url", ""))),
        why=str(data.get("why") or ""),
        blocked=bool(data.get("blocked")),
        cancelled=bool(data.get("cancelled")),
        left=kind.endswith("$LeftItem") or "cancelled" in data,
        executable=executable.get("number"),
        executable_url=str(executable.get("url", "")),
        parameters=_parameters(data.get("actions")),
    )


def _same(queued: Sequence[tuple[str, str]], given: Mapping[str, str]) -> bool:
    values = dict(queued)
    return all(values.get(name) == value for name, value in given.items())


# --- parameters ---------------------------------------------------------------------------------
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def check_parameters(job: JobInfo, given: Mapping[str, str]) -> dict[str, str] | None:
    """The form body for ``given`` (None for a job without parameters), validated against
    the job's own definitions; :class:`bot.errors.InvalidArgument` with the valid
    parameters listed otherwise. Password parameters are not taken from chat (anyone in
    the channel would read them): Jenkins uses their stored default."""
    if job.folder:
        raise InvalidArgument(f"{job.path} is a folder, not a job (see !jenkins jobs {job.path})")
    if not job.buildable:
        raise InvalidArgument(f"job {job.path} is disabled in Jenkins")
    definitions = {d.name: d for d in job.parameters or ()}
    valid = (
        "its parameters: " + ", ".join(d.describe() for d in definitions.values())
        if definitions
        else "it takes no parameters"
    )
    body: dict[str, str] = {}
    for name, value in given.items():
        definition = definitions.get(name)
        if definition is None:
            raise InvalidArgument(f"job {job.path} has no parameter {name} ({valid})")
        if definition.kind == "password":
            raise InvalidArgument(
                f"{name} is a password parameter: it is not taken from chat (the channel would "
                "read it); Jenkins uses the value stored in the job",
                secrets=[value],
            )
        if definition.kind == "choice" and value not in definition.choices:
            raise InvalidArgument(
                f"{name} must be one of {', '.join(definition.choices)} ({valid})"
            )
        if definition.kind == "boolean":
            if value.lower() not in (*TRUE_WORDS, *FALSE_WORDS):
                raise InvalidArgument(f"{name} must be true or false ({valid})")
            value = "true" if value.lower() in TRUE_WORDS else "false"
        elif definition.kind not in ("string", "text", "choice"):
            raise InvalidArgument(
                f"{name} is a {definition.kind} parameter, which cannot be given from chat"
            )
        body[name] = value
    return body if job.parameters is not None else None


# --- following a build --------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildProgress:
    """Where a followed build is: ``queued`` (and why) or ``running``."""

    state: str
    queue_id: int
    why: str = ""
    build: BuildInfo | None = None
    stage: str | None = None


class BuildHandle:
    """A triggered build being followed: what to abort when the job is cancelled."""

    def __init__(self, client: JenkinsClient, job: str, queue_id: int) -> None:
        self.client = client
        self.job = job
        self.queue_id = queue_id
        self.number: int | None = None
        self.aborted = ""

    def abort(self) -> None:
        """Cancel the queue item, or stop the build it became."""
        if self.number is None:
            result = self.client.cancel_queue(self.queue_id)
            if result.cancelled:
                self.aborted = f"queue item {self.queue_id} cancelled in Jenkins"
                return
            self.number = result.build
        if self.number is not None:
            self.client.stop(self.job, self.number)
            self.aborted = f"build #{self.number} aborted in Jenkins"


class QueueItemCancelled(JenkinsError):
    """The queue item was cancelled in Jenkins before it started."""


def follow(
    handle: BuildHandle,
    *,
    wait: Callable[[float], None],
    report: Callable[[BuildProgress], None],
    interval: float = 1.0,
    max_interval: float = 5.0,
) -> BuildInfo:
    """Poll the queue item to its build, then the build to its result; return it.

    ``wait(seconds)`` sleeps between polls (an action's ``ctx.wait``, which ends the loop
    on cancellation); ``report`` gets each :class:`BuildProgress`. The pause starts at
    ``interval`` and grows by half up to ``max_interval``. A queue item that has left the
    queue without an executable yet is still starting: polling goes on."""
    client, delay = handle.client, interval
    while handle.number is None:
        item = client.queue_item(handle.queue_id)
        if item.cancelled:
            raise QueueItemCancelled(
                client.name,
                f"queue item {item.id} of {handle.job} was cancelled in Jenkins before it started",
            )
        if item.executable is not None:
            handle.number = item.executable
            break
        why = "starting" if item.left else item.why or "waiting in the queue"
        report(BuildProgress("queued", handle.queue_id, why=why))
        wait(delay)
        delay = min(max_interval, delay * 1.5)
    pipeline: bool | None = None
    while True:
        build = client.build(handle.job, handle.number)
        if not build.building and build.result is not None:
            return build
        stage = None
        if pipeline is not False:
            stages = client.stages(handle.job, handle.number)
            pipeline = stages is not None
            stage = _current_stage(stages or [])
        report(BuildProgress("running", handle.queue_id, build=build, stage=stage))
        wait(delay)
        delay = min(max_interval, delay * 1.5)


def _current_stage(stages: Sequence[Stage]) -> str | None:
    for stage in reversed(stages):
        if stage.status in ("IN_PROGRESS", "PAUSED_PENDING_INPUT"):
            return stage.name + (
                " (waiting for input)" if stage.status.startswith("PAUSED") else ""
            )
    return None


# --- the inventory's servers --------------------------------------------------------------------
class JenkinsAccess:
    """The servers and allow-lists of an inventory, with one client per server."""

    def __init__(
        self, jmap: JenkinsMap, *, poll_interval: float = 5.0, **client_options: Any
    ) -> None:
        self.map = jmap
        self.poll_interval = poll_interval  # the longest pause between two polls of a build
        self._options = client_options
        self._clients: dict[str, JenkinsClient] = {}
        self._lock = threading.Lock()

    def place(self, job: str, env: str | None = None) -> JobPlace:
        """Which environment allows ``job`` (refused otherwise; no request is made)."""
        return self.map.place(job, env)

    def client(self, server: str) -> JenkinsClient:
        with self._lock:
            client = self._clients.get(server)
            if client is None:
                client = JenkinsClient(_server(self.map.servers[server]), **self._options)
                self._clients[server] = client
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _server(config: JenkinsServerConfig) -> JenkinsServer:
    return JenkinsServer(
        name=config.name,
        url=config.url,
        user=config.user,
        token=config.token(),
        ca_file=config.ca_file,
        verify_tls=config.verify_tls,
        timeout=config.timeout,
    )


_current: tuple[tuple[object, ...], JenkinsAccess] | None = None
_access_lock = threading.Lock()


def jenkins_access() -> JenkinsAccess:
    """The process's :class:`JenkinsAccess` for the inventory in effect, built on first use
    (again when the inventory file changes). :class:`NoJenkins` when there is none."""
    global _current
    settings = get_settings()
    path, _sample = settings.inventory_in_effect()
    if path is None:
        raise NoJenkins("OPSROOM_INVENTORY is not set")
    stat = path.stat() if path.exists() else None
    poll = settings.opsroom_jenkins_poll_interval.total_seconds()
    key = (path.resolve(), stat.st_mtime_ns if stat else None, poll)
    with _access_lock:
        previous = _current
        if previous is not None and previous[0] == key:
            return previous[1]
        jmap = JenkinsMap(Inventory.load(path).document, str(path), path.parent)
        if not jmap.configured:
            raise NoJenkins(f"no environment of {path} has a jenkins: section")
        access = JenkinsAccess(jmap, poll_interval=poll)
        _current = (key, access)
    if previous is not None:
        previous[1].close()
    return access
