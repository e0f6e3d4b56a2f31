"""Kubernetes from chat: the chat face of :mod:`bot.connectors.kubernetes`.

Every command is an action of the runtime (policy, confirmation, approval, job, cancel,
timeout, audit, redaction). The environment (``in <env>``) names the inventory's
``kubernetes:`` section: its kubeconfig context, its namespace allow-list, its replica bound
and whether calls impersonate the asker. Names, selectors and namespaces are validated by
Kubernetes' own rules when the arguments are bound, and against the environment in each
action's ``check=``, so a bad or forbidden value is refused before any API call.

The module is not named ``kubernetes``: the plugin folder is on Errbot's import path and
would hide the client library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from errbot import BotPlugin
from pydantic import StringConstraints

from bot.connectors.kubernetes import (
    Cluster,
    Identity,
    PodInfo,
    RolloutState,
    age,
    kubernetes_connector,
    missing_contexts,
)
from bot.inventory.kubernetes import KubernetesEntry, kubernetes_contexts
from bot.plugin import (
    ActionContext,
    ActionFailed,
    Arg,
    Caller,
    Code,
    InvalidArgument,
    Outcome,
    Person,
    Refusal,
    Risk,
    Table,
    Text,
    UnknownTarget,
    action,
    ssh_operations,
)

# --- Kubernetes' own name rules -----------------------------------------------------------------
DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"  # namespaces, containers
DNS_SUBDOMAIN = rf"{DNS_LABEL}(\.{DNS_LABEL})*"  # pods, deployments: at most 253
LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]"
LABEL_KEY = re.compile(rf"({DNS_SUBDOMAIN}/)?{LABEL_NAME}")
LABEL_VALUE = re.compile(rf"({LABEL_NAME})?")
OBJECT = rf"((pod|deployment|replicaset|node|service)/)?{DNS_SUBDOMAIN}"
DURATION = re.compile(r"(\d{1,6})([smhd])")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Env = Annotated[str, Arg(after="in", help="an environment with a kubernetes: section")]
Namespace = Annotated[
    Annotated[str, StringConstraints(pattern=f"^{DNS_LABEL}$")] | None,
    Arg(after="-n", help="a namespace name (lower-case letters, digits, '-')"),
]
PodName = Annotated[
    str,
    StringConstraints(pattern=f"^{DNS_SUBDOMAIN}$", max_length=253),
    Arg(help="a pod name (lower-case letters, digits, '-' and '.')"),
]
DeploymentName = Annotated[
    str,
    StringConstraints(pattern=f"^{DNS_SUBDOMAIN}$", max_length=253),
    Arg(help="a deployment name (lower-case letters, digits, '-' and '.')"),
]
Container = Annotated[
    Annotated[str, StringConstraints(pattern=f"^{DNS_LABEL}$")] | None,
    Arg(help="a container name"),
]
Labels = Annotated[dict[str, str], Arg(keywords=True)]
Since = Annotated[
    Annotated[str, StringConstraints(pattern=r"^\d{1,6}[smhd]$")] | None,
    Arg(help="a duration such as 30s, 10m, 2h or 1d"),
]
Wait = Annotated[
    Annotated[str, StringConstraints(pattern=r"^\d{1,6}[smhd]$")],
    Arg(help="how long to follow the rollout, such as 90s or 10m (at most 30m)"),
]
ObjectRef = Annotated[
    Annotated[str, StringConstraints(pattern=f"^{OBJECT}$")] | None,
    Arg(after="for", help="an object such as api-7d9f-x2k4q or deployment/api"),
]

POD_ROWS = 50  # rows of a listing shown in chat; the rest is "N more"
EVENT_ROWS = 30
LONG_LOG_CHARS = 4000  # longer logs are attached as a file
LOG_TAIL_SHOWN = 20
MAX_WAIT_SECONDS = 1800
CHANGE_TIMEOUT = MAX_WAIT_SECONDS + 120.0
CLUSTER_HELP = (
    "give the environment with 'in <env>'; !k8s clusters lists those with a kubernetes: "
    "section (docs/kubernetes.md)"
)


# --- the environment, its cluster, the identity ---------------------------------------------------
def _entry(env: str) -> KubernetesEntry:
    """The environment's ``kubernetes:`` section; refused when there is none."""
    inventory = ssh_operations().inventory
    inventory.hosts(env)  # an unknown environment is refused here, with "did you mean"
    entry = inventory.document.environments[env].kubernetes
    if entry is None:
        raise UnknownTarget(env, f"environment {env} has no kubernetes: section; {CLUSTER_HELP}")
    return entry


