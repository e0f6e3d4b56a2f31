"""Kubernetes from chat: a 2,000-pod listing rendered in chat, and the cost of following a
rollout.

Starts the fake Mattermost, a real bot process and the fake Kubernetes API server (TLS,
bearer token, the real client), then

- lists a namespace holding 2,000 pods (``!k8s pods in bench``) ``--repeat`` times: the time
  from the command's post to the bot's answer (fetched, summarised, cut to 50 rows, rendered);
- restarts a 5-replica deployment ``--rollouts`` times, each followed to completion by the
  job: wall time (mostly the fake controller's pace, one pod step per ``--tick``), the API
  requests the bot made per rollout (one watch, no polling) and the bot process's CPU time
  per rollout.

    .venv/bin/python bench/kubernetes.py [--pods 2000] [--repeat 30] [--rollouts 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import HEADER, Result, live_bot
from bot.testing.fake_kubernetes import FakeKubernetes

# The job's first post (edited in place into its result) starts with these.
PODS = "⏳ `!k8s pods env=bench"
RESTART = "⏳ `!k8s rollout restart deployment=api"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


def write_config(folder: Path, cluster: FakeKubernetes) -> dict[str, str]:
    kubeconfig = cluster.kubeconfig(folder / "kubeconfig", contexts=("bench",))
    inventory = folder / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "environments": {
                    "bench": {
                        "hosts": {"bench-1": {"address": "127.0.0.1"}},
                        "kubernetes": {
                            "context": "bench",
                            "namespaces": ["bench"],
                            "max_replicas": 10,
                            "impersonate": True,
                        },
                    }
                }
            }
        )
    )
    policy = folder / "policy.yaml"
    policy.write_text(
        yaml.safe_dump({"roles": {"ops": {"members": ["@alice"], "grants": [{"action": "k8s.*"}]}}})
    )
    return {
        "KUBECONFIG": str(kubeconfig),
        "OPSROOM_INVENTORY": str(inventory),
        "OPSROOM_POLICY": str(policy),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rollouts", type=int, default=10)
    parser.add_argument("--tick", type=float, default=0.05, help="fake controller step (s)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="opsroom-bench-k8s-") as tmp:
        folder = Path(tmp)
        cluster = FakeKubernetes(folder / "api", tick=args.tick)
        cluster.start()
        try:
            for n in range(args.pods):
                failing = n % 97 == 0
                cluster.add_pod(
                    "bench",
                    f"web-{n:05d}",
                    labels={"app": "web"},
                    waiting="CrashLoopBackOff" if failing else "",
                    restarts=3 if failing else 0,
                )
            cluster.add_deployment("bench", "api", replicas=5)
            with live_bot(**write_config(folder, cluster)) as live:
                live.job("!k8s pods in bench", PODS)  # warm: client, TLS, imports
                listing = []
                started = time.perf_counter()
                for _ in range(args.repeat):
                    latency, answer = live.job("!k8s pods in bench", PODS)
                    listing.append(latency)
                elapsed = time.perf_counter() - started
                total = args.pods + 5  # and the deployment's
                assert f"{total} pod(s) in bench" in answer, answer[:300]
                assert f"{total - 50} more" in answer, answer[-300:]

                pid = live.bot.proc.pid if live.bot.proc else 0
                walls, cpus, requests = [], [], []
                for _ in range(args.rollouts):
                    # restartedAt has one-second precision, as kubectl's: a second restart
                    # within the same second changes nothing, so space them out.
                    time.sleep(1.1)
                    before_cpu, before_requests = cpu_seconds(pid), len(cluster.requests)
                    wall, final = live.job("!k8s rollout restart api in bench", RESTART, 120)
                    wall_done = wall
                    if "rollout complete" not in final:
                        raise SystemExit(f"rollout did not complete: {final}")
                    walls.append(wall_done)
                    cpus.append(cpu_seconds(pid) - before_cpu)
                    requests.append(len(cluster.requests) - before_requests)
        finally:
            cluster.stop()

    print(HEADER)
    print(Result(f"!k8s pods, {args.pods} pods, answer in chat", listing, elapsed).row())
    print(Result(f"rollout restart followed (5 pods, tick {args.tick}s)", walls, sum(walls)).row())
    print()
    print(f"{'per followed rollout':<44} {'median':>8} {'max':>8}")
    print(
        f"{'bot CPU time (ms)':<44} {statistics.median(cpus) * 1000:>8.0f} {max(cpus) * 1000:>8.0f}"
    )
    print(
        f"{'API requests (1 patch, reads, 1 watch)':<44} {statistics.median(requests):>8.0f} "
        f"{max(requests):>8.0f}"
    )


if __name__ == "__main__":
    main()
