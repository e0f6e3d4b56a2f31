"""Service restart fan-out over SSH: parallel vs serial, and the connector's own overhead.

Starts 20 real OpenSSH sshd hosts on loopback (bot/testing/sshd.py) whose stand-in systemctl
takes 0.2 s per call, then restarts a service on all of them serially and in parallel
(max_parallel=20), cold (new connector: connect, key exchange, auth included) and warm (kept
connections). Target: a parallel restart on 20 hosts takes at most twice a single host's time.
The overhead rows compare the connector with bare paramiko ``exec_command`` on the same kept
connections, running ``true``.

    .venv/bin/python bench/ssh_fanout.py [--hosts 20] [--delay 0.2] [--repeat 20]

Needs /usr/sbin/sshd (``make test`` installs openssh-server when run as root).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paramiko

from bot.connectors.ssh import SSHConnector, SSHTarget
from bot.testing.sshd import SSHDPool

RESTART = ["systemctl", "restart", "opsroom-bench.service"]


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def restart_all(ssh: SSHConnector, targets: list[SSHTarget], parallel: int) -> None:
    results = ssh.run_many(targets, RESTART, timeout=30, max_parallel=parallel)
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"restart failed: {failed[0]}")


def raw_clients(targets: list[SSHTarget]) -> list[paramiko.SSHClient]:
    clients = []
    for t in targets:
        client = paramiko.SSHClient()
        client.load_host_keys(str(t.known_hosts))
        client.connect(t.address, t.port, t.user, key_filename=str(t.key_file), look_for_keys=False)
        clients.append(client)
    return clients


def raw_true(client: paramiko.SSHClient) -> None:
    _, stdout, _ = client.exec_command("true")
    stdout.channel.recv_exit_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds per systemctl call")
    parser.add_argument("--repeat", type=int, default=20, help="samples for the overhead rows")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="opsroom-bench-ssh-") as tmp:
        pool = SSHDPool(Path(tmp))
        try:
            hosts = pool.hosts(args.hosts)
            known_hosts = Path(tmp) / "known_hosts"
            known_hosts.write_text(pool.known_hosts_text(hosts))
            targets = [
                SSHTarget(
                    name=h.name,
                    address=h.address,
                    port=h.port,
                    user=h.user,
                    key_file=pool.client_key.path,
                    known_hosts=known_hosts,
                )
                for h in hosts
            ]
            for h in hosts:
                h.set_delay(args.delay)
            rows = bench_restart(targets, args.hosts)
            for h in hosts:
                h.set_delay(0)
            rows += bench_overhead(targets, args.repeat)
        finally:
            pool.close()

    print(f"\nSSH fan-out: {args.hosts} sshd hosts on loopback, systemctl takes {args.delay} s")
    print(f"{'measurement':<62} {'value':>10}")
    for name, value in rows:
        print(f"{name:<62} {value:>10}")


def bench_restart(targets: list[SSHTarget], n: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    times: dict[str, float] = {}
    for mode in ("cold", "warm"):
        with SSHConnector(max_parallel=n) as ssh:
            if mode == "warm":  # connect everything first; measure with kept connections
                restart_all(ssh, targets, n)
            times[f"single {mode}"] = timed(lambda ssh=ssh: restart_all(ssh, targets[:1], 1))
            if mode == "cold":
                ssh.close()
            times[f"serial {mode}"] = timed(lambda ssh=ssh: restart_all(ssh, targets, 1))
            if mode == "cold":
                ssh.close()
            times[f"parallel {mode}"] = timed(lambda ssh=ssh: restart_all(ssh, targets, n))
    for mode, note in (("cold", "connect+auth included"), ("warm", "kept connections")):
        single, serial, parallel = (times[f"{k} {mode}"] for k in ("single", "serial", "parallel"))
        rows += [
            (f"restart, 1 host, {note} (s)", f"{single:.3f}"),
            (f"restart, {n} hosts serially, {note} (s)", f"{serial:.3f}"),
            (f"restart, {n} hosts max_parallel={n}, {note} (s)", f"{parallel:.3f}"),
            (f"parallel / single, {note} (target <= 2x)", f"{parallel / single:.2f}x"),
        ]
    return rows


def bench_overhead(targets: list[SSHTarget], repeat: int) -> list[tuple[str, str]]:
    n = len(targets)
    with SSHConnector(max_parallel=n) as ssh:
        ssh.run_many(targets, ["true"], timeout=10)  # connect
        one = statistics.median(
            timed(lambda: ssh.run(targets[0], ["true"], timeout=10)) for _ in range(repeat)
        )
        fan = statistics.median(
            timed(lambda: ssh.run_many(targets, ["true"], timeout=10)) for _ in range(repeat)
        )
    clients = raw_clients(targets)
    try:
        raw_one = statistics.median(timed(lambda: raw_true(clients[0])) for _ in range(repeat))
        with ThreadPoolExecutor(n) as executor:
            raw_fan = statistics.median(
                timed(lambda: list(executor.map(raw_true, clients))) for _ in range(repeat)
            )
    finally:
        for client in clients:
            client.close()
    return [
        ("`true` on 1 host, kept connection, connector (ms)", f"{one * 1000:.1f}"),
        ("`true` on 1 host, kept connection, bare paramiko (ms)", f"{raw_one * 1000:.1f}"),
        ("per-command connector overhead, 1 host (ms)", f"{(one - raw_one) * 1000:.1f}"),
        (f"`true` on {n} hosts in parallel, connector (ms)", f"{fan * 1000:.1f}"),
        (f"`true` on {n} hosts in parallel, bare paramiko (ms)", f"{raw_fan * 1000:.1f}"),
        (
            f"per-host connector overhead in the {n}-host fan-out (ms)",
            f"{(fan - raw_fan) / n * 1000:.2f}",
        ),
    ]


if __name__ == "__main__":
    main()