def _namespace(entry: KubernetesEntry, env: str, namespace: str | None) -> str:
    """The namespace asked for (or the environment's default), if it is on the allow-list."""
    if namespace is None:
        namespace = entry.default_namespace
        if namespace is None:
            raise InvalidArgument(
                f"namespace: give one with -n <namespace> (allowed in {env}: "
                f"{', '.join(entry.namespaces)})"
            )
    if not entry.allows(namespace):
        raise Refusal(
            f"namespace {namespace} is not allowed in {env} "
            f"(allowed: {', '.join(entry.namespaces)})"
        )
    return namespace


def _identity(entry: KubernetesEntry, caller: Caller) -> Identity | None:
    """Who the cluster is asked to act as: the chat user and their groups, with
    ``impersonate: true``. Alert rules and operators act as the bot's own account: the
    policy has already decided for them by role, and no person stands behind them."""
    if not entry.impersonate or not isinstance(caller, Person):
        return None
    prefix = entry.impersonate_group_prefix
    groups = tuple(sorted(prefix + group for group in caller.principal.groups))
    return Identity(caller.principal.username, groups)


def _cluster(ctx: ActionContext, env: str) -> Cluster:
    entry = _entry(env)
    return kubernetes_connector().cluster(entry.context, _identity(entry, ctx.caller))


def _ns(env: str, namespace: str | None) -> str:
    return _namespace(_entry(env), env, namespace)


def _seconds(text: str) -> int:
    found = DURATION.fullmatch(text)
    if found is None:  # the parameter's pattern already refused it
        raise InvalidArgument(f"not a duration: {text}")
    return int(found.group(1)) * UNITS[found.group(2)]


def _selector(labels: Mapping[str, str]) -> str:
    for key, value in labels.items():
        prefix = key.rpartition("/")[0]
        if len(key) > 317 or len(prefix) > 253 or not LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                f"label {key!r}: not a Kubernetes label key (letters, digits, '-', '_', '.', "
                "optionally prefixed by a DNS name and '/')"
            )
        if len(value) > 63 or not LABEL_VALUE.fullmatch(value):
            raise InvalidArgument(
                f"label {key}={value!r}: not a Kubernetes label value (at most 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit)"
            )
    return ",".join(f"{key}={value}" for key, value in labels.items())


# --- the checks (before the policy and before any job) -------------------------------------------
def _check(plugin: Kubernetes, values: Mapping[str, Any]) -> None:
    _ns(values["env"], values.get("namespace"))
    _selector(values.get("labels") or {})
    if values.get("wait") and _seconds(values["wait"]) > MAX_WAIT_SECONDS:
        raise InvalidArgument(f"wait: at most {MAX_WAIT_SECONDS // 60}m")


def _check_env(plugin: Kubernetes, values: Mapping[str, Any]) -> None:
    _entry(values["env"])


def _check_scale(plugin: Kubernetes, values: Mapping[str, Any]) -> None:
    _check(plugin, values)
    bound = _entry(values["env"]).max_replicas
    if values["replicas"] > bound:
        raise Refusal(
            f"{values['replicas']} replicas is above the limit of {bound} for {values['env']} "
            "(max_replicas in the inventory)"
        )


def _environment(plugin: Kubernetes, values: Mapping[str, Any]) -> str:
    return str(values["env"])


# --- rows ---------------------------------------------------------------------------------------
def _pod_rows(pods: list[PodInfo]) -> list[tuple[str, str, str, int, str]]:
    return [(p.name, p.ready_text, p.status, p.restarts, age(p.created)) for p in pods]


POD_HEADERS = ("name", "ready", "status", "restarts", "age")


def _failing_table(pods: list[PodInfo]) -> Table:
    return Table(
        ("pod", "ready", "status", "restarts", "reason"),
        [
            (
                p.name,
                p.ready_text,
                p.status,
                p.restarts,
                "; ".join(
                    f"{c.name}: {c.reason}"
                    + (f", last {c.last_termination}" * bool(c.last_termination))
                    for c in p.containers
                    if not c.ready
                ),
            )
            for p in pods
        ],
        title="failing pods",
        limit=POD_ROWS,
    )


