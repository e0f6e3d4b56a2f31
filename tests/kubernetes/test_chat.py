"""Kubernetes from chat, end to end: the real bot process, the fake Mattermost, and two
fake clusters (TLS, bearer token) reached through a KUBECONFIG path list."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from bot.testing.fake_kubernetes import FakeKubernetes

FINAL = re.compile(r"succeeded|failed|denied|refused|cancelled|timed out|⛔|!confirm")


@pytest.fixture
def clusters(tmp_path):
    # Slow enough that a rollout of three pods takes seconds: progress edits are seen.
    staging = FakeKubernetes(tmp_path / "staging-api", tick=0.3)
    production = FakeKubernetes(tmp_path / "production-api", tick=0.05)
    for server in (staging, production):
        server.start()
    yield staging, production
    for server in (staging, production):
        server.stop()
        assert server.violations == []


@pytest.fixture
def k8s_env(tmp_path, clusters):
    staging, production = clusters
    first = staging.kubeconfig(tmp_path / "kube-staging", contexts=("staging-admin",))
    second = production.kubeconfig(tmp_path / "kube-production", contexts=("prod-admin",))
    inventory = tmp_path / "inventory.yaml"
    host = {"address": "127.0.0.1"}
    inventory.write_text(
        yaml.safe_dump(
            {
                "environments": {
                    "staging": {
                        "hosts": {"stg-1": host},
                        "kubernetes": {
                            "context": "staging-admin",
                            "namespaces": ["web", "team-*"],
                            "max_replicas": 5,
                            "impersonate": True,
                            "impersonate_group_prefix": "mattermost:",
                        },
                    },
                    "production": {
                        "hosts": {"prod-1": host},
                        "kubernetes": {"context": "prod-admin", "namespaces": ["web"]},
                    },
                }
            }
        )
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "protected_environments": ["production"],
                "roles": {
                    "operator": {
                        "members": ["@alice"],
                        "grants": [{"action": "k8s.*", "environments": ["*"]}],
                    }
                },
            }
        )
    )
    return {
        "KUBECONFIG": f"{first}:{second}",
        "OPSROOM_INVENTORY": str(inventory),
        "OPSROOM_POLICY": str(policy),
    }


@pytest.fixture
def bot(fake_mm, world, make_bot, k8s_env):
    fake_mm.add_group("sre", [world.alice])  # impersonated as mattermost:sre
    return make_bot(**k8s_env)


def ask(mm, world, text, user=None, final=FINAL, timeout=20.0):
    """Post ``text`` in ~ops and return the bot's answer once it is final."""
    before = {p["id"] for p in mm.posts_by(world.bot)}
    mm.post_as(user or world.alice, world.ops, text)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for post in mm.posts_by(world.bot):
            if post["id"] in before:
                continue
            message = mm.get_post(post["id"])["message"]
            if final.search(message):
                return message
        time.sleep(0.05)
    raise AssertionError(f"no final answer to {text!r}")


def requests(cluster, part):
    return [r for r in cluster.requests if part in r.path]


def test_read_commands_as_the_asker(fake_mm, world, bot, clusters):
    staging, production = clusters
    staging.add_deployment("web", "api", replicas=2)
    staging.add_pod(
        "web",
        "worker-1",
        labels={"app": "worker"},
        restarts=7,
        waiting="CrashLoopBackOff",
        last_terminated="OOMKilled",
    )
    staging.add_event("web", "Pod", "worker-1", "BackOff", "Back-off restarting", type="Warning")
    staging.add_event("web", "Deployment", "api", "ScalingReplicaSet", "Scaled up to 2")
    staging.add_namespace("team-blue")
    staging.add_namespace("kube-system")
    production.add_deployment("web", "shop", replicas=1)

    clusters_answer = ask(fake_mm, world, "!k8s clusters")
    assert "staging       | staging-admin | web, team-*" in clusters_answer
    assert "you (alice)" in clusters_answer and "the bot's account" in clusters_answer

    namespaces = ask(fake_mm, world, "!k8s namespaces in staging")
    assert "| team-blue" in namespaces and "kube-system" not in namespaces

    pods = ask(fake_mm, world, "!k8s pods in staging")
    assert "3 pod(s) in web (staging), 1 failing" in pods
    assert re.search(r"\| worker-1 +\| 0/1 +\| CrashLoopBackOff +\| 7 ", pods)
    failing = ask(fake_mm, world, "!k8s pods failing -n web in staging")
    assert "1 pod(s)" in failing and "api-" not in failing
    selected = ask(fake_mm, world, "!k8s pods in staging app=api")
    assert "2 pod(s)" in selected and "worker-1" not in selected
    assert requests(staging, "/pods")[-1].query["labelSelector"] == "app=api"

    described = ask(fake_mm, world, "!k8s describe worker-1 in staging")
    assert "pod worker-1 in web (staging): CrashLoopBackOff" in described
    assert "OOMKilled (exit 137)" in described and "BackOff" in described

    events = ask(fake_mm, world, "!k8s events warnings in staging")
    assert "1 event(s)" in events and "pod/worker-1" in events
    for_api = ask(fake_mm, world, "!k8s events for deployment/api in staging")
    assert "ScalingReplicaSet" in for_api and "BackOff" not in for_api

    deployments = ask(fake_mm, world, "!k8s deployments in staging")
    assert re.search(r"\| api +\| 2/2 +\| 2 +\| 2 ", deployments)
    status = ask(fake_mm, world, "!k8s rollout status api in staging")
    assert "api in web (staging): rollout complete (2/2 updated, 2 ready)" in status

    # every staging call was made as alice with her groups; production as the bot
    staged = [r for r in staging.requests if "/namespaces" in r.path]
    assert {r.user for r in staged} == {"alice"}
    assert {r.groups for r in staged} == {("mattermost:sre",)}
    shop = ask(fake_mm, world, "!k8s deployments in production")
    assert "| shop " in shop
    assert all(not r.impersonated for r in production.requests)


