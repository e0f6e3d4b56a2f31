"""Kubernetes connector: typed, chat-free calls on the official ``kubernetes`` client.

Clusters come from kubeconfig, as kubectl finds it: the ``KUBECONFIG`` path list, else
``~/.kube/config``, else the pod's service account (in-cluster). :class:`KubernetesConnector`
keeps one API client per context, and per impersonated identity: with an :class:`Identity`
every request carries ``Impersonate-User`` and one ``Impersonate-Group`` header per group, so
the cluster's RBAC decides for that person. Every call has connect and read timeouts; reads
(idempotent) are retried on 5xx answers and connection errors, writes never are. Every
failure is a :class:`KubernetesError` (a :class:`bot.connectors.ConnectorError`, so an
:class:`bot.errors.ActionFailed`) with one line saying what went wrong::

    connector = KubernetesConnector(KubeConfig.from_environment())
    cluster = connector.cluster("staging", Identity("alice", ("sre",)))
    pods = cluster.pods("web", label_selector="app=api")
    cluster.restart("web", "api")
    final = cluster.follower("web", "api").run(progress=print, timeout=600)

Nothing here knows about chat, the inventory or the policy.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential
from urllib3._collections import HTTPHeaderDict

from bot.connectors import ConnectorError

__all__ = [
    "IN_CLUSTER",
    "RESTARTED_AT",
    "Cluster",
    "ContainerInfo",
    "DeploymentInfo",
    "EventInfo",
    "Identity",
    "KubeConfig",
    "KubernetesConnector",
    "KubernetesError",
    "PodInfo",
    "RevisionInfo",
    "RolloutFollower",
    "RolloutState",
    "UndoResult",
    "age",
    "kubernetes_connector",
    "missing_contexts",
]

T = TypeVar("T")
IN_CLUSTER = "in-cluster"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
# What `kubectl rollout undo` keeps of the deployment's own annotations instead of copying
# the ReplicaSet's (k8s.io/kubectl/pkg/polymorphichelpers/rollback.go, annotationsToSkip).
_UNDO_SKIPPED_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)
_SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubernetesError(ConnectorError):
    """A Kubernetes call failed; ``host`` is the kubeconfig context, ``status`` the HTTP
    status when the API answered (0 when it did not)."""

    def __init__(self, context: str, message: str, status: int = 0) -> None:
        super().__init__(context, message)
        self.status = status


# --- kubeconfig ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class KubeConfig:
    """Where clusters come from: kubeconfig files (merged in order, as kubectl does), or
    the in-cluster service account when there are none."""

    paths: tuple[Path, ...]
    in_cluster: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> KubeConfig:
        """``KUBECONFIG`` (a path list), else ``~/.kube/config``, else in-cluster."""
        environ = os.environ if environ is None else environ
        listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep)]
        existing = tuple(p for p in listed if str(p) not in ("", ".") and p.is_file())
        if existing:
            return cls(existing)
        default = Path("~/.kube/config").expanduser()
        if default.is_file():
            return cls((default,))
        return cls((), in_cluster=_SERVICE_ACCOUNT_TOKEN.is_file())

    def describe(self) -> str:
        if self.paths:
            return os.pathsep.join(str(p) for p in self.paths)
        if self.in_cluster:
            return "the in-cluster service account"
        return "no kubeconfig (KUBECONFIG unset, no ~/.kube/config, not in a pod)"

    def contexts(self) -> list[str]:
        """The context names available; in-cluster there is one, ``in-cluster``."""
        if not self.paths:
            return [IN_CLUSTER] if self.in_cluster else []
        try:
            contexts, _ = config.list_kube_config_contexts(config_file=self.describe())
        except (ConfigException, OSError, ValueError) as exc:
            raise KubernetesError("kubeconfig", f"cannot read {self.describe()}: {exc}") from None
        return [c["name"] for c in contexts or []]

    def configuration(self, context: str) -> client.Configuration:
        cfg = client.Configuration()
        try:
            if self.paths:
                config.load_kube_config(
                    config_file=self.describe(),
                    context=context,
                    client_configuration=cfg,
                    persist_config=False,
                )
            elif self.in_cluster and context == IN_CLUSTER:
                config.load_incluster_config(client_configuration=cfg)
            else:
                raise ConfigException(f"no context {context!r} in {self.describe()}")
        except (ConfigException, OSError, ValueError) as exc:
            raise KubernetesError(context, f"cannot use context {context}: {exc}") from None
        return cfg


def missing_contexts(kubeconfig: KubeConfig, wanted: Mapping[str, str]) -> dict[str, str]:
    """``{key: problem}`` for each wanted context (keyed by whatever names it, e.g. the
    inventory key) that the kubeconfig lacks; empty when all exist."""
    if not wanted:
        return {}
    try:
        available = kubeconfig.contexts()
    except KubernetesError as exc:
        return dict.fromkeys(wanted, str(exc))
    shown = ", ".join(available) or "none"
    return {
        key: f"no context {context!r} in {kubeconfig.describe()} (contexts there: {shown})"
        for key, context in wanted.items()
        if context not in available
    }


# --- who the calls are made as ------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """The user (and groups) the API server is asked to act as."""

    user: str
    groups: tuple[str, ...] = ()


class _ImpersonatingPool:
    """The client's urllib3 pool, adding the impersonation headers to every request.

    ``Impersonate-Group`` must be one header per group (the API server does not split a
    comma list), which the client's own header dict cannot express."""

    def __init__(self, pool: Any, identity: Identity) -> None:
        self._pool = pool
        self._identity = identity

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = HTTPHeaderDict(kwargs.pop("headers", None) or {})
        headers["Impersonate-User"] = self._identity.user
        for group in self._identity.groups:
            headers.add("Impersonate-Group", group)
        return self._pool.request(method, url, *args, headers=headers, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


# --- what the calls return ----------------------------------------------------------------------
def age(since: datetime.datetime | None, now: datetime.datetime | None = None) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d."""
    if since is None:
        return "<unknown>"
    now = now or datetime.datetime.now(datetime.UTC)
    seconds = max(int((now - since).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    image: str
    ready: bool
    restarts: int
    state: str  # running, waiting: CrashLoopBackOff, terminated: Error (exit 1)
    last_termination: str  # e.g. OOMKilled (exit 137), or ""

    @property
    def reason(self) -> str:
        """Why it is not running, for a failure report."""
        detail = self.state.partition(": ")[2]
        return detail or self.state


@dataclass(frozen=True)
class PodInfo:
    """A pod as ``kubectl get pods`` shows it, and what ``describe`` adds."""

    name: str
    namespace: str
    phase: str
    status: str  # kubectl's STATUS column
    ready: int
    total: int
    restarts: int
    created: datetime.datetime | None
    node: str
    conditions: tuple[tuple[str, str], ...]  # (type, status)
    containers: tuple[ContainerInfo, ...]
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def failing(self) -> bool:
        """Not doing what it should: failed, pending, or running with a container not
        ready (a completed pod is fine)."""
        if self.phase == "Succeeded":
            return False
        return self.phase != "Running" or self.ready < self.total

    @property
    def ready_text(self) -> str:
        return f"{self.ready}/{self.total}"


@dataclass(frozen=True)
class EventInfo:
    type: str
    reason: str
    object: str  # kind/name
    message: str
    count: int
    last_seen: datetime.datetime | None


@dataclass(frozen=True)
class DeploymentInfo:
    name: str
    namespace: str
    desired: int
    updated: int
    ready: int
    available: int
    created: datetime.datetime | None
    revision: str
    images: tuple[str, ...]


@dataclass(frozen=True)
class RevisionInfo:
    revision: int
    replicaset: str
    images: tuple[str, ...]
    created: datetime.datetime | None


@dataclass(frozen=True)
class UndoResult:
    revision: int  # the revision rolled back to
    skipped: bool  # the deployment already runs that template: nothing was changed


@dataclass(frozen=True)
class RolloutState:
    """Where a deployment's rollout is, read from ``observedGeneration`` and the replica
    counts first; the ``Progressing`` condition only decides between waiting and failed."""

    generation: int
    observed: int
    desired: int
    updated: int
    ready: int
    available: int
    total: int
    reason: str  # of the Progressing condition
    message: str

    @property
    def observed_current(self) -> bool:
        return self.observed >= self.generation

    @property
    def complete(self) -> bool:
        return (
            self.observed_current
            and self.updated >= self.desired
            and self.total == self.updated
            and self.available >= self.updated
        )

    @property
    def failed(self) -> bool:
        """Past its progress deadline and not complete. A stale ProgressDeadlineExceeded
        condition on a deployment whose counts are complete is not a failure."""
        return (
            self.observed_current
            and not self.complete
            and self.reason == "ProgressDeadlineExceeded"
        )

    def describe(self) -> str:
        if not self.observed_current:
            return "waiting for the controller to see the change"
        text = f"{self.updated}/{self.desired} updated, {self.ready} ready"
        old = self.total - self.updated
        return f"{text}, {old} old pending termination" if old > 0 else text


def rollout_state(deployment: client.V1Deployment) -> RolloutState:
    status = deployment.status or client.V1DeploymentStatus()
    progressing = next((c for c in status.conditions or [] if c.type == "Progressing"), None)
    return RolloutState(
        generation=deployment.metadata.generation or 0,
        observed=status.observed_generation or 0,
        desired=deployment.spec.replicas if deployment.spec.replicas is not None else 1,
        updated=status.updated_replicas or 0,
        ready=status.ready_replicas or 0,
        available=status.available_replicas or 0,
        total=status.replicas or 0,
        reason=(progressing.reason or "") if progressing else "",
        message=(progressing.message or "") if progressing else "",
    )


def _container(status: client.V1ContainerStatus) -> ContainerInfo:
    state, last = status.state, status.last_state
    if state and state.waiting:
        shown = f"waiting: {state.waiting.reason or 'unknown'}"
    elif state and state.terminated:
        shown = (
            f"terminated: {state.terminated.reason or 'exit'} (exit {state.terminated.exit_code})"
        )
    else:
        shown = "running"
    previous = ""
    if last and last.terminated:
        previous = f"{last.terminated.reason or 'exit'} (exit {last.terminated.exit_code})"
    return ContainerInfo(
        name=status.name,
        image=status.image or "",
        ready=bool(status.ready),
        restarts=status.restart_count or 0,
        state=shown,
        last_termination=previous,
    )


def _pod_status(pod: client.V1Pod, containers: Sequence[ContainerInfo]) -> str:
    """kubectl's STATUS: a waiting or terminated container's reason wins over the phase."""
    if pod.metadata.deletion_timestamp:
        return "Terminating"
    reason = (pod.status.reason if pod.status else None) or (
        pod.status.phase if pod.status else None
    )
    for container in containers:
        if container.state != "running":
            detail = container.state.partition(": ")[2]
            reason = detail.partition(" (")[0] or reason
    return reason or "Unknown"


def pod_info(pod: client.V1Pod) -> PodInfo:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    containers = tuple(_container(s) for s in statuses)
    total = len(pod.spec.containers) if pod.spec else len(containers)
    return PodInfo(
        name=pod.metadata.name,
        namespace=pod.metadata.namespace or "",
        phase=(pod.status.phase if pod.status else None) or "Unknown",
        status=_pod_status(pod, containers),
        ready=sum(c.ready for c in containers),
        total=total,
        restarts=sum(c.restarts for c in containers),
        created=pod.metadata.creation_timestamp,
        node=(pod.spec.node_name if pod.spec else None) or "",
        conditions=tuple(
            (c.type, c.status) for c in ((pod.status.conditions if pod.status else None) or [])
        ),
        containers=containers,
        labels=dict(pod.metadata.labels or {}),
    )


def _event(event: client.CoreV1Event) -> EventInfo:
    involved = event.involved_object
    return EventInfo(
        type=event.type or "",
        reason=event.reason or "",
        object=f"{(involved.kind or '').lower()}/{involved.name}",
        message=(event.message or "").strip(),
        count=event.count or 1,
        last_seen=event.last_timestamp or event.event_time or event.metadata.creation_timestamp,
    )


def _images(template: client.V1PodTemplateSpec) -> tuple[str, ...]:
    return tuple(c.image or "" for c in template.spec.containers)


# --- errors -------------------------------------------------------------------------------------
def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return str(exc.reason or "").strip()
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return str(exc.reason or "").strip()


def _failure(context: str, exc: Exception, doing: str) -> KubernetesError:
    """One line for a failed call: what was being done, and why it failed."""
    if isinstance(exc, ApiException):
        code = int(exc.status or 0)
        message = _status_message(exc)
        if code == 401:
            text = (
                f"cluster {context} refused the bot's credentials (401 Unauthorized): "
                "check the kubeconfig's user for this context"
            )
        elif code == 403:
            text = f"forbidden by cluster {context}: {message}"
        elif code == 404:
            text = f"not found in {context}: {message}"
        elif code == 409:
            text = f"conflict in {context}: {message}"
        elif code == 422:
            text = f"invalid for {context}: {message}"
        else:
            text = f"cluster {context} answered {code} while {doing}: {message}"
        return KubernetesError(context, text, code)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # NewConnectionError (refused, no route) is a ConnectTimeoutError in urllib3: test it first.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
        exc, urllib3.exceptions.NewConnectionError
    ):
        return KubernetesError(context, f"cluster {context} did not answer in time while {doing}")
    if isinstance(exc, urllib3.exceptions.SSLError):
        return KubernetesError(context, f"cluster {context}: TLS failed while {doing}: {exc}")
    reason = str(exc).rpartition(": ")[2] or type(exc).__name__
    return KubernetesError(context, f"cluster {context} is unreachable ({reason}) while {doing}")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ApiException):
        return int(exc.status or 0) >= 500
    if isinstance(exc, urllib3.exceptions.MaxRetryError):
        exc = exc.reason or exc
    return isinstance(exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError)


# --- one cluster, as one identity ---------------------------------------------------------------
class Cluster:
    """The calls Opsroom makes on one context, as one identity. Thread-safe."""

    def __init__(
        self,
        context: str,
        api: client.ApiClient,
        *,
        connect_timeout: float,
        read_timeout: float,
        attempts: int,
    ) -> None:
        self.context = context
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.timeouts = (connect_timeout, read_timeout)
        self.attempts = attempts

    def _read(self, doing: str, call: Callable[[], T]) -> T:
        """An idempotent read: retried on 5xx and connection errors."""
        retrying = Retrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.2, max=2.0),
            reraise=True,
        )
        try:
            return retrying(call)
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise _failure(self.context, exc, doing) from None

    def _write(self, doing: str, call: Callable[[], T]) -> T:
        """A write: tried once (it may have been applied even if the answer was lost)."""
        try:
            return call()
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            raise _failure(self.context, exc, doing) from None

    # --- reads ---------------------------------------------------------------------------
    def version(self) -> str:
        info = self._read(
            "reading the version",
            lambda: client.VersionApi(self.api).get_code(_request_timeout=self.timeouts),
        )
        return str(info.git_version)

    def namespaces(self) -> list[str]:
        listing = self._read(
            "listing namespaces",
            lambda: self.core.list_namespace(_request_timeout=self.timeouts),
        )
        return [item.metadata.name for item in listing.items]

    def pods(self, namespace: str, label_selector: str = "") -> list[PodInfo]:
        listing = self._read(
            f"listing pods in {namespace}",
            lambda: self.core.list_namespaced_pod(
                namespace, label_selector=label_selector or None, _request_timeout=self.timeouts
            ),
        )
        return [pod_info(pod) for pod in listing.items]

    def pod(self, namespace: str, name: str) -> PodInfo:
        pod = self._read(
            f"reading pod {name}",
            lambda: self.core.read_namespaced_pod(name, namespace, _request_timeout=self.timeouts),
        )
        return pod_info(pod)

    def logs(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None = None,
        tail: int | None = None,
        since_seconds: int | None = None,
        previous: bool = False,
    ) -> str:
        """A container's log (the client has no sinceTime; ``since_seconds`` it has)."""
        return self._read(
            f"reading the log of {pod}",
            lambda: self.core.read_namespaced_pod_log(
                pod,
                namespace,
                container=container,
                tail_lines=tail,
                since_seconds=since_seconds,
                previous=previous or None,
                _request_timeout=self.timeouts,
            ),
        )

    def events(
        self,
        namespace: str,
        *,
        warnings_only: bool = False,
        kind: str = "",
        name: str = "",
    ) -> list[EventInfo]:
        """Events, oldest first. Read through core/v1: client v37's events.k8s.io/v1 model
        rejects the ``eventTime: null`` that kubelet and controllers write."""
        fields = []
        if warnings_only:
            fields.append("type=Warning")
        if kind:
            fields.append(f"involvedObject.kind={kind}")
        if name:
            fields.append(f"involvedObject.name={name}")
        listing = self._read(
            f"listing events in {namespace}",
            lambda: self.core.list_namespaced_event(
                namespace,
                field_selector=",".join(fields) or None,
                _request_timeout=self.timeouts,
            ),
        )
        events = [_event(e) for e in listing.items]
        epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
        return sorted(events, key=lambda e: e.last_seen or epoch)

    def deployments(self, namespace: str) -> list[DeploymentInfo]:
        listing = self._read(
            f"listing deployments in {namespace}",
            lambda: self.apps.list_namespaced_deployment(namespace, _request_timeout=self.timeouts),
        )
        return [self._deployment_info(d) for d in listing.items]

    @staticmethod
    def _deployment_info(d: client.V1Deployment) -> DeploymentInfo:
        state = rollout_state(d)
        return DeploymentInfo(
            name=d.metadata.name,
            namespace=d.metadata.namespace or "",
            desired=state.desired,
            updated=state.updated,
            ready=state.ready,
            available=state.available,
            created=d.metadata.creation_timestamp,
            revision=(d.metadata.annotations or {}).get(REVISION, ""),
            images=_images(d.spec.template),
        )

    def deployment(self, namespace: str, name: str) -> client.V1Deployment:
        return self._read(
            f"reading deployment {name}",
            lambda: self.apps.read_namespaced_deployment(
                name, namespace, _request_timeout=self.timeouts
            ),
        )

    def rollout(self, namespace: str, name: str) -> RolloutState:
        return rollout_state(self.deployment(namespace, name))

    def failing_pods(self, namespace: str, deployment: str) -> list[PodInfo]:
        """The deployment's pods that are not ready, for a failure report."""
        d = self.deployment(namespace, deployment)
        labels = d.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return [p for p in self.pods(namespace, selector) if p.failing]

    def _replicasets(self, d: client.V1Deployment) -> list[client.V1ReplicaSet]:
        labels = d.spec.selector.match_labels or {}
        listing = self._read(
            f"listing the replica sets of {d.metadata.name}",
            lambda: self.apps.list_namespaced_replica_set(
                d.metadata.namespace,
                label_selector=",".join(f"{k}={v}" for k, v in labels.items()) or None,
                _request_timeout=self.timeouts,
            ),
        )
        return [
            rs
            for rs in listing.items
            if any(o.uid == d.metadata.uid for o in rs.metadata.owner_references or [])
        ]

    def revisions(self, namespace: str, name: str) -> list[RevisionInfo]:
        """The deployment's rollout history, from its ReplicaSets' revision annotations."""
        d = self.deployment(namespace, name)
        found = []
        for rs in self._replicasets(d):
            revision = (rs.metadata.annotations or {}).get(REVISION, "")
            if revision.isdigit():
                found.append(
                    RevisionInfo(
                        int(revision),
                        rs.metadata.name,
                        _images(rs.spec.template),
                        rs.metadata.creation_timestamp,
                    )
                )
        return sorted(found, key=lambda r: r.revision)

    # --- writes --------------------------------------------------------------------------
    def restart(self, namespace: str, name: str, at: datetime.datetime | None = None) -> None:
        """``kubectl rollout restart``: the restartedAt annotation on the pod template."""
        moment = (at or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
        body = {
            "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: moment.isoformat()}}}}
        }
        self._write(
            f"restarting {name}",
            lambda: self.apps.patch_namespaced_deployment(
                name, namespace, body, _request_timeout=self.timeouts
            ),
        )

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """``kubectl scale``: through the scale subresource."""
        self._write(
            f"scaling {name}",
            lambda: self.apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}, _request_timeout=self.timeouts
            ),
        )

    def undo(self, namespace: str, name: str, to_revision: int = 0) -> UndoResult:
        """``kubectl rollout undo``: the chosen ReplicaSet's template (the previous revision
        by default) replaces the deployment's, with a JSON patch that keeps
        ``metadata.creationTimestamp: null`` as kubectl sends it, so that the API server
        finds the old ReplicaSet again instead of starting a new revision."""
        d = self.deployment(namespace, name)
        if d.spec.paused:
            raise KubernetesError(
                self.context, f"deployment {name} is paused; resume it before rolling back"
            )
        by_revision = {
            int(rev): rs
            for rs in self._replicasets(d)
            if (rev := (rs.metadata.annotations or {}).get(REVISION, "")).isdigit()
        }
        if to_revision == 0:
            current = int((d.metadata.annotations or {}).get(REVISION, "0") or 0)
            older = [rev for rev in by_revision if rev != current and rev < max(by_revision)]
            if not older:
                raise KubernetesError(
                    self.context, f"no earlier revision of deployment {name} to roll back to"
                )
            to_revision = max(older)
        rs = by_revision.get(to_revision)
        if rs is None:
            shown = ", ".join(str(r) for r in sorted(by_revision)) or "none"
            raise KubernetesError(
                self.context,
                f"deployment {name} has no revision {to_revision} (revisions: {shown})",
            )
        template = self.api.sanitize_for_serialization(rs.spec.template)
        template_meta = template.setdefault("metadata", {})
        (template_meta.get("labels") or {}).pop(HASH_LABEL, None)
        current_template = self.api.sanitize_for_serialization(d.spec.template)
        current_template.setdefault("metadata", {}).pop("creationTimestamp", None)
        if _same(current_template, template):
            return UndoResult(to_revision, skipped=True)
        template_meta["creationTimestamp"] = None  # what kubectl's Go struct marshals
        annotations = {
            k: v
            for k, v in (d.metadata.annotations or {}).items()
            if k in _UNDO_SKIPPED_ANNOTATIONS
        }
        annotations.update(
            {
                k: v
                for k, v in (rs.metadata.annotations or {}).items()
                if k not in _UNDO_SKIPPED_ANNOTATIONS
            }
        )
        patch = [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ]
        self._write(
            f"rolling back {name}",
            lambda: self.apps.patch_namespaced_deployment(
                name, namespace, patch, _request_timeout=self.timeouts
            ),
        )
        return UndoResult(to_revision, skipped=False)

    def delete_pod(self, namespace: str, name: str) -> None:
        self._write(
            f"deleting pod {name}",
            lambda: self.core.delete_namespaced_pod(
                name, namespace, _request_timeout=self.timeouts
            ),
        )

    # --- following a rollout -------------------------------------------------------------
    def follower(self, namespace: str, name: str) -> RolloutFollower:
        return RolloutFollower(self, namespace, name)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def clean(template: Mapping[str, Any]) -> str:
        copy = json.loads(json.dumps(template))
        copy.get("metadata", {}).pop("creationTimestamp", None)
        return json.dumps(copy, sort_keys=True)

    return clean(a) == clean(b)


