"""The connector against the fake API server, with the real client over TLS."""

from __future__ import annotations

import threading
import time

import pytest

from bot.connectors.kubernetes import (
    Identity,
    KubeConfig,
    KubernetesConnector,
    KubernetesError,
    missing_contexts,
)
from bot.errors import ActionFailed


@pytest.fixture
def kubeconfig(fake_k8s, tmp_path):
    return KubeConfig.from_environment({"KUBECONFIG": str(tmp_path / "kubeconfig")})


@pytest.fixture
def cluster(kubeconfig):
    connector = KubernetesConnector(kubeconfig, read_timeout=5)
    yield connector.cluster("fake")
    connector.close()


def test_kubeconfig_path_list_merges_files_and_names_missing_contexts(fake_k8s, tmp_path):
    second = fake_k8s.kubeconfig(tmp_path / "second", contexts=("production",))
    paths = f"{tmp_path / 'absent'}:{tmp_path / 'kubeconfig'}:{second}"
    kubeconfig = KubeConfig.from_environment({"KUBECONFIG": paths})
    assert kubeconfig.contexts() == ["fake", "production"]
    problems = missing_contexts(kubeconfig, {"staging": "fake", "qa": "qa-admin"})
    assert list(problems) == ["qa"]
    assert "no context 'qa-admin' in" in problems["qa"]
    assert "contexts there: fake, production" in problems["qa"]