def test_logs_short_long_previous_and_scrubbed(fake_mm, world, bot, clusters):
    staging, _ = clusters
    staging.add_pod("web", "api-1", containers=("app", "proxy"))
    staging.set_logs("web", "api-1", ["old line", "GET /health 200"], ages=[7200, 10])
    staging.set_logs("web", "api-1", ["panic: out of memory"], previous=True)
    lines = [f"request {n} password=hunter2-{n}" for n in range(400)]
    staging.set_logs("web", "api-1", lines, container="proxy")

    recent = ask(fake_mm, world, "!k8s logs api-1 in staging container=app since=1h")
    assert "GET /health 200" in recent and "old line" not in recent
    assert requests(staging, "/log")[-1].query["sinceSeconds"] == "3600"
    previous = ask(fake_mm, world, "!k8s logs api-1 in staging container=app previous=true")
    assert "panic: out of memory" in previous
    unnamed = ask(fake_mm, world, "!k8s logs api-1 in staging")
    assert "a container name must be specified for pod api-1" in unnamed

    long = ask(fake_mm, world, "!k8s logs api-1 in staging container=proxy tail=300")
    assert "300 line(s)" in long and "whole log attached as api-1.log" in long
    (uploaded,) = fake_mm.uploaded_files
    content = uploaded.get("content", b"")
    text = content.decode() if isinstance(content, bytes) else str(content)
    assert "request 399" in text and "hunter2" not in text  # scrubbed like everything else


