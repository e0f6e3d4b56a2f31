"""Alert webhooks: ingest throughput and alert-to-remediation latency.

1. Ingest: a receiver on the bot's HTTP server, in its own process (as in the bot), with
   its SQLite store under a temporary directory (``synchronous=FULL``: a 2xx means on
   disk). A client process posts Alertmanager v4 notifications from 16 connections, in
   batches of 1 alert and of 100 alerts, every alert new; alerts per second accepted and
   stored (the server's answers counted), and request latency.
2. Alert arrival -> remediation start: the receiver, the alert engine and the real action
   runtime (policy, audit log with fsync, job executor) in one process; one alert per
   notification at a steady rate; from sending the request to the action's body starting.

    .venv/bin/python bench/alerts.py [--alerts 5000] [--dir DIR]

Point ``--dir`` at the disk that will hold ``OPSROOM_DATA_DIR`` (on tmpfs an fsync is free).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

TOKEN = "bench-token-0123456789abcdef"
CONNECTIONS = 64


def notification(start: int, count: int, group: str) -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": group,
            "status": "firing",
            "receiver": "opsroom",
            "groupLabels": {"alertname": "ServiceDown"},
            "truncatedAlerts": 0,
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "ServiceDown",
                        "service": "nginx",
                        "host": f"h{i}",
                        "team": "web",
                    },
                    "annotations": {"summary": f"nginx down on h{i}"},
                    "startsAt": "2024-01-01T00:00:00Z",
                    "fingerprint": f"{i:016x}",
                }
                for i in range(start, start + count)
            ],
        }
    ).encode()


def alerts_file(directory: Path, rule: bool) -> Path:
    import yaml

    document: dict[str, Any] = {
        "receivers": {
            "am": {"kind": "alertmanager", "auth": {"bearer": {"token": {"env": "BENCH_TOKEN"}}}}
        },
        "routes": [{"matchers": [], "channel": "~ops"}],
        "storm": {"posts_per_minute": 10},
    }
    if rule:
        document["rules"] = [
            {
                "name": "restart",
                "matchers": ["alertname=ServiceDown"],
                "action": "service.restart",
                "arguments": {"service": "{{labels.service}}", "host": "{{labels.host}}"},
                "as_role": "remediator",
                "max_runs": 1_000_000,
                "max_targets": 1_000_000,
            }
        ]
    path = directory / "alerts.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


# --- 1. ingest ------------------------------------------------------------------------------
def ingest_server(directory: str, ready: Any, stop: Any) -> None:
    os.environ["BENCH_TOKEN"] = TOKEN
    from bot.alerts.auth import RefusalLog
    from bot.alerts.config import load_config
    from bot.alerts.receivers import Receiver
    from bot.alerts.store import AlertStore
    from bot.http import HttpServer

    config = load_config(alerts_file(Path(directory), rule=False))
    store = AlertStore(Path(directory) / "alerts.sqlite3")
    server = HttpServer("127.0.0.1:0", client_max_size=64 * 1024**2)
    receiver = Receiver(
        "am", config.receivers["am"], store, on_stored=lambda n: None, refusals=RefusalLog()
    )
    server.mount("POST", "/alerts/am", receiver.handle)
    server.start()
    ready.put(server.url)
    stop.wait()
    ready.put(store.event_count())
    server.stop()


async def post_all(url: str, bodies: list[bytes]) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    stored = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal stored
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(f"{url}/alerts/am", data=body, headers=headers) as r:
                    answer = await r.json()
                    assert r.status == 200, answer
                latencies.append(time.perf_counter() - started)
                stored += answer["new"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    return latencies, elapsed, stored


def ingest(base: Path, alerts: int, batch: int) -> str:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    directory = tempfile.mkdtemp(dir=base, prefix=f"ingest-{batch}-")
    process = context.Process(target=ingest_server, args=(directory, ready, stop))
    process.start()
    url = ready.get(timeout=60)
    bodies = [notification(i, batch, f"g{i}") for i in range(0, alerts, batch)]
    latencies, elapsed, stored = asyncio.run(post_all(url, bodies))
    stop.set()
    on_disk = ready.get(timeout=60)
    process.join(30)
    assert stored == alerts == on_disk, (stored, alerts, on_disk)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return (
        f"| ingest, batches of {batch:<3} | {alerts:>6} | {alerts / elapsed:>9,.0f} alerts/s "
        f"| request p50 {p50:6.2f} ms | p99 {p99:6.2f} ms |"
    )


# --- 2. arrival -> remediation start ---------------------------------------------------------
def remediation_latency(base: Path, count: int, rate: float) -> str:
    import requests

    os.environ["BENCH_TOKEN"] = TOKEN
    from bot.alerts.auth import RefusalLog
    from bot.alerts.config import load_config
    from bot.alerts.engine import AlertEngine
    from bot.alerts.receivers import Receiver
    from bot.alerts.store import AlertStore
    from bot.http import HttpServer
    from bot.redaction import Redactor
    from bot.runtime.actions import spec_of
    from bot.runtime.audit import AuditStore
    from bot.runtime.jobs import JobExecutor
    from bot.runtime.policy import Policy
    from bot.runtime.runtime import Runtime
    from bot.runtime.surface import NoSurface, Place
    from tests.alerts.world import POLICY, Ops

    started_at: dict[str, float] = {}

    class TimedOps(Ops):
        pass

    original = Ops.restart

    def timed(self: Any, ctx: Any, service: str, host: str) -> str:
        started_at[host] = time.perf_counter()
        return "ok"

    spec = spec_of(original)
    assert spec is not None
    import dataclasses

    timed_spec = dataclasses.replace(spec, func=timed)
    directory = Path(tempfile.mkdtemp(dir=base, prefix="remediate-"))
    config = load_config(alerts_file(directory, rule=True))
    store = AlertStore(directory / "alerts.sqlite3")
    runtime = Runtime(
        policy=Policy.from_mapping(POLICY),
        audit=AuditStore(directory / "audit.sqlite3", redact=Redactor([]).scrub_obj),
        executor=JobExecutor(max_workers=16),
        redactor=Redactor([]),
        surface=NoSurface(),
    )
    plugin = TimedOps()
    engine = AlertEngine(
        config, store, runtime, lambda: {"service.restart": (timed_spec, plugin)}, Place
    )
    server = HttpServer("127.0.0.1:0")
    receiver = Receiver(
        "am", config.receivers["am"], store, on_stored=engine.stored, refusals=RefusalLog()
    )
    server.mount("POST", "/alerts/am", receiver.handle)
    server.start()
    engine.start()
    sent: dict[str, float] = {}
    session = requests.Session()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    try:
        for i in range(count):
            body = notification(i, 1, f"single-{i}")
            sent[f"h{i}"] = time.perf_counter()
            session.post(f"{server.url}/alerts/am", data=body, headers=headers).raise_for_status()
            time.sleep(1 / rate)
        deadline = time.monotonic() + 60
        while len(started_at) < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        engine.stop()
        server.stop()
        runtime.executor.shutdown(wait=5)
    latencies = sorted(started_at[h] - sent[h] for h in started_at)
    assert len(latencies) == count, f"{len(latencies)} of {count} remediations started"
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(count - 1, int(count * 0.99))] * 1000
    return (
        f"| arrival -> remediation start, {rate:g}/s | {count:>6} | "
        f"p50 {p50:6.1f} ms | p99 {p99:6.1f} ms | max {latencies[-1] * 1000:6.1f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--remediations", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(dir=args.dir, prefix="opsroom-bench-alerts-"))
    print(f"alerts bench: {os.cpu_count()} CPUs, data under {base}")
    print(ingest(base, args.alerts, 1))
    print(ingest(base, args.alerts * 4, 100))
    print(remediation_latency(base, args.remediations, args.rate))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