def test_no_kubeconfig_at_all_is_said_plainly(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    kubeconfig = KubeConfig.from_environment({})
    assert kubeconfig.paths == ()
    assert "no kubeconfig" in kubeconfig.describe() or kubeconfig.in_cluster


def test_reads_over_tls_with_the_bearer_token(fake_k8s, cluster):
    fake_k8s.add_deployment("web", "api", replicas=2)
    assert cluster.version() == "v1.31.0-fake"
    pods = cluster.pods("web", "app=api")
    assert [p.ready_text for p in pods] == ["1/1", "1/1"]
    assert {p.status for p in pods} == {"Running"}
    assert all(r.user == "system:serviceaccount:opsroom:opsroom" for r in fake_k8s.requests)


def test_a_wrong_token_is_a_401_line(fake_k8s, tmp_path):
    path = fake_k8s.kubeconfig(tmp_path / "bad", token="wrong")
    connector = KubernetesConnector(KubeConfig((path,)))
    with pytest.raises(KubernetesError, match=r"refused the bot's credentials \(401"):
        connector.cluster("fake").namespaces()


def test_impersonation_sends_one_group_header_per_group(fake_k8s, kubeconfig):
    fake_k8s.add_namespace("web")
    connector = KubernetesConnector(kubeconfig)
    connector.cluster("fake", Identity("alice", ("mattermost:sre", "mattermost:dev"))).pods("web")
    (request,) = fake_k8s.requests_to("/pods")
    assert request.impersonated and request.user == "alice"
    assert request.groups == ("mattermost:sre", "mattermost:dev")


def test_rbac_403_gives_the_api_reason(fake_k8s, kubeconfig):
    fake_k8s.add_namespace("web")
    fake_k8s.deny("list", "pods", namespace="web", user="bob")
    connector = KubernetesConnector(kubeconfig)
    with pytest.raises(KubernetesError) as failure:
        connector.cluster("fake", Identity("bob")).pods("web")
    assert failure.value.status == 403
    assert str(failure.value) == (
        'forbidden by cluster fake: pods is forbidden: User "bob" cannot list resource "pods" '
        'in API group "" in the namespace "web"'
    )
    assert isinstance(failure.value, ActionFailed)


def test_404_409_422_are_one_line_each(fake_k8s, cluster):
    fake_k8s.add_deployment("web", "api", replicas=1)
    with pytest.raises(KubernetesError, match=r'^not found in fake: pods "nope" not found$'):
        cluster.pod("web", "nope")
    fake_k8s.fail_next(
        "PATCH", "/scale", 409, reason="Conflict", message="the object has been modified"
    )
    with pytest.raises(KubernetesError, match=r"^conflict in fake: the object has been modified"):
        cluster.scale("web", "api", 2)
    with pytest.raises(KubernetesError, match=r"^invalid for fake: .*spec.replicas: Invalid"):
        cluster.scale("web", "api", -1)


def test_reads_are_retried_on_5xx_writes_are_not(fake_k8s, cluster):
    fake_k8s.add_deployment("web", "api", replicas=1)
    fake_k8s.fail_next("GET", "/pods", 503, count=2)
    assert len(cluster.pods("web")) == 1
    assert [r.status for r in fake_k8s.requests_to("/namespaces/web/pods")] == [503, 503, 200]
    fake_k8s.fail_next("PATCH", "/deployments/api", 500)
    with pytest.raises(KubernetesError, match="answered 500 while restarting api"):
        cluster.restart("web", "api")
    assert len(fake_k8s.requests_to("/deployments/api")) == 1


def test_server_down_is_unreachable(fake_k8s, cluster):
    fake_k8s.stop()
    with pytest.raises(KubernetesError, match=r"^cluster fake is unreachable \(.*\) while listing"):
        cluster.pods("web")


def test_events_read_through_core_v1_despite_event_time_null(fake_k8s, cluster):
    """Pitfall: events.k8s.io/v1 events with eventTime: null fail the client's model."""
    fake_k8s.add_event("web", "Pod", "api-1", "BackOff", "Back-off restarting", type="Warning")
    fake_k8s.add_event("web", "Pod", "api-2", "Pulled", "Pulled image")
    from kubernetes import client

    with pytest.raises(ValueError, match="eventTime"):
        client.EventsV1Api(cluster.api).list_namespaced_event("web")
    warnings = cluster.events("web", warnings_only=True)
    assert [(e.reason, e.object) for e in warnings] == [("BackOff", "pod/api-1")]
    assert [e.reason for e in cluster.events("web", kind="Pod", name="api-2")] == ["Pulled"]


def test_logs_take_since_seconds_tail_previous_and_container(fake_k8s, cluster):
    """Pitfall: the client has no sinceTime; since_seconds is what exists."""
    fake_k8s.add_pod("web", "api-1", containers=("app", "sidecar"))
    fake_k8s.set_logs("web", "api-1", ["old", "new"], ages=[600, 5])
    fake_k8s.set_logs("web", "api-1", ["before the crash"], previous=True)
    assert cluster.logs("web", "api-1", container="app", since_seconds=60) == "new\n"
    assert cluster.logs("web", "api-1", container="app", tail=1) == "new\n"
    assert cluster.logs("web", "api-1", container="app", previous=True) == "before the crash\n"
    with pytest.raises(KubernetesError, match="a container name must be specified"):
        cluster.logs("web", "api-1")


def test_restart_sets_the_annotation_and_the_follower_sees_it_complete(fake_k8s, cluster):
    fake_k8s.add_deployment("web", "api", replicas=3)
    cluster.restart("web", "api")
    template = fake_k8s.deployment("web", "api")["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"]["annotations"]
    seen = []
    final = cluster.follower("web", "api").run(seen.append, timeout=20)
    assert final.complete and not final.failed
    assert any(s.describe().startswith("1/3 updated") for s in seen)
    assert not any("?watch" in r.path for r in fake_k8s.requests)  # query, not path
    assert any(r.query.get("watch") == "true" for r in fake_k8s.requests)


def test_undo_reuses_the_old_replicaset_as_kubectl_does(fake_k8s, cluster):
    """Pitfall: the template goes back with creationTimestamp: null, so revision 1's
    ReplicaSet becomes revision 3 (no new ReplicaSet)."""
    fake_k8s.add_deployment("web", "api", replicas=1)
    cluster.restart("web", "api")
    cluster.follower("web", "api").run(lambda s: None, timeout=20)
    assert [r.revision for r in cluster.revisions("web", "api")] == [1, 2]
    result = cluster.undo("web", "api")
    assert result.revision == 1 and not result.skipped
    assert cluster.follower("web", "api").run(lambda s: None, timeout=20).complete
    revisions = cluster.revisions("web", "api")
    assert [r.revision for r in revisions] == [2, 3]
    assert len(fake_k8s.replicasets("web", "api")) == 2
    assert cluster.undo("web", "api", 3).skipped


def test_a_hand_built_undo_without_creation_timestamp_would_add_a_revision(fake_k8s, cluster):
    """What the pitfall looks like: dropping creationTimestamp: null makes a third RS."""
    fake_k8s.add_deployment("web", "api", replicas=1)
    cluster.restart("web", "api")
    cluster.follower("web", "api").run(lambda s: None, timeout=20)
    old = fake_k8s.replicasets("web", "api")[0]["spec"]["template"]
    old["metadata"]["labels"].pop("pod-template-hash")
    old["metadata"].pop("creationTimestamp")
    patch = [{"op": "replace", "path": "/spec/template", "value": old}]
    cluster.apps.patch_namespaced_deployment("api", "web", patch)
    fake_k8s.wait_for(lambda: len(fake_k8s.replicasets("web", "api")) == 3)


def test_stuck_rollout_fails_after_the_deadline_and_stale_condition_is_not_failure(
    fake_k8s, cluster
):
    """Pitfall: ProgressDeadlineExceeded stays after the pods recovered; the counts say
    complete."""
    fake_k8s.add_deployment("web", "api", replicas=2, progress_deadline=1)
    fake_k8s.stick("web", "api")
    cluster.restart("web", "api")
    final = cluster.follower("web", "api").run(lambda s: None, timeout=20)
    assert final.failed and final.reason == "ProgressDeadlineExceeded"
    reasons = {c.reason for p in cluster.failing_pods("web", "api") for c in p.containers}
    assert reasons == {"CrashLoopBackOff"}
    fake_k8s.recover("web", "api")
    state = cluster.rollout("web", "api")
    assert state.reason == "ProgressDeadlineExceeded"  # stale
    assert state.complete and not state.failed


def test_stop_ends_a_follower_blocked_in_a_watch(fake_k8s, cluster):
    fake_k8s.add_deployment("web", "api", replicas=1, progress_deadline=600)
    fake_k8s.stick("web", "api")
    cluster.restart("web", "api")
    follower = cluster.follower("web", "api")
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("s", follower.run(print, 60)))
    thread.start()
    fake_k8s.wait_for(lambda: fake_k8s._watchers)  # the follower is inside its watch
    started = time.monotonic()
    follower.stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert not result["s"].complete and not result["s"].failed