def wait_for_message(mm, world, text, timeout=30.0):
    """The current text of the bot's post that (now) contains ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for post in mm.posts_by(world.bot):
            message = mm.get_post(post["id"])["message"]
            if text in message:
                return message
        time.sleep(0.05)
    raise AssertionError(f"no message with {text!r}")


def watch_progress(mm, world, text, until, user=None, timeout=30.0):
    """Post ``text``; return (every distinct text of the bot's message, the final one)."""
    before = {p["id"] for p in mm.posts_by(world.bot)}
    mm.post_as(user or world.alice, world.ops, text)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [p for p in mm.posts_by(world.bot) if p["id"] not in before]
        if new:
            message = mm.get_post(new[0]["id"])["message"]
            if not seen or seen[-1] != message:
                seen.append(message)
            if re.search(until, message):
                return seen, message
        time.sleep(0.05)
    raise AssertionError(f"never {until!r}; saw {seen}")


def test_restart_undo_scale_delete_followed_in_place(fake_mm, world, bot, clusters):
    staging, _ = clusters
    staging.add_deployment("web", "api", replicas=3)

    seen, final = watch_progress(
        fake_mm, world, "!k8s rollout restart api in staging", "succeeded|failed"
    )
    assert "restart api in web: rollout complete (3/3 updated, 3 ready)" in final
    assert any(re.search(r"restart api: [12]/3 updated, \d ready", text) for text in seen)
    template = staging.deployment("web", "api")["spec"]["template"]["metadata"]
    assert "kubectl.kubernetes.io/restartedAt" in template["annotations"]
    assert [r for r in staging.requests if r.query.get("watch") == "true"]  # a watch

    _, undone = watch_progress(fake_mm, world, "!k8s rollout undo api in staging", "succeeded")
    assert "undo to revision 1 api in web: rollout complete" in undone
    # kubectl's way (creationTimestamp: null): revision 1's ReplicaSet came back as 3
    revisions = sorted(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        for rs in staging.replicasets("web", "api")
    )
    assert revisions == ["2", "3"]

    _, scaled = watch_progress(fake_mm, world, "!k8s scale api to 5 in staging", "succeeded")
    assert "scale to 5 api in web: rollout complete (5/5 updated, 5 ready)" in scaled

    above = ask(fake_mm, world, "!k8s scale api to 6 in staging")
    assert "6 replicas is above the limit of 5 for staging" in above and "nothing was run" in above
    assert not [r for r in staging.requests if r.path.endswith("/scale") and r.method != "PATCH"]
    assert len([r for r in staging.requests if r.path.endswith("/scale")]) == 1

    victim = staging.pods("web")[0]["metadata"]["name"]
    deleted = ask(fake_mm, world, f"!k8s delete pod {victim} in staging")
    assert f"deleted pod {victim} in web (staging)" in deleted
    assert victim not in {p["metadata"]["name"] for p in staging.pods("web")}


def test_production_is_protected_and_reads_need_no_grant(fake_mm, world, bot, clusters):
    _, production = clusters
    production.add_deployment("web", "shop", replicas=1)
    question = ask(fake_mm, world, "!k8s rollout restart shop in production")
    assert "!confirm" in question and "production" in question
    denied = ask(fake_mm, world, "!k8s rollout restart shop in production", user=world.bob)
    assert "denied" in denied and "needs role operator" in denied
    assert "1 deployment(s)" in ask(fake_mm, world, "!k8s deployments in production", world.bob)
    assert not [r for r in production.requests if r.method == "PATCH"]


def test_bad_input_is_refused_before_any_call(fake_mm, world, bot, clusters):
    staging, _ = clusters
    staging.add_namespace("kube-system")
    forbidden = ask(fake_mm, world, "!k8s pods -n kube-system in staging")
    assert "namespace kube-system is not allowed in staging (allowed: web, team-*)" in forbidden
    bad_name = ask(fake_mm, world, "!k8s describe Bad_Pod in staging")
    assert "pod: expected a pod name" in bad_name and "!k8s describe" in bad_name  # usage
    bad_label = ask(fake_mm, world, "!k8s pods in staging app=a,b")
    assert "not a Kubernetes label value" in bad_label
    bad_ns = ask(fake_mm, world, "!k8s deployments -n Web in staging")
    assert "namespace: expected a namespace name" in bad_ns
    unknown = ask(fake_mm, world, "!k8s pods in stagin")
    assert "unknown environment 'stagin'" in unknown and "did you mean staging" in unknown
    assert staging.requests == []  # nothing reached the cluster
    from tests.e2e.test_actions import audit

    exported = audit(bot, "export", "--format", "jsonl").stdout
    assert exported.count('"denied"') >= 5  # every refusal is audited


def test_api_errors_are_one_line(fake_mm, world, bot, clusters):
    staging, production = clusters
    staging.add_deployment("web", "api", replicas=1)
    staging.deny("list", "pods", namespace="web", user="alice")
    forbidden = ask(fake_mm, world, "!k8s pods in staging")
    assert (
        'forbidden by cluster staging-admin: pods is forbidden: User "alice" cannot list '
        'resource "pods" in API group "" in the namespace "web"'
    ) in forbidden
    assert "Traceback" not in forbidden
    missing = ask(fake_mm, world, "!k8s describe nope in staging")
    assert 'not found in staging-admin: pods "nope" not found' in missing
    production.stop()
    down = ask(fake_mm, world, "!k8s deployments in production", timeout=40)
    assert "cluster prod-admin is unreachable" in down


def test_rollout_that_never_completes(fake_mm, world, bot, clusters):
    _, production = clusters  # production's controller is fast (tick 0.05s)
    production.add_deployment("web", "shop", replicas=2, progress_deadline=1)
    production.stick("web", "shop")
    question = ask(fake_mm, world, "!k8s rollout restart shop in production")
    request_id = re.search(r"R-[A-Z0-9]{5}", question).group(0)
    fake_mm.post_as(world.alice, world.ops, f"!confirm {request_id}")
    failed = wait_for_message(fake_mm, world, "rollout failed")
    assert 'rollout failed: ReplicaSet "shop-' in failed and "has timed out progressing" in failed
    assert "app: CrashLoopBackOff" in failed  # the failing pods' reasons

    # Pitfall: the condition stays ProgressDeadlineExceeded after the pods recovered
    production.recover("web", "shop")
    assert production.deployment("web", "shop")["status"]["conditions"][-1]["reason"] == (
        "ProgressDeadlineExceeded"
    )
    status = ask(fake_mm, world, "!k8s rollout status shop in production")
    assert "rollout complete (2/2 updated, 2 ready)" in status


def test_follow_times_out_and_cancel_stops_following(fake_mm, world, bot, clusters):
    staging, _ = clusters
    staging.add_deployment("web", "api", replicas=1)
    staging.stick("web", "api")
    _, timed_out = watch_progress(
        fake_mm, world, "!k8s rollout restart api in staging wait=2s", "failed"
    )
    assert "still rolling out after 2s" in timed_out

    staging.add_deployment("web", "worker", replicas=1)
    staging.stick("web", "worker")
    seen, _ = watch_progress(
        fake_mm, world, "!k8s rollout restart worker in staging", r"J-[0-9A-F]{5}"
    )
    job = re.search(r"J-[0-9A-F]{5}", seen[-1]).group(0)
    staging.wait_for(lambda: staging._watchers)
    fake_mm.post_as(world.alice, world.ops, f"!cancel {job}")
    assert "cancelled by @alice" in wait_for_message(fake_mm, world, "cancelled by")
    staging.wait_for(lambda: not staging._watchers)  # the watch is closed
