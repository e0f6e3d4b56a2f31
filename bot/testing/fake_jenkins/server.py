"""A fake Jenkins (modelled on 2.479) over a real loopback socket, for tests and benchmarks.

It speaks the JSON remote API that Jenkins documents at ``<jenkins>/api`` and that the
connector uses, with the shapes Jenkins sends (``_class`` names included):

- ``GET /crumbIssuer/api/json``: a crumb; with ``crumbs=True`` a POST without a valid
  ``Jenkins-Crumb`` header is ``403 No valid crumb was included in the request``;
  :meth:`FakeJenkins.restart` invalidates every crumb issued (as a restart does);
- HTTP basic authentication with the API token; a request without credentials is 403 (no
  anonymous read), a wrong token 401;
- ``POST job/<f>/job/<name>/buildWithParameters`` (form body) → ``201`` with the queue item in
  ``Location``; an identical trigger while the first is still waiting → ``303`` to the job
  (Jenkins merges them); ``POST .../build`` on a parameterised job → ``400``;
- ``GET queue/item/<id>/api/json``: ``Queue$WaitingItem`` (with ``why``), then
  ``Queue$LeftItem`` with ``executable: null`` for ``start_gap`` seconds, then with the
  executable; a cancelled item is a ``LeftItem`` with ``cancelled: true``;
  ``GET queue/api/json``; ``POST queue/cancelItem?id=`` (302; 404 when no longer queued);
- job JSON with ``property[].parameterDefinitions`` (string, text, boolean, choice, password),
  folders (``com.cloudbees.hudson.plugins.folder.Folder`` with ``jobs``), build JSON,
  ``logText/progressiveText?start=`` with ``X-Text-Size`` and ``X-More-Data``, ``consoleText``,
  ``POST <build>/stop``, ``wfapi/describe`` for pipelines (404 for other jobs);
- ``me/api/json``; every answer carries ``X-Jenkins: 2.479.1``.

Builds run on the wall clock: a build's console lines and pipeline stages appear over its
``duration``. State advances when a request arrives, so nothing runs between requests.
Faults: :meth:`fail_next`, :meth:`delay_next`, :meth:`stop` (connection refused),
:meth:`restart`. :attr:`requests` records every request (method, path, query, form).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import quote

from aiohttp import web

from bot.loop_thread import ThreadedServer

VERSION = "2.479.1"
FREESTYLE = "hudson.model.FreeStyleProject"
PIPELINE = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
FOLDER = "com.cloudbees.hudson.plugins.folder.Folder"
_DEFINITIONS = {
    "string": "StringParameterDefinition",
    "text": "TextParameterDefinition",
    "boolean": "BooleanParameterDefinition",
    "choice": "ChoiceParameterDefinition",
    "password": "PasswordParameterDefinition",
}
_VALUES = {
    "string": "hudson.model.StringParameterValue",
    "text": "hudson.model.TextParameterValue",
    "boolean": "hudson.model.BooleanParameterValue",
    "choice": "hudson.model.StringParameterValue",
    "password": "hudson.model.PasswordParameterValue",
}


class RecordedRequest(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeJob:
    path: str
    parameters: list[dict[str, Any]] = field(default_factory=list)
    pipeline: bool = False
    duration: float = 0.5
    result: str = "SUCCESS"
    console: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    queue_seconds: float | None = 0.1  # None: waits until release()
    why: str = "Waiting for next available executor"
    start_gap: float = 0.1  # LeftItem with executable null, before the build exists
    disabled: bool = False
    next_number: int = 1

    @property
    def parameterised(self) -> bool:
        return bool(self.parameters)


@dataclass
class FakeQueueItem:
    id: int
    job: FakeJob
    params: dict[str, str]
    created: float
    left_at: float | None = None
    cancelled: bool = False
    number: int | None = None
    released: bool = False


@dataclass
class FakeBuild:
    job: FakeJob
    number: int
    params: dict[str, str]
    started: float
    queue_id: int
    aborted_at: float | None = None

    def ended(self, now: float) -> bool:
        return self.aborted_at is not None or now >= self.started + self.job.duration

    def result(self, now: float) -> str | None:
        if self.aborted_at is not None:
            return "ABORTED"
        return self.job.result if self.ended(now) else None

    def fraction(self, now: float) -> float:
        end = self.aborted_at if self.aborted_at is not None else now
        if self.job.duration <= 0:
            return 1.0
        return min(1.0, max(0.0, (end - self.started) / self.job.duration))

    def log(self, now: float) -> str:
        lines = [f"Started by user opsbot (queue item {self.queue_id})"]
        body = self.job.console
        shown = len(body) if self.ended(now) else int(len(body) * self.fraction(now))
        lines += body[:shown]
        if self.aborted_at is not None:
            lines += ["Aborted by opsbot"]
        result = self.result(now)
        if result is not None:
            lines.append(f"Finished: {result}")
        return "".join(line + "\n" for line in lines)


class FakeJenkins(ThreadedServer):
    """The fake server and its thread-safe control API."""

    thread_name = "fake-jenkins"

    def __init__(self, user: str = "opsbot", token: str = "", *, crumbs: bool = True) -> None:
        self.user = user
        self.token = token or "11" + secrets.token_hex(16)
        self.crumbs = crumbs
        self.jobs: dict[str, FakeJob] = {}
        self.folders: set[str] = set()
        self.queue: dict[int, FakeQueueItem] = {}
        self.builds: dict[tuple[str, int], FakeBuild] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._next_queue_id = 100
        self._crumb_salt = secrets.token_hex(8)
        self._failures: list[tuple[int, str]] = []
        self._delays: list[float] = []
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # --- control ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/"

    def add_job(self, path: str, **options: Any) -> FakeJob:
        """A job at ``path`` (``team/app/deploy`` creates the folders). ``parameters``:
        ``[{"name", "type": string|text|boolean|choice|password, "default", "choices",
        "description"}]``."""
        with self._lock:
            job = FakeJob(path, **options)
            self.jobs[path] = job
            parts = path.split("/")
            for i in range(1, len(parts)):
                self.folders.add("/".join(parts[:i]))
            return job

    def release(self, path: str) -> None:
        """Let the waiting items of a job with ``queue_seconds=None`` start."""
        with self._lock:
            for item in self.queue.values():
                if item.job.path == path:
                    item.released = True

    def cancel_in_jenkins(self, queue_id: int) -> None:
        """Someone cancels the queue item in Jenkins' UI."""
        with self._lock:
            self.queue[queue_id].cancelled = True
            self.queue[queue_id].left_at = time.monotonic()

    def fail_next(self, status: int, path: str = "", count: int = 1) -> None:
        """The next ``count`` requests whose path contains ``path`` answer ``status``."""
        with self._lock:
            self._failures += [(status, path)] * count

    def delay_next(self, seconds: float, count: int = 1) -> None:
        with self._lock:
            self._delays += [seconds] * count

    def restart(self) -> None:
        """Jenkins restarted: crumbs issued before are no longer valid (state is kept)."""
        with self._lock:
            self._crumb_salt = secrets.token_hex(8)

    def requests_to(self, fragment: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if fragment in r.path and (method is None or r.method == method)
            ]

    def triggered(self) -> list[FakeQueueItem]:
        with self._lock:
            return list(self.queue.values())

    def build_of(self, path: str, number: int) -> FakeBuild:
        with self._lock:
            return self.builds[(path, number)]

    # --- lifecycle -------------------------------------------------------------------------
    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- HTTP ------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post()) if request.method == "POST" else {}
        with self._lock:
            delay = self._delays.pop(0) if self._delays else 0.0
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            response = self._handle(request, {k: str(v) for k, v in form.items()})
        response.headers["X-Jenkins"] = VERSION
        return response

    def _handle(self, request: web.Request, form: dict[str, str]) -> web.StreamResponse:
        path = request.path
        self.requests.append(
            RecordedRequest(
                request.method,
                path,
                dict(request.query),
                form,
                {k: v for k, v in request.headers.items() if k.lower() != "authorization"},
            )
        )
        for i, (status, fragment) in enumerate(self._failures):
            if fragment in path:
                del self._failures[i]
                return _error(status, f"injected {status}")
        denied = self._authenticate(request)
        if denied is not None:
            return denied
        if request.method == "POST" and self.crumbs:
            expected = self._crumb_value()
            if request.headers.get("Jenkins-Crumb") != expected:
                return _error(403, "No valid crumb was included in the request")
        self._tick()
        try:
            return self._route(request, path.strip("/").split("/") if path != "/" else [], form)
        except KeyError:
            return _error(404, "Not Found")

    def _authenticate(self, request: web.Request) -> web.StreamResponse | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return _error(403, "Authentication required")
        user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        if user != self.user or token != self.token:
            return _error(401, f"Invalid password/token for user: {user}")
        return None

    def _crumb_value(self) -> str:
        return f"{self._crumb_salt}{self.user}"

    def _route(self, request: web.Request, parts: list[str], form: dict[str, str]) -> web.Response:
        method = request.method
        if parts == ["crumbIssuer", "api", "json"]:
            return _json(
                {
                    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                    "crumb": self._crumb_value(),
                    "crumbRequestField": "Jenkins-Crumb",
                }
            )
        if parts == ["me", "api", "json"]:
            return _json({"_class": "hudson.model.User", "id": self.user, "fullName": self.user})
        if parts == ["api", "json"]:
            return _json(
                {"_class": "hudson.model.Hudson", "jobs": self._children("", _depth(request))}
            )
        if parts == ["queue", "api", "json"]:
            waiting = [i for i in self.queue.values() if i.left_at is None]
            return _json(
                {"_class": "hudson.model.Queue", "items": [self._item(i) for i in waiting]}
            )
        if parts[:2] == ["queue", "item"] and parts[3:] == ["api", "json"]:
            return _json(self._item(self.queue[int(parts[2])]))
        if parts == ["queue", "cancelItem"] and method == "POST":
            item = self.queue.get(int(request.query.get("id", "0")))
            if item is None or item.left_at is not None:
                return _error(404, "Not Found")
            item.cancelled, item.left_at = True, time.monotonic()
            return _redirect(302, self.url)
        name, rest = _job_name(parts)
        if name is None:
            raise KeyError(request.path)
        if name in self.folders and rest == ["api", "json"]:
            return _json(self._folder(name, _depth(request)))
        job = self.jobs[name]
        if rest == ["api", "json"]:
            return _json(self._job(job))
        if rest in (["build"], ["buildWithParameters"]) and method == "POST":
            return self._trigger(job, rest[0], {**dict(request.query), **form})
        if rest and rest[0].isdigit():
            build = self.builds[(job.path, int(rest[0]))]
            return self._build_route(request, build, rest[1:])
        raise KeyError(request.path)

    def _build_route(self, request: web.Request, build: FakeBuild, rest: list[str]) -> web.Response:
        now = time.monotonic()
        if rest == ["api", "json"]:
            return _json(self._build(build, now))
        if rest == ["stop"] and request.method == "POST":
            if not build.ended(now):
                build.aborted_at = now
            return _redirect(302, self._build_url(build))
        if rest == ["logText", "progressiveText"]:
            text = build.log(now).encode()
            start = int(request.query.get("start", "0"))
            response = web.Response(body=text[start:], content_type="text/plain", charset="utf-8")
            response.headers["X-Text-Size"] = str(len(text))
            if not build.ended(now):
                response.headers["X-More-Data"] = "true"
            return response
        if rest == ["consoleText"]:
            return web.Response(text=build.log(now), content_type="text/plain")
        if rest == ["wfapi", "describe"] and build.job.pipeline:
            return _json(self._describe(build, now))
        raise KeyError(request.path)

    # --- behaviour -------------------------------------------------------------------------
    def _trigger(self, job: FakeJob, endpoint: str, given: Mapping[str, str]) -> web.Response:
        if job.disabled:
            return _error(409, "job is disabled")
        if endpoint == "build" and job.parameterised:
            return _error(400, "Nothing is submitted")
        params = {p["name"]: str(given.get(p["name"], _default(p))) for p in job.parameters}
        for item in self.queue.values():
            if item.job is job and item.left_at is None and item.params == params:
                return _redirect(303, self._job_url(job.path))  # merged into the queued one
        self._next_queue_id += 1
        item = FakeQueueItem(self._next_queue_id, job, params, time.monotonic())
        self.queue[item.id] = item
        return _redirect(201, f"{self.url}queue/item/{item.id}/")

    def _tick(self) -> None:
        """Advance the queue: waiting items leave, and their builds start after a gap."""
        now = time.monotonic()
        for item in self.queue.values():
            if item.cancelled or item.number is not None:
                continue
            job = item.job
            if item.left_at is None:
                ready = (
                    item.released
                    if job.queue_seconds is None
                    else now >= item.created + job.queue_seconds
                )
                if ready:
                    item.left_at = now
            if item.left_at is not None and now >= item.left_at + job.start_gap:
                item.number = job.next_number
                job.next_number += 1
                self.builds[(job.path, item.number)] = FakeBuild(
                    job, item.number, item.params, now, item.id
                )

    def _item(self, item: FakeQueueItem) -> dict[str, Any]:
        job = item.job
        base: dict[str, Any] = {
            "actions": [
                {"_class": "hudson.model.ParametersAction", "parameters": self._values(item)},
                {
                    "_class": "hudson.model.CauseAction",
                    "causes": [{"shortDescription": f"Started by user {self.user}"}],
                },
            ],
            "blocked": False,
            "buildable": item.left_at is None,
            "id": item.id,
            "inQueueSince": int(time.time() * 1000),
            "params": "".join(f"\n{k}={v}" for k, v in item.params.items()),
            "stuck": False,
            "task": {
                "_class": PIPELINE if job.pipeline else FREESTYLE,
                "name": job.path.rsplit("/", 1)[-1],
                "url": self._job_url(job.path),
                "color": "blue",
            },
            "url": f"queue/item/{item.id}/",
        }
        if item.left_at is None:
            return {"_class": "hudson.model.Queue$WaitingItem", **base, "why": job.why}
        executable = None
        if item.number is not None:
            executable = {
                "_class": "hudson.model.FreeStyleBuild",
                "number": item.number,
                "url": f"{self._job_url(job.path)}{item.number}/",
            }
        return {
            "_class": "hudson.model.Queue$LeftItem",
            **base,
            "why": None,
            "cancelled": item.cancelled,
            "executable": executable,
        }

    def _values(self, item: FakeQueueItem | FakeBuild) -> list[dict[str, Any]]:
        kinds = {p["name"]: p.get("type", "string") for p in item.job.parameters}
        values = []
        for name, value in item.params.items():
            entry: dict[str, Any] = {"_class": _VALUES[kinds[name]], "name": name}
            if kinds[name] != "password":  # Jenkins never exports a password's value
                entry["value"] = value == "true" if kinds[name] == "boolean" else value
            values.append(entry)
        return values

    def _job(self, job: FakeJob) -> dict[str, Any]:
        numbers = [n for (path, n) in self.builds if path == job.path]
        last = max(numbers) if numbers else None
        definitions = [
            {
                "_class": f"hudson.model.{_DEFINITIONS[p.get('type', 'string')]}",
                "defaultParameterValue": None
                if p.get("type") == "password"
                else {
                    "_class": _VALUES[p.get("type", "string")],
                    "name": p["name"],
                    "value": _default(p),
                },
                "description": p.get("description", ""),
                "name": p["name"],
                "type": _DEFINITIONS[p.get("type", "string")],
                **({"choices": list(p["choices"])} if p.get("type") == "choice" else {}),
            }
            for p in job.parameters
        ]
        properties: list[dict[str, Any]] = []
        if definitions:
            properties.append(
                {
                    "_class": "hudson.model.ParametersDefinitionProperty",
                    "parameterDefinitions": definitions,
                }
            )
        return {
            "_class": PIPELINE if job.pipeline else FREESTYLE,
            "name": job.path.rsplit("/", 1)[-1],
            "fullName": job.path,
            "url": self._job_url(job.path),
            "description": "",
            "buildable": not job.disabled,
            "color": "disabled" if job.disabled else "blue",
            "inQueue": any(i.job is job and i.left_at is None for i in self.queue.values()),
            "nextBuildNumber": job.next_number,
            "lastBuild": None
            if last is None
            else {
                "_class": "hudson.model.FreeStyleBuild",
                "number": last,
                "url": f"{self._job_url(job.path)}{last}/",
            },
            "property": properties,
        }

    def _folder(self, name: str, depth: int) -> dict[str, Any]:
        return {
            "_class": FOLDER,
            "name": name.rsplit("/", 1)[-1],
            "fullName": name,
            "url": self._job_url(name),
            "jobs": self._children(name, depth),
        }

    def _children(self, parent: str, depth: int) -> list[dict[str, Any]]:
        """Direct children; folders carry their own ``jobs`` while the tree asks for them."""
        prefix = f"{parent}/" if parent else ""
        names = sorted(
            {
                f"{prefix}{path[len(prefix) :].split('/', 1)[0]}"
                for path in [*self.jobs, *self.folders]
                if path.startswith(prefix) and path != parent
            }
        )
        children = []
        for name in names:
            entry: dict[str, Any] = {
                "name": name.rsplit("/", 1)[-1],
                "url": self._job_url(name),
            }
            if name in self.folders:
                entry["_class"] = FOLDER
                if depth > 1:
                    entry["jobs"] = self._children(name, depth - 1)
            else:
                job = self.jobs[name]
                entry["_class"] = PIPELINE if job.pipeline else FREESTYLE
                entry["color"] = "disabled" if job.disabled else "blue"
            children.append(entry)
        return children

    def _build(self, build: FakeBuild, now: float) -> dict[str, Any]:
        ended = build.ended(now)
        end = (
            build.aborted_at if build.aborted_at is not None else build.started + build.job.duration
        )
        return {
            "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun"
            if build.job.pipeline
            else "hudson.model.FreeStyleBuild",
            "actions": [
                {"_class": "hudson.model.ParametersAction", "parameters": self._values(build)}
            ],
            "building": not ended,
            "displayName": f"#{build.number}",
            "duration": int((end - build.started) * 1000) if ended else 0,
            "estimatedDuration": int(build.job.duration * 1000),
            "fullDisplayName": f"{build.job.path} #{build.number}",
            "number": build.number,
            "result": build.result(now),
            "timestamp": int((time.time() - (now - build.started)) * 1000),
            "url": self._build_url(build),
        }

    def _describe(self, build: FakeBuild, now: float) -> dict[str, Any]:
        stages = build.job.stages
        result = build.result(now)
        current = min(int(build.fraction(now) * len(stages)), len(stages) - 1)
        described = []
        for i, name in enumerate(stages):
            if result == "SUCCESS" or i < current:
                status = "SUCCESS"
            elif i > current:
                status = "NOT_EXECUTED"
            else:
                status = "IN_PROGRESS" if result is None else _stage_status(result)
            described.append(
                {
                    "id": str(i + 6),
                    "name": name,
                    "execNode": "",
                    "status": status,
                    "startTimeMillis": int(time.time() * 1000),
                    "durationMillis": 100,
                }
            )
        return {
            "_links": {"self": {"href": f"{self._build_url(build)}wfapi/describe"}},
            "id": str(build.number),
            "name": f"#{build.number}",
            "status": "IN_PROGRESS" if result is None else _stage_status(result),
            "startTimeMillis": int(time.time() * 1000),
            "durationMillis": int(build.fraction(now) * build.job.duration * 1000),
            "stages": described,
        }

    def _job_url(self, path: str) -> str:
        return self.url + "".join(f"job/{quote(part)}/" for part in path.split("/"))

    def _build_url(self, build: FakeBuild) -> str:
        return f"{self._job_url(build.job.path)}{build.number}/"


def _default(parameter: Mapping[str, Any]) -> Any:
    if parameter.get("type") == "choice":
        return parameter["choices"][0]
    return parameter.get("default", False if parameter.get("type") == "boolean" else "")


def _stage_status(result: str) -> str:
    return {"SUCCESS": "SUCCESS", "FAILURE": "FAILED", "ABORTED": "ABORTED"}.get(result, result)


def _job_name(parts: Sequence[str]) -> tuple[str | None, list[str]]:
    """``job/a/job/b/12/api/json`` → ``("a/b", ["12", "api", "json"])``."""
    names: list[str] = []
    i = 0
    while i + 1 < len(parts) and parts[i] == "job":
        names.append(parts[i + 1])
        i += 2
    return ("/".join(names) if names else None), list(parts[i:])


def _depth(request: web.Request) -> int:
    return max(1, request.query.get("tree", "jobs[").count("jobs["))


def _json(body: Any) -> web.Response:
    return web.json_response(body)


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=f"<html><body>{message}</body></html>", content_type="text/html"
    )


def _redirect(status: int, location: str) -> web.Response:
    return web.Response(status=status, headers={"Location": location})