class RolloutFollower:
    """Follows a deployment's rollout with a watch (no polling) until it is complete, has
    failed (past its progress deadline) or the time is up; :meth:`stop` ends it from
    another thread at once."""

    WATCH_CHUNK = 60  # seconds per watch request; the follower re-watches from the last version

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._watch is not None:
                self._watch.stop()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def run(self, progress: Callable[[RolloutState], None], timeout: float) -> RolloutState:
        """The last state seen: ``complete``, ``failed``, or neither (stopped, or ``timeout``
        seconds passed)."""
        deadline = time.monotonic() + timeout
        d = self.cluster.deployment(self.namespace, self.name)
        state = rollout_state(d)
        progress(state)
        version = d.metadata.resource_version
        while not (state.complete or state.failed or self.stopped):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for d in self._events(version, min(left, self.WATCH_CHUNK)):
                version = d.metadata.resource_version
                state = rollout_state(d)
                progress(state)
                if state.complete or state.failed:
                    break
        return state

    def _events(self, version: str, seconds: float) -> Iterator[client.V1Deployment]:
        stream = watch.Watch()
        with self._lock:
            if self.stopped:
                return
            self._watch = stream
        cluster = self.cluster
        try:
            for event in stream.stream(
                cluster.apps.list_namespaced_deployment,
                self.namespace,
                field_selector=f"metadata.name={self.name}",
                resource_version=version,
                timeout_seconds=max(int(seconds), 1),
                _request_timeout=(cluster.timeouts[0], seconds + cluster.timeouts[1]),
            ):
                if event["type"] in ("ADDED", "MODIFIED"):
                    yield event["object"]
                elif event["type"] == "DELETED":
                    raise KubernetesError(
                        cluster.context, f"deployment {self.name} was deleted while rolling out"
                    )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            if not self.stopped:
                raise _failure(cluster.context, exc, f"following {self.name}") from None
        finally:
            stream.stop()
            with self._lock:
                self._watch = None


