"""A fake Kubernetes API server for Opsroom's tests, served over TLS to the real client.

aiohttp runs in a background thread with its own event loop on a real loopback socket; the
official ``kubernetes`` client reaches it through a generated kubeconfig (the server's CA as
``certificate-authority-data``, a bearer token that is checked). State lives in plain dicts
guarded by one re-entrant lock; request handlers and the controller run under it on the
server loop, control methods take it from the test thread.

What it serves (REST paths and shapes of the API reference): discovery (``/version``,
``/api``, ``/apis``), core/v1 namespaces, pods (list, get, delete, ``log``), events, the
events.k8s.io/v1 view of the same events (``eventTime: null`` as kubelet writes them),
apps/v1 deployments (get, list, watch, strategic-merge, merge and JSON patch, the ``scale``
subresource) and replicasets; errors as ``Status`` bodies. Every request is recorded with the
identity it was made as (``Impersonate-User`` / ``Impersonate-Group``); :meth:`deny` makes
RBAC refuse a verb on a resource. A small controller rolls deployments' pods over, one pod
per ``tick``, and can be told to get stuck (:meth:`stick`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import random
import string
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from aiohttp import web

from bot.loop_thread import ThreadedServer

from .objects import (
    HASH_LABEL,
    REVISION,
    Obj,
    canonical,
    json_patch,
    matches_fields,
    matches_labels,
    merge_patch,
    metadata,
    object_list,
    status,
    template_hash,
    timestamp,
    without_hash_label,
)
from .tls import ServerTLS, make_tls

SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T07:28:49Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
BOT_USER = "system:serviceaccount:opsroom:opsroom"
Key = tuple[str | None, str]  # (namespace, name)

# resource -> (API group, version, kind)
RESOURCES: dict[str, tuple[str, str, str]] = {
    "namespaces": ("", "v1", "Namespace"),
    "pods": ("", "v1", "Pod"),
    "events": ("", "v1", "Event"),
    "deployments": ("apps", "v1", "Deployment"),
    "replicasets": ("apps", "v1", "ReplicaSet"),
}


class KubeRequest(NamedTuple):
    """One request the server saw: who it was made as, and what it got."""

    method: str
    path: str
    query: dict[str, str]
    user: str  # the impersonated user, else the token's
    groups: tuple[str, ...]  # Impersonate-Group values, in order
    impersonated: bool
    status: int


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.body = status(code, reason, message, details)
        self.code = code


@dataclass
class _Deny:
    verb: str
    resource: str
    namespace: str | None
    user: str | None


@dataclass
class _Fault:
    method: str
    path_contains: str
    remaining: int
    code: int
    message: str
    reason: str


@dataclass
class _Watcher:
    resource: str
    namespace: str | None
    label_selector: str
    field_selector: str
    queue: asyncio.Queue[Obj | None]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Rollout:
    """The controller's memory of one deployment."""

    last_progress: float = field(default_factory=time.monotonic)
    stuck_reason: str = ""
    stuck_message: str = ""


@dataclass
class _Ctx:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str
    user: str
    groups: tuple[str, ...]
    recorded: bool = False


def _suffix(length: int = 5) -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=length))