class Kubernetes(BotPlugin):
    """Kubernetes: pods, logs, events, deployments and rollouts, per environment."""

    def activate(self) -> None:
        """Refuse to start on an inventory naming a context the kubeconfig lacks (``opsroom
        run`` and ``check-config`` say so first, naming the file and key)."""
        try:
            operations = ssh_operations()
        except Refusal:  # no inventory configured: every command will say so
            operations = None
        if operations is None or operations.sample:  # the sample's clusters are fictional
            super().activate()
            return
        inventory = operations.inventory
        wanted = kubernetes_contexts(inventory.document.environments)
        problems = missing_contexts(kubernetes_connector().kubeconfig, wanted)
        if problems:
            raise ValueError(
                "\n".join(f"{inventory.source}: {key}: {text}" for key, text in problems.items())
            )
        super().activate()

    # --- reading -------------------------------------------------------------------------
    @action("k8s.clusters", risk=Risk.READ)
    def clusters(self, ctx: ActionContext) -> Outcome:
        """The environments with a Kubernetes cluster, their namespaces and limits."""
        inventory = ssh_operations().inventory
        rows = []
        for env, entry in inventory.document.environments.items():
            k8s = entry.kubernetes
            if k8s is None:
                continue
            identity = _identity(k8s, ctx.caller)
            acts_as = f"you ({identity.user})" if identity else "the bot's account"
            rows.append((env, k8s.context, ", ".join(k8s.namespaces), k8s.max_replicas, acts_as))
        table = Table(("environment", "context", "namespaces", "max replicas", "acts as"), rows)
        return Outcome(f"{len(rows)} cluster(s)", table)

    @action("k8s.namespaces", risk=Risk.READ, environment=_environment, check=_check_env)
    def namespaces(self, ctx: ActionContext, env: Env) -> Outcome:
        """The namespaces of an environment's cluster that you may use here."""
        entry = _entry(env)
        present = _cluster(ctx, env).namespaces()
        usable = [n for n in present if entry.allows(n)]
        table = Table(("namespace",), [(n,) for n in usable], limit=POD_ROWS)
        return Outcome(
            f"{len(usable)} namespace(s) in {env} (allow-list: {', '.join(entry.namespaces)})",
            table,
        )

    @action("k8s.pods", risk=Risk.READ, environment=_environment, check=_check)
    def pods(
        self,
        ctx: ActionContext,
        env: Env,
        show: Literal["all", "failing"] = "all",
        namespace: Namespace = None,
        labels: Labels = {},  # noqa: B006 - copied by the runtime
    ) -> Outcome:
        """Pods of a namespace (kubectl get pods), only the failing ones with 'failing',
        selected by label=value pairs."""
        ns = _ns(env, namespace)
        pods = _cluster(ctx, env).pods(ns, _selector(labels))
        failing = [p for p in pods if p.failing]
        shown = failing if show == "failing" else pods
        summary = f"{len(shown)} pod(s) in {ns} ({env})"
        if show == "all" and failing:
            summary += f", {len(failing)} failing"
        table = Table(POD_HEADERS, _pod_rows(shown), limit=POD_ROWS)
        return Outcome(summary, table)

    @action("k8s.describe", risk=Risk.READ, environment=_environment, check=_check)
    def describe(
        self, ctx: ActionContext, pod: PodName, env: Env, namespace: Namespace = None
    ) -> Outcome:
        """A pod's phase, conditions, containers (state, restarts, last termination) and
        recent events."""
        ns = _ns(env, namespace)
        cluster = _cluster(ctx, env)
        info = cluster.pod(ns, pod)
        events = cluster.events(ns, kind="Pod", name=pod)[-10:]
        overview = Table(
            ("field", "value"),
            [
                ("phase", info.phase),
                ("status", info.status),
                ("ready", info.ready_text),
                ("restarts", info.restarts),
                ("node", info.node or "-"),
                ("age", age(info.created)),
                ("conditions", ", ".join(f"{t}={s}" for t, s in info.conditions) or "-"),
            ],
        )
        containers = Table(
            ("container", "state", "ready", "restarts", "last termination"),
            [
                (c.name, c.state, "yes" if c.ready else "no", c.restarts, c.last_termination or "-")
                for c in info.containers
            ],
            title="containers",
        )
        recent = Table(
            ("last seen", "type", "reason", "message"),
            [(age(e.last_seen), e.type, e.reason, e.message) for e in events],
            title="recent events",
        )
        return Outcome(f"pod {pod} in {ns} ({env}): {info.status}", overview, containers, recent)

    @action("k8s.logs", risk=Risk.READ, environment=_environment, check=_check, timeout=120)
    def logs(
        self,
        ctx: ActionContext,
        pod: PodName,
        env: Env,
        namespace: Namespace = None,
        container: Container = None,
        tail: Annotated[int, Arg(help="a number of lines, 1 to 10000")] = 200,
        since: Since = None,
        previous: bool = False,
    ) -> Outcome:
        """A pod's log (one container, the last lines, since a duration, or the previous
        instance); a long log is attached as a file."""
        if not 1 <= tail <= 10000:
            raise InvalidArgument("tail: expected a number of lines, 1 to 10000")
        ns = _ns(env, namespace)
        text = _cluster(ctx, env).logs(
            ns,
            pod,
            container=container,
            tail=tail,
            since_seconds=_seconds(since) if since else None,
            previous=previous,
        )
        which = f"{pod}/{container}" if container else pod
        lines = text.splitlines()
        summary = f"log of {which}{' (previous)' if previous else ''} in {ns}: {len(lines)} line(s)"
        if len(text) > LONG_LOG_CHARS and ctx.attach(f"{pod}.log", text, f"log of {which}"):
            tail_text = "\n".join(lines[-LOG_TAIL_SHOWN:])
            return Outcome(summary, Code(tail_text), Text(f"whole log attached as {pod}.log"))
        return Outcome(summary, Code(text.rstrip("\n") or "(no log lines)"))

    @action("k8s.events", risk=Risk.READ, environment=_environment, check=_check)
    def events(
        self,
        ctx: ActionContext,
        env: Env,
        show: Literal["all", "warnings"] = "all",
        namespace: Namespace = None,
        subject: ObjectRef = None,
    ) -> Outcome:
        """Events of a namespace, only warnings with 'warnings', for one object with
        'for <name>' or 'for deployment/<name>'."""
        ns = _ns(env, namespace)
        kind, _, name = (subject or "").rpartition("/")
        events = _cluster(ctx, env).events(
            ns, warnings_only=show == "warnings", kind=kind.capitalize(), name=name
        )
        events = events[::-1]  # newest first
        table = Table(
            ("last seen", "type", "reason", "object", "message"),
            [(age(e.last_seen), e.type, e.reason, e.object, e.message) for e in events],
            limit=EVENT_ROWS,
        )
        return Outcome(f"{len(events)} event(s) in {ns} ({env})", table)

    @action("k8s.deployments", risk=Risk.READ, environment=_environment, check=_check)
    def deployments(self, ctx: ActionContext, env: Env, namespace: Namespace = None) -> Outcome:
        """Deployments of a namespace (kubectl get deployments), with revision and images."""
        ns = _ns(env, namespace)
        found = _cluster(ctx, env).deployments(ns)
        table = Table(
            ("name", "ready", "up-to-date", "available", "age", "revision", "images"),
            [
                (
                    d.name,
                    f"{d.ready}/{d.desired}",
                    d.updated,
                    d.available,
                    age(d.created),
                    d.revision,
                    ", ".join(d.images),
                )
                for d in found
            ],
            limit=POD_ROWS,
        )
        return Outcome(f"{len(found)} deployment(s) in {ns} ({env})", table)

    @action("k8s.rollout.status", risk=Risk.READ, environment=_environment, check=_check)
    def rollout_status(
        self,
        ctx: ActionContext,
        deployment: DeploymentName,
        env: Env,
        namespace: Namespace = None,
    ) -> Outcome:
        """Where a deployment's rollout is, and its revisions."""
        ns = _ns(env, namespace)
        cluster = _cluster(ctx, env)
        state = cluster.rollout(ns, deployment)
        history = Table(
            ("revision", "replica set", "images", "age"),
            [
                (r.revision, r.replicaset, ", ".join(r.images), age(r.created))
                for r in cluster.revisions(ns, deployment)
            ],
            title="revisions",
        )
        return Outcome(f"{deployment} in {ns} ({env}): {_state_word(state)}", history)

    # --- changing ------------------------------------------------------------------------
    @action(
        "k8s.rollout.restart",
        risk=Risk.CHANGE,
        target="deployment",
        environment=_environment,
        check=_check,
        timeout=CHANGE_TIMEOUT,
    )
    def rollout_restart(
        self,
        ctx: ActionContext,
        deployment: DeploymentName,
        env: Env,
        namespace: Namespace = None,
        wait: Wait = "10m",
    ) -> Outcome:
        """Restart a deployment's pods (kubectl rollout restart) and follow the rollout."""
        ns = _ns(env, namespace)
        cluster = _cluster(ctx, env)
        cluster.restart(ns, deployment)
        return _follow(ctx, cluster, ns, deployment, "restart", _seconds(wait))

    @action(
        "k8s.rollout.undo",
        risk=Risk.CHANGE,
        target="deployment",
        environment=_environment,
        check=_check,
        timeout=CHANGE_TIMEOUT,
    )
    def rollout_undo(
        self,
        ctx: ActionContext,
        deployment: DeploymentName,
        env: Env,
        namespace: Namespace = None,
        revision: Annotated[int, Arg(help="a revision number (0: the previous one)")] = 0,
        wait: Wait = "10m",
    ) -> Outcome:
        """Roll a deployment back to the previous (or a given) revision, as kubectl does,
        and follow the rollout."""
        if revision < 0:
            raise InvalidArgument("revision: expected a revision number (0: the previous one)")
        ns = _ns(env, namespace)
        cluster = _cluster(ctx, env)
        result = cluster.undo(ns, deployment, revision)
        if result.skipped:
            return Outcome(
                f"undo {deployment} in {ns}: skipped, it already runs revision {result.revision}"
            )
        ctx.progress(f"rolling back {deployment} to revision {result.revision}")
        return _follow(
            ctx, cluster, ns, deployment, f"undo to revision {result.revision}", _seconds(wait)
        )

    @action(
        "k8s.scale",
        risk=Risk.CHANGE,
        target="deployment",
        environment=_environment,
        check=_check_scale,
        timeout=CHANGE_TIMEOUT,
    )
    def scale(
        self,
        ctx: ActionContext,
        deployment: DeploymentName,
        replicas: Annotated[int, Arg(after="to", help="a number of replicas, 0 or more")],
        env: Env,
        namespace: Namespace = None,
        wait: Wait = "10m",
    ) -> Outcome:
        """Scale a deployment (at most the environment's max_replicas) and follow it."""
        if replicas < 0:
            raise InvalidArgument("replicas: expected a number of replicas, 0 or more")
        ns = _ns(env, namespace)
        cluster = _cluster(ctx, env)
        cluster.scale(ns, deployment, replicas)
        return _follow(ctx, cluster, ns, deployment, f"scale to {replicas}", _seconds(wait))

    @action(
        "k8s.delete.pod",
        risk=Risk.CHANGE,
        target="pod",
        environment=_environment,
        check=_check,
        timeout=60,
    )
    def delete_pod(
        self, ctx: ActionContext, pod: PodName, env: Env, namespace: Namespace = None
    ) -> Outcome:
        """Delete a pod (its controller starts a new one)."""
        ns = _ns(env, namespace)
        _cluster(ctx, env).delete_pod(ns, pod)
        return Outcome(f"deleted pod {pod} in {ns} ({env})")