# --- the connector ------------------------------------------------------------------------------
class KubernetesConnector:
    """API clients per context and identity, made on first use and kept. Thread-safe."""

    def __init__(
        self,
        kubeconfig: KubeConfig,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        attempts: int = 3,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempts = attempts
        self._lock = threading.Lock()
        self._clusters: dict[tuple[str, Identity | None], Cluster] = {}

    @cached_property
    def contexts(self) -> list[str]:
        return self.kubeconfig.contexts()

    def cluster(self, context: str, identity: Identity | None = None) -> Cluster:
        key = (context, identity)
        with self._lock:
            found = self._clusters.get(key)
            if found is None:
                cfg = self.kubeconfig.configuration(context)
                # Retries are ours (reads only, tenacity): urllib3 must not retry writes.
                cfg.retries = urllib3.Retry(total=0, redirect=0, raise_on_status=False)
                api = client.ApiClient(configuration=cfg)
                if identity is not None:
                    rest = api.rest_client
                    rest.pool_manager = _ImpersonatingPool(rest.pool_manager, identity)
                found = Cluster(
                    context,
                    api,
                    connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout,
                    attempts=self.attempts,
                )
                self._clusters[key] = found
            return found

    def close(self) -> None:
        with self._lock:
            clusters, self._clusters = list(self._clusters.values()), {}
        for cluster in clusters:
            cluster.api.close()


@functools.cache
def kubernetes_connector() -> KubernetesConnector:
    """The process's connector, on the kubeconfig of its environment (made on first use)."""
    return KubernetesConnector(KubeConfig.from_environment())