class FakeKubernetes(ThreadedServer):
    """The fake API server; see the module docstring and README.md."""

    thread_name = "fake-kubernetes"

    def __init__(self, folder: Path, *, token: str = "fake-token", tick: float = 0.05) -> None:
        self.folder = folder
        self.token = token
        self.tick = tick
        self.tls: ServerTLS = make_tls(folder / "tls")
        self.impersonation_allowed = True
        self.violations: list[str] = []
        self._lock = threading.RLock()
        self._rv = 0
        self._store: dict[str, dict[Key, Obj]] = {resource: {} for resource in RESOURCES}
        self._logs: dict[tuple[str, str, str, bool], list[tuple[float, str]]] = {}
        self._rollouts: dict[Key, _Rollout] = {}
        self._pending: dict[Key, float] = {}  # pods created by the controller, not yet started
        self._watchers: list[_Watcher] = []
        self._requests: list[KubeRequest] = []
        self._denies: list[_Deny] = []
        self._faults: list[_Fault] = []
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._controller: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(
            runner,
            "127.0.0.1",
            self._port,
            reuse_address=True,
            ssl_context=self.tls.server_context(),
        )
        await site.start()
        self._port = runner.addresses[0][1]
        self._runner = runner
        self._controller = asyncio.get_running_loop().create_task(self._control_loop())

    async def _shutdown(self) -> None:
        if self._controller is not None:
            self._controller.cancel()
        with self._lock:
            for watcher in self._watchers:
                watcher.queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ kubeconfig
    def kubeconfig(
        self, path: Path, contexts: tuple[str, ...] = ("fake",), token: str | None = None
    ) -> Path:
        """Write a kubeconfig whose ``contexts`` all reach this server (one cluster entry
        each, the CA embedded, the bearer token as the user); returns ``path``."""
        ca = self.tls.ca_file.read_bytes()
        import base64

        ca_data = base64.b64encode(ca).decode()
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": f"{name}-cluster",
                    "cluster": {"server": self.url, "certificate-authority-data": ca_data},
                }
                for name in contexts
            ],
            "users": [{"name": "opsroom", "user": {"token": token or self.token}}],
            "contexts": [
                {"name": name, "context": {"cluster": f"{name}-cluster", "user": "opsroom"}}
                for name in contexts
            ],
            "current-context": contexts[0],
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    # ------------------------------------------------------------------ seeding
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _put(self, resource: str, obj: Obj, event: str = "MODIFIED") -> Obj:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_rv()
        self._store[resource][(meta.get("namespace"), meta["name"])] = obj
        self._notify(resource, event, obj)
        return obj

    def add_namespace(self, name: str) -> Obj:
        with self._lock:
            obj = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": metadata(name, None, time.time(), labels={"name": name}),
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            return copy.deepcopy(self._put("namespaces", obj, "ADDED"))

    def _ensure_namespace(self, namespace: str) -> None:
        if (None, namespace) not in self._store["namespaces"]:
            self.add_namespace(namespace)

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        containers: tuple[str, ...] = ("app",),
        labels: dict[str, str] | None = None,
        phase: str = "Running",
        ready: bool = True,
        restarts: int = 0,
        waiting: str = "",
        waiting_message: str = "",
        last_terminated: str = "",
        age: float = 3600.0,
        owner: Obj | None = None,
        image: str = "registry.example.com/app:1.0",
        node: str = "node-1",
    ) -> Obj:
        """A pod; ``waiting`` (e.g. CrashLoopBackOff) makes its containers wait with that
        reason, ``last_terminated`` (e.g. OOMKilled) is their last termination reason."""
        with self._lock:
            self._ensure_namespace(namespace)
            created = time.time() - age
            statuses = []
            for container in containers:
                state: Obj = {"running": {"startedAt": timestamp(created)}}
                if waiting:
                    state = {"waiting": {"reason": waiting, "message": waiting_message}}
                elif phase != "Running":
                    state = {"waiting": {"reason": "ContainerCreating"}}
                last: Obj = {}
                if last_terminated:
                    last = {
                        "terminated": {
                            "exitCode": 137 if last_terminated == "OOMKilled" else 1,
                            "reason": last_terminated,
                            "startedAt": timestamp(created),
                            "finishedAt": timestamp(created + 60),
                        }
                    }
                statuses.append(
                    {
                        "name": container,
                        "image": image,
                        "imageID": "",
                        "ready": ready and not waiting,
                        "started": "running" in state,
                        "restartCount": restarts,
                        "state": state,
                        "lastState": last,
                    }
                )
            all_ready = ready and not waiting and phase == "Running"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata(
                    name,
                    namespace,
                    created,
                    labels=dict(labels or {}),
                    ownerReferences=[owner] if owner else None,
                ),
                "spec": {
                    "containers": [{"name": c, "image": image} for c in containers],
                    "nodeName": node,
                    "restartPolicy": "Always",
                },
                "status": {
                    "phase": phase,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": "True" if all_ready else "False"},
                        {"type": "ContainersReady", "status": "True" if all_ready else "False"},
                    ],
                    "podIP": f"10.0.0.{random.randint(2, 250)}",
                    "startTime": timestamp(created),
                    "containerStatuses": statuses,
                },
            }
            return copy.deepcopy(self._put("pods", pod, "ADDED"))

    def set_logs(
        self,
        namespace: str,
        pod: str,
        lines: list[str],
        *,
        container: str = "app",
        previous: bool = False,
        ages: list[float] | None = None,
    ) -> None:
        """The log lines of a container (``previous``: of its last terminated instance);
        ``ages`` gives each line's age in seconds (default: one second apart, newest last)."""
        now = time.time()
        ages = ages or [float(len(lines) - i) for i in range(len(lines))]
        with self._lock:
            self._logs[(namespace, pod, container, previous)] = [
                (now - age, line) for age, line in zip(ages, lines, strict=True)
            ]

    def add_event(
        self,
        namespace: str,
        kind: str,
        name: str,
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        count: int = 1,
        age: float = 60.0,
        component: str = "kubelet",
    ) -> Obj:
        """A core/v1 event as kubelet and controllers write it (``eventTime: null``)."""
        with self._lock:
            self._ensure_namespace(namespace)
            when = timestamp(time.time() - age)
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": metadata(f"{name}.{_suffix(16)}", namespace, time.time() - age),
                "involvedObject": {
                    "apiVersion": "apps/v1" if kind in ("Deployment", "ReplicaSet") else "v1",
                    "kind": kind,
                    "namespace": namespace,
                    "name": name,
                },
                "reason": reason,
                "message": message,
                "source": {"component": component},
                "firstTimestamp": when,
                "lastTimestamp": when,
                "count": count,
                "type": type,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": "",
            }
            return copy.deepcopy(self._put("events", event, "ADDED"))

    def add_deployment(
        self,
        namespace: str,
        name: str,
        *,
        replicas: int = 3,
        image: str = "registry.example.com/app:1.0",
        containers: tuple[str, ...] = ("app",),
        progress_deadline: int = 600,
        age: float = 86400.0,
    ) -> Obj:
        """A deployment already rolled out: revision 1's ReplicaSet and its ready pods."""
        with self._lock:
            self._ensure_namespace(namespace)
            labels = {"app": name}
            deployment = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": metadata(
                    name, namespace, time.time() - age, labels=labels, generation=1
                ),
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": dict(labels)},
                    "template": {
                        # As the API server stores it (and kubectl sends it back on undo).
                        "metadata": {"creationTimestamp": None, "labels": dict(labels)},
                        "spec": {"containers": [{"name": c, "image": image} for c in containers]},
                    },
                    "strategy": {
                        "type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                    },
                    "revisionHistoryLimit": 10,
                    "progressDeadlineSeconds": progress_deadline,
                },
                "status": {"observedGeneration": 0},
            }
            self._rollouts[(namespace, name)] = _Rollout()
            self._put("deployments", deployment, "ADDED")
            self._observe(deployment)
            rs = self._current_rs(deployment)
            for _ in range(replicas):
                self._new_pod(rs, started=True, age=age)
            self._sync_status(deployment)
            return copy.deepcopy(deployment)

    # ------------------------------------------------------------------ control
    def deny(
        self,
        verb: str,
        resource: str,
        *,
        namespace: str | None = None,
        user: str | None = None,
    ) -> None:
        """RBAC says no to ``verb`` (get, list, watch, patch, update, delete) on ``resource``
        (``pods``, ``pods/log``, ``deployments``, ``deployments/scale``...), in ``namespace``
        and for ``user`` (the impersonated one, or the bot's own) when given."""
        with self._lock:
            self._denies.append(_Deny(verb, resource, namespace, user))

    def fail_next(
        self,
        method: str,
        path_contains: str,
        code: int = 500,
        *,
        count: int = 1,
        message: str = "etcdserver: request timed out",
        reason: str = "InternalError",
    ) -> None:
        """The next ``count`` matching requests get a ``Status`` error with ``code``."""
        with self._lock:
            self._faults.append(_Fault(method, path_contains, count, code, message, reason))

    def stick(
        self,
        namespace: str,
        name: str,
        reason: str = "CrashLoopBackOff",
        message: str = "back-off 10s restarting failed container",
    ) -> None:
        """Pods the controller starts for this deployment from now on never get ready:
        their containers wait with ``reason``; the rollout exceeds its progress deadline."""
        with self._lock:
            rollout = self._rollouts[(namespace, name)]
            rollout.stuck_reason, rollout.stuck_message = reason, message

    def recover(self, namespace: str, name: str) -> None:
        """Stuck pods come up by themselves (a dependency is back) and the rollout completes
        at once, without the controller recording progress: a ``ProgressDeadlineExceeded``
        condition stays, as on a real cluster until the controller's next resync."""
        with self._lock:
            self._rollouts[(namespace, name)].stuck_reason = ""
            deployment = self._store["deployments"][(namespace, name)]
            current = self._current_rs(deployment)
            for pod in self._pods_of(deployment):
                if self._owner_name(pod) != current["metadata"]["name"]:
                    self._delete_pod(pod)
                else:
                    self._pending.pop(self._key(pod), None)
                    self._start_pod(pod, stuck="")
            missing = deployment["spec"]["replicas"] - len(self._pods_of(deployment))
            for _ in range(missing):
                self._new_pod(current, started=True)
            self._sync_status(deployment, record_progress=False)

    def deployment(self, namespace: str, name: str) -> Obj:
        with self._lock:
            return copy.deepcopy(self._store["deployments"][(namespace, name)])

    def replicasets(self, namespace: str, deployment: str) -> list[Obj]:
        with self._lock:
            return [
                copy.deepcopy(rs)
                for (ns, _), rs in self._store["replicasets"].items()
                if ns == namespace and self._owner_name(rs) == deployment
            ]

    def pods(self, namespace: str) -> list[Obj]:
        with self._lock:
            return [
                copy.deepcopy(p) for (ns, _), p in self._store["pods"].items() if ns == namespace
            ]

    @property
    def requests(self) -> list[KubeRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path_contains: str) -> list[KubeRequest]:
        return [r for r in self.requests if path_contains in r.path]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll ``condition`` under the lock until it is truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                value = condition()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError("fake Kubernetes: condition not reached in time")

    # ------------------------------------------------------------------ the controller
    async def _control_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                with self._lock:
                    for deployment in list(self._store["deployments"].values()):
                        self._reconcile(deployment)
            except Exception as exc:  # a bug in the fake must fail the test, not hang it
                self.violations.append(f"controller crashed: {exc!r}")

    @staticmethod
    def _owner_name(obj: Obj) -> str:
        owners = obj["metadata"].get("ownerReferences") or []
        return owners[0]["name"] if owners else ""

    def _rs_of(self, deployment: Obj) -> list[Obj]:
        meta = deployment["metadata"]
        return [
            rs
            for (ns, _), rs in self._store["replicasets"].items()
            if ns == meta["namespace"] and self._owner_name(rs) == meta["name"]
        ]

    def _current_rs(self, deployment: Obj) -> Obj:
        wanted = canonical(deployment["spec"]["template"])
        for rs in self._rs_of(deployment):
            if canonical(without_hash_label(rs["spec"]["template"])) == wanted:
                return rs
        raise AssertionError("deployment not observed yet")

    def _pods_of(self, deployment: Obj) -> list[Obj]:
        names = {rs["metadata"]["name"] for rs in self._rs_of(deployment)}
        namespace = deployment["metadata"]["namespace"]
        return [
            pod
            for (ns, _), pod in self._store["pods"].items()
            if ns == namespace and self._owner_name(pod) in names
        ]

    def _observe(self, deployment: Obj) -> None:
        """A new generation: find the ReplicaSet whose template is the deployment's (exactly,
        as stored) or create one, and give it the next revision."""
        meta, spec = deployment["metadata"], deployment["spec"]
        replicasets = self._rs_of(deployment)
        revisions = [int(rs["metadata"]["annotations"].get(REVISION, "0")) for rs in replicasets]
        wanted = canonical(spec["template"])
        current = next(
            (
                rs
                for rs in replicasets
                if canonical(without_hash_label(rs["spec"]["template"])) == wanted
            ),
            None,
        )
        newest = max(revisions, default=0)
        if current is None:
            digest = template_hash(spec["template"])
            template = copy.deepcopy(spec["template"])
            template["metadata"].setdefault("labels", {})[HASH_LABEL] = digest
            current = {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": metadata(
                    f"{meta['name']}-{digest}",
                    meta["namespace"],
                    time.time(),
                    labels=dict(template["metadata"]["labels"]),
                    annotations={},
                    ownerReferences=[
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": meta["name"],
                            "uid": meta["uid"],
                            "controller": True,
                        }
                    ],
                ),
                "spec": {
                    "replicas": 0,
                    "selector": {
                        "matchLabels": {**spec["selector"]["matchLabels"], HASH_LABEL: digest}
                    },
                    "template": template,
                },
                "status": {"replicas": 0},
            }
            reason = "NewReplicaSetCreated"
            message = f'Created new replica set "{meta["name"]}-{digest}"'
        else:
            reason = "FoundNewReplicaSet"
            message = f'Found new replica set "{current["metadata"]["name"]}"'
        own = current["metadata"]["annotations"].get(REVISION)
        revision = own if own is not None and int(own) == newest else str(newest + 1)
        current["metadata"]["annotations"][REVISION] = revision
        current["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] = str(
            spec["replicas"]
        )
        self._put("replicasets", current)
        meta.setdefault("annotations", {})[REVISION] = revision
        deployment["status"]["observedGeneration"] = meta.get("generation", 1)
        self._set_progressing(deployment, "True", reason, message)
        self._rollouts.setdefault((meta["namespace"], meta["name"]), _Rollout())
        self._rollouts[(meta["namespace"], meta["name"])].last_progress = time.monotonic()

    def _set_progressing(self, deployment: Obj, state: str, reason: str, message: str) -> None:
        now = timestamp()
        conditions = [
            c for c in deployment["status"].get("conditions", []) if c["type"] != "Progressing"
        ]
        conditions.append(
            {
                "type": "Progressing",
                "status": state,
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }
        )
        deployment["status"]["conditions"] = conditions

    def _new_pod(self, rs: Obj, *, started: bool = False, age: float = 0.0) -> Obj:
        labels = dict(rs["spec"]["template"]["metadata"]["labels"])
        containers = tuple(c["name"] for c in rs["spec"]["template"]["spec"]["containers"])
        image = rs["spec"]["template"]["spec"]["containers"][0].get("image", "")
        owner = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": rs["metadata"]["name"],
            "uid": rs["metadata"]["uid"],
            "controller": True,
        }
        name = f"{rs['metadata']['name']}-{_suffix()}"
        pod = self.add_pod(
            rs["metadata"]["namespace"],
            name,
            containers=containers,
            labels=labels,
            phase="Running" if started else "Pending",
            ready=started,
            age=age,
            owner=owner,
            image=image,
        )
        if not started:
            self._pending[(pod["metadata"]["namespace"], name)] = time.monotonic()
        return self._store["pods"][(pod["metadata"]["namespace"], name)]

    def _start_pod(self, pod: Obj, stuck: str, message: str = "") -> None:
        """Pending → running and ready, or waiting with ``stuck`` as the reason."""
        for container in pod["status"]["containerStatuses"]:
            if stuck:
                container["state"] = {"waiting": {"reason": stuck, "message": message}}
                container["ready"] = False
                container["restartCount"] += 1
                container["lastState"] = {
                    "terminated": {"exitCode": 1, "reason": "Error", "finishedAt": timestamp()}
                }
            else:
                container["state"] = {"running": {"startedAt": timestamp()}}
                container["ready"] = True
                container["started"] = True
        pod["status"]["phase"] = "Running"
        ready = "False" if stuck else "True"
        for condition in pod["status"]["conditions"]:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition["status"] = ready
        self._put("pods", pod)

    @staticmethod
    def _is_ready(pod: Obj) -> bool:
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"]
        )

    def _reconcile(self, deployment: Obj) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        key = (meta["namespace"], meta["name"])
        rollout = self._rollouts[key]
        if deployment["status"].get("observedGeneration", 0) < meta.get("generation", 1):
            self._observe(deployment)
            self._sync_status(deployment)
            return
        current = self._current_rs(deployment)
        pods = self._pods_of(deployment)
        new = [p for p in pods if self._owner_name(p) == current["metadata"]["name"]]
        old = [p for p in pods if p not in new]
        desired = spec["replicas"]
        progressed = False
        for pod in new:
            pod_key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
            if pod_key in self._pending:
                del self._pending[pod_key]
                self._start_pod(pod, rollout.stuck_reason, rollout.stuck_message)
                if rollout.stuck_reason:
                    self.add_event(
                        meta["namespace"],
                        "Pod",
                        pod["metadata"]["name"],
                        "BackOff",
                        f"Back-off restarting failed container in pod {pod['metadata']['name']}",
                        type="Warning",
                        age=0,
                    )
                else:
                    progressed = True
                return self._sync_status(deployment, record_progress=progressed)
        ready_new = [p for p in new if self._is_ready(p)]
        if len(new) > desired:
            self._delete_pod(new[-1])
            progressed = True
        elif old and len(ready_new) + len([p for p in old if self._is_ready(p)]) > desired:
            self._delete_pod(old[0])
            progressed = True
        elif old and len(new) < desired and len(new) + len(old) < desired + 1:
            self._new_pod(current)  # surge by one pod, never more
        elif not old and len(new) < desired:
            self._new_pod(current)
        self._sync_status(deployment, record_progress=progressed)

    @staticmethod
    def _key(obj: Obj) -> Key:
        return (obj["metadata"].get("namespace"), obj["metadata"]["name"])

    def _delete_pod(self, pod: Obj) -> None:
        key = self._key(pod)
        self._store["pods"].pop(key, None)
        self._pending.pop(key, None)
        self._notify("pods", "DELETED", pod)

    def _sync_status(self, deployment: Obj, record_progress: bool = True) -> None:
        meta, spec = deployment["metadata"], deployment["spec"]
        rollout = self._rollouts[(meta["namespace"], meta["name"])]
        current = self._current_rs(deployment)
        pods = self._pods_of(deployment)
        new = [p for p in pods if self._owner_name(p) == current["metadata"]["name"]]
        ready = [p for p in pods if self._is_ready(p)]
        before = copy.deepcopy(deployment["status"])
        state = deployment["status"]
        state.update(
            {
                "replicas": len(pods),
                "updatedReplicas": len(new),
                "readyReplicas": len(ready),
                "availableReplicas": len(ready),
                "unavailableReplicas": max(len(pods) - len(ready), 0),
            }
        )
        complete = len(new) == spec["replicas"] == len(pods) and len(ready) >= spec["replicas"]
        available = len(ready) >= spec["replicas"] - 1 or spec["replicas"] == 0
        conditions = [c for c in state.get("conditions", []) if c["type"] != "Available"]
        conditions.insert(
            0,
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
                "lastUpdateTime": timestamp(),
                "lastTransitionTime": timestamp(),
            },
        )
        state["conditions"] = conditions
        if record_progress:
            rollout.last_progress = time.monotonic()
            if complete:
                self._set_progressing(
                    deployment,
                    "True",
                    "NewReplicaSetAvailable",
                    f'ReplicaSet "{current["metadata"]["name"]}" has successfully progressed.',
                )
            else:
                self._set_progressing(
                    deployment,
                    "True",
                    "ReplicaSetUpdated",
                    f'ReplicaSet "{current["metadata"]["name"]}" is progressing.',
                )
        elif not complete and (
            time.monotonic() - rollout.last_progress > spec.get("progressDeadlineSeconds", 600)
        ):
            progressing = next((c for c in state["conditions"] if c["type"] == "Progressing"), None)
            if progressing is None or progressing["reason"] != "ProgressDeadlineExceeded":
                self._set_progressing(
                    deployment,
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{current["metadata"]["name"]}" has timed out progressing.',
                )
        for rs in self._rs_of(deployment):
            owned = [p for p in pods if self._owner_name(p) == rs["metadata"]["name"]]
            rs_state = {
                "replicas": len(owned),
                "readyReplicas": len([p for p in owned if self._is_ready(p)]),
                "availableReplicas": len([p for p in owned if self._is_ready(p)]),
                "observedGeneration": 1,
            }
            wanted = spec["replicas"] if rs is current else len(owned)
            if rs["status"] != rs_state or rs["spec"]["replicas"] != wanted:
                rs["status"], rs["spec"]["replicas"] = rs_state, wanted
                self._put("replicasets", rs)
        comparable = ("lastUpdateTime", "lastTransitionTime")

        def strip(value: Obj) -> Obj:
            value = copy.deepcopy(value)
            for condition in value.get("conditions", []):
                for name in comparable:
                    condition.pop(name, None)
            return value

        if strip(before) != strip(state):
            self._put("deployments", deployment)

    # ------------------------------------------------------------------ watch
    def _notify(self, resource: str, kind: str, obj: Obj) -> None:
        snapshot = copy.deepcopy(obj)
        for watcher in self._watchers:
            if watcher.resource != resource:
                continue
            if watcher.namespace and snapshot["metadata"].get("namespace") != watcher.namespace:
                continue
            if not matches_labels(watcher.label_selector, snapshot["metadata"].get("labels", {})):
                continue
            if not matches_fields(watcher.field_selector, snapshot):
                continue
            event = {"type": kind, "object": snapshot}
            watcher.loop.call_soon_threadsafe(watcher.queue.put_nowait, event)

    # ------------------------------------------------------------------ HTTP
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        query = dict(request.query)
        auth = request.headers.get("Authorization", "")
        user = request.headers.get("Impersonate-User", "")
        groups = tuple(request.headers.getall("Impersonate-Group", []))
        impersonated = bool(user)
        effective = user or BOT_USER
        ctx = _Ctx(
            request.method, request.path, query, raw, request.content_type, effective, groups
        )
        try:
            if auth != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if impersonated and not self.impersonation_allowed:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'users "{user}" is forbidden: User "{BOT_USER}" cannot impersonate '
                    'resource "users" in API group "" at the cluster scope',
                    {"name": user, "kind": "users"},
                )
            self._apply_faults(ctx)
            if query.get("watch") in ("true", "1"):
                response = await self._watch(request, ctx)
            else:
                with self._lock:
                    response = self._handle(ctx)
        except ApiError as error:
            response = web.json_response(error.body, status=error.code)
        except Exception as exc:
            self.violations.append(f"fake server crashed on {ctx.method} {ctx.path}: {exc!r}")
            body = status(500, "InternalError", f"fake server error: {exc!r}")
            response = web.json_response(body, status=500)
        if not ctx.recorded:
            self._record(ctx, response.status)
        return response

    def _record(self, ctx: _Ctx, code: int) -> None:
        with self._lock:
            impersonated = ctx.user != BOT_USER
            self._requests.append(
                KubeRequest(
                    ctx.method, ctx.path, ctx.query, ctx.user, ctx.groups, impersonated, code
                )
            )
        ctx.recorded = True

    def _apply_faults(self, ctx: _Ctx) -> None:
        with self._lock:
            for fault in self._faults:
                if (
                    fault.remaining
                    and fault.method == ctx.method
                    and (fault.path_contains in ctx.path)
                ):
                    fault.remaining -= 1
                    raise ApiError(fault.code, fault.reason, fault.message)

    def _route(self, path: str) -> tuple[str, str, str | None, str, str, str]:
        """(group, version, namespace, resource, name, subresource) of a resource path."""
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        elif len(rest) == 2 and rest[0] == "namespaces":
            return group, version, None, "namespaces", rest[1], ""
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        expected = RESOURCES.get(resource)
        served = expected and (expected[0], expected[1]) == (group, version)
        if not served and not (group, version, resource) == ("events.k8s.io", "v1", "events"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return group, version, namespace, resource, name, sub

    @staticmethod
    def _verb(method: str, name: str, watch: bool) -> str:
        if watch:
            return "watch"
        return {
            "GET": "get" if name else "list",
            "PATCH": "patch",
            "PUT": "update",
            "DELETE": "delete",
            "POST": "create",
        }.get(method, method.lower())

    def _authorize(
        self, verb: str, group: str, namespace: str | None, resource: str, name: str, user: str
    ) -> None:
        for rule in self._denies:
            if (
                rule.verb == verb
                and rule.resource == resource
                and rule.namespace in (None, namespace)
                and rule.user in (None, user)
            ):
                plain = resource.split("/")[0]
                shown = f"{plain}.{group}" if group else plain
                if name:
                    shown += f' "{name}"'
                where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{shown} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
                    f'in API group "{group}"{where}',
                    {"name": name, "group": group, "kind": plain},
                )

    def _discovery(self, path: str) -> Obj | None:
        if path == "/version":
            return SERVER_VERSION
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self._port}"}
                ],
            }
        if path == "/apis":
            groups = [("apps", "v1"), ("events.k8s.io", "v1"), ("autoscaling", "v1")]
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": name,
                        "versions": [{"groupVersion": f"{name}/{v}", "version": v}],
                        "preferredVersion": {"groupVersion": f"{name}/{v}", "version": v},
                    }
                    for name, v in groups
                ],
            }
        for prefix, group_version in (("/api/v1", "v1"), ("/apis/apps/v1", "apps/v1")):
            if path == prefix:
                group = group_version.rpartition("/")[0]
                return {
                    "kind": "APIResourceList",
                    "groupVersion": group_version,
                    "resources": [
                        {
                            "name": resource,
                            "singularName": kind.lower(),
                            "namespaced": resource != "namespaces",
                            "kind": kind,
                            "verbs": ["get", "list", "watch", "patch", "update", "delete"],
                        }
                        for resource, (g, _, kind) in RESOURCES.items()
                        if g == group
                    ],
                }
        return None

    def _handle(self, ctx: _Ctx) -> web.Response:
        found = self._discovery(ctx.path.rstrip("/") or "/")
        if found is not None:
            return web.json_response(found)
        group, version, namespace, resource, name, sub = self._route(ctx.path)
        full = f"{resource}/{sub}" if sub else resource
        verb = self._verb(ctx.method, name, False)
        self._authorize(verb, group, namespace, full, name, ctx.user)
        if ctx.method == "GET" and not name:
            return web.json_response(self._list(group, version, namespace, resource, ctx.query))
        obj = self._get(resource, namespace, name, group)
        if sub == "log" and ctx.method == "GET":
            return web.Response(text=self._log(obj, ctx.query), content_type="text/plain")
        if sub == "scale":
            return web.json_response(self._scale(obj, ctx))
        if sub:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if ctx.method == "GET":
            return web.json_response(obj)
        if ctx.method == "DELETE" and resource == "pods":
            self._delete_pod(obj)
            return web.json_response(obj)
        if ctx.method == "PATCH" and resource == "deployments":
            return web.json_response(self._patch_deployment(obj, ctx))
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on {full}")

    def _get(self, resource: str, namespace: str | None, name: str, group: str) -> Obj:
        obj = self._store[resource].get((namespace, name))
        if obj is None:
            kind = f"{resource}.{group}" if group else resource
            raise ApiError(
                404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": resource}
            )
        return obj

    def _selected(self, namespace: str | None, resource: str, query: dict[str, str]) -> list[Obj]:
        try:
            return [
                obj
                for (ns, _), obj in self._store[resource].items()
                if (namespace is None or ns == namespace)
                and matches_labels(query.get("labelSelector"), obj["metadata"].get("labels", {}))
                and matches_fields(query.get("fieldSelector"), obj)
            ]
        except ValueError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None

    def _list(
        self, group: str, version: str, namespace: str | None, resource: str, query: dict[str, str]
    ) -> Obj:
        items = self._selected(namespace, resource, query)
        if group == "events.k8s.io":
            items = [self._events_v1(event) for event in items]
            return object_list("Event", "events.k8s.io/v1", items, self._rv)
        kind = RESOURCES[resource][2]
        api_version = f"{group}/{version}" if group else version
        return object_list(kind, api_version, items, self._rv)

    @staticmethod
    def _events_v1(event: Obj) -> Obj:
        """The events.k8s.io/v1 view of a core event, ``eventTime: null`` included."""
        return {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": event["metadata"],
            "eventTime": None,
            "reason": event["reason"],
            "note": event["message"],
            "type": event["type"],
            "regarding": event["involvedObject"],
            "deprecatedCount": event["count"],
            "deprecatedFirstTimestamp": event["firstTimestamp"],
            "deprecatedLastTimestamp": event["lastTimestamp"],
            "deprecatedSource": event["source"],
            "reportingController": event["reportingComponent"],
            "reportingInstance": "",
        }

    def _log(self, pod: Obj, query: dict[str, str]) -> str:
        containers = [c["name"] for c in pod["spec"]["containers"]]
        name = pod["metadata"]["name"]
        container = query.get("container", "")
        if not container:
            if len(containers) > 1:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(containers)}]",
                )
            container = containers[0]
        if container not in containers:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        previous = query.get("previous") in ("true", "1")
        key = (pod["metadata"]["namespace"], name, container, previous)
        if previous and key not in self._logs:
            raise ApiError(
                400,
                "BadRequest",
                f'previous terminated container "{container}" in pod "{name}" not found',
            )
        lines = self._logs.get(key, [])
        if "sinceSeconds" in query:
            oldest = time.time() - int(query["sinceSeconds"])
            lines = [line for line in lines if line[0] >= oldest]
        if "tailLines" in query:
            tail = int(query["tailLines"])
            lines = lines[-tail:] if tail else []
        stamped = query.get("timestamps") in ("true", "1")
        return "".join((f"{timestamp(at)} " if stamped else "") + text + "\n" for at, text in lines)

    def _scale_of(self, deployment: Obj) -> Obj:
        meta = deployment["metadata"]
        selector = ",".join(
            f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
        )
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": deployment["spec"]["replicas"]},
            "status": {
                "replicas": deployment["status"].get("replicas", 0),
                "selector": selector,
            },
        }

    def _body(self, ctx: _Ctx) -> Any:
        try:
            return json.loads(ctx.body or b"null")
        except ValueError:
            raise ApiError(
                400, "BadRequest", "the body of the request was in an unknown format"
            ) from None

    def _scale(self, deployment: Obj, ctx: _Ctx) -> Obj:
        scale = self._scale_of(deployment)
        if ctx.method == "GET":
            return scale
        body = self._body(ctx)
        if ctx.method == "PUT":
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if sent and sent != scale["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    "Operation cannot be fulfilled on deployments.apps "
                    f'"{scale["metadata"]["name"]}": '
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            new = body
        elif ctx.method == "PATCH":
            new = self._patched(scale, body, ctx.content_type)
        else:
            raise ApiError(405, "MethodNotAllowed", "method not allowed on scale")
        replicas = (new.get("spec") or {}).get("replicas")
        self._set_spec(deployment, {**deployment["spec"], "replicas": replicas})
        return self._scale_of(deployment)

    @staticmethod
    def _patched(obj: Obj, body: Any, content_type: str) -> Obj:
        try:
            if content_type == "application/json-patch+json":
                if not isinstance(body, list):
                    raise ValueError("a JSON patch is a list of operations")
                return json_patch(obj, body)
            if content_type in (
                "application/strategic-merge-patch+json",
                "application/merge-patch+json",
            ):
                return merge_patch(obj, body)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {exc}") from None
        raise ApiError(
            415, "UnsupportedMediaType", f"the media type {content_type!r} is not supported"
        )

    def _patch_deployment(self, deployment: Obj, ctx: _Ctx) -> Obj:
        patched = self._patched(deployment, self._body(ctx), ctx.content_type)
        deployment["metadata"]["annotations"] = patched["metadata"].get("annotations") or {}
        self._set_spec(deployment, patched["spec"])
        return deployment

    def _set_spec(self, deployment: Obj, spec: Obj) -> None:
        """Validate like the API server, store, and bump the generation on a change."""
        name = deployment["metadata"]["name"]
        replicas = spec.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise ApiError(
                422,
                "Invalid",
                f'Deployment.apps "{name}" is invalid: spec.replicas: Invalid value: '
                f"{json.dumps(replicas)}: must be greater than or equal to 0",
                {"name": name, "group": "apps", "kind": "Deployment"},
            )
        labels = (spec.get("template", {}).get("metadata") or {}).get("labels") or {}
        wanted = spec["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in wanted.items()):
            raise ApiError(
                422,
                "Invalid",
                f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: '
                "Invalid value: `selector` does not match template `labels`",
                {"name": name, "group": "apps", "kind": "Deployment"},
            )
        if canonical(spec) != canonical(deployment["spec"]):
            deployment["spec"] = spec
            deployment["metadata"]["generation"] = deployment["metadata"].get("generation", 1) + 1
        self._put("deployments", deployment)

    async def _watch(self, request: web.Request, ctx: _Ctx) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        with self._lock:
            group, _, namespace, resource, name, _ = self._route(ctx.path)
            self._authorize("watch", group, namespace, resource, name, ctx.user)
            watcher = _Watcher(
                resource,
                namespace,
                ctx.query.get("labelSelector", ""),
                ctx.query.get("fieldSelector", ""),
                asyncio.Queue(),
                loop,
            )
            since = int(ctx.query.get("resourceVersion") or 0)
            initial = [
                {"type": "ADDED" if not since else "MODIFIED", "object": copy.deepcopy(obj)}
                for obj in self._selected(namespace, resource, ctx.query)
                if int(obj["metadata"]["resourceVersion"]) > since
            ]
            self._watchers.append(watcher)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        self._record(ctx, response.status)  # now: a watch may last long
        deadline = loop.time() + float(ctx.query.get("timeoutSeconds") or 1800)
        try:
            for first in initial:
                await response.write(json.dumps(first).encode() + b"\n")
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), left)
                except TimeoutError:
                    break
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._watchers.remove(watcher)
        return response

    def watchers(self) -> int:
        """How many watches are open now."""
        with self._lock:
            return len(self._watchers)


def iter_items(listing: Obj) -> Iterator[Obj]:
    yield from listing.get("items", [])