def _state_word(state: RolloutState) -> str:
    if state.complete:
        return f"rollout complete ({state.describe()})"
    if state.failed:
        return f"rollout failed: {state.message} ({state.describe()})"
    return f"rolling out: {state.describe()}"


def _follow(
    ctx: ActionContext, cluster: Cluster, ns: str, name: str, what: str, seconds: int
) -> Outcome:
    """Follow the rollout (a watch, no polling) with the progress edited in place; end
    complete, failed with the failing pods' reasons, or timed out. ``!cancel`` stops it."""
    follower = cluster.follower(ns, name)
    ctx.on_cancel(follower.stop)
    shown = [""]

    def progress(state: RolloutState) -> None:
        text = f"{what} {name}: {state.describe()}"
        if text != shown[0]:
            shown[0] = text
            ctx.progress(text)

    state = follower.run(progress, timeout=seconds)
    ctx.check()  # cancelled: end as cancelled, not with the last state
    if state.complete:
        return Outcome(f"{what} {name} in {ns}: rollout complete ({state.describe()})")
    if state.failed:
        summary = f"{what} {name} in {ns}: rollout failed: {state.message} ({state.describe()})"
        failing = cluster.failing_pods(ns, name)
        raise ActionFailed(summary, details=Outcome(summary, _failing_table(failing)))
    raise ActionFailed(
        f"{what} {name} in {ns}: still rolling out after {seconds}s ({state.describe()}); "
        f"!k8s rollout status {name} -n {ns} in <env> follows up"
    )
