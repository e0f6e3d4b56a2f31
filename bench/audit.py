"""Audit store throughput and latency with the durability guarantee on.

Appends N records (default 2000) to a fresh store, first from one thread, then from
``--threads`` threads (default 8) sharing one store, each append committed with
``synchronous=FULL`` (the WAL fsync'ed) before it returns, exactly as in production. Then
times ``verify`` over each store.

    .venv/bin/python bench/audit.py [--records 2000] [--threads 8] [--dir DIR]

The store is created in a temporary directory under ``--dir`` (default: the system's temporary
directory). Point it at the disk that will hold ``OPSROOM_DATA_DIR``: on tmpfs an fsync costs
nothing and the figures mean little.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.runtime.audit import FILENAME, AuditStore


def append_one(store: AuditStore, i: int) -> float:
    started = time.perf_counter()
    store.append(
        "started",
        action="deploy",
        target=f"web-{i % 10}",
        actor_id="8xk3hqz6fjgcbxe1p7nwyr1toa",
        actor_name="alice",
        channel_id="4yq1k9e3rbfr7mtn8wpd6o1uxh",
        post_id=f"post{i:022d}",
        parameters={"version": f"1.4.{i}", "hosts": ["web-1", "web-2"], "dry_run": False},
        outcome="",
        correlation_id=f"J-{i}",
    )
    return time.perf_counter() - started


def run(store: AuditStore, total: int, threads: int) -> tuple[list[float], float]:
    """Append ``total`` records from ``threads`` threads; (latencies, wall-clock seconds)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = [total // threads + (1 if n < total % threads else 0) for n in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(n: int, count: int) -> None:
        mine = []
        barrier.wait()
        for i in range(count):
            mine.append(append_one(store, n * total + i))
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work, args=(n, count)) for n, count in enumerate(per_thread)]
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.perf_counter()
    for worker in workers:
        worker.join()
    return sorted(latencies), time.perf_counter() - started


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None, help="where to create the store")
    args = parser.parse_args()

    print(
        f"audit store benchmark: {args.records} records, SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()}, WAL + synchronous=FULL"
    )
    header = (
        f"{'appends':<24} {'records':>8} {'rec/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    )
    rows = []
    verifies = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="opsroom-audit-bench-") as tmp:
        print(f"store in {tmp}")
        for name, threads in (("sequential", 1), (f"{args.threads} threads", args.threads)):
            path = Path(tmp) / name.replace(" ", "-") / FILENAME
            store = AuditStore(path)
            try:
                mode = store._db.execute("PRAGMA synchronous").fetchone()[0]
                assert mode == 2, f"synchronous is {mode}, expected 2 (FULL)"
                latencies, elapsed = run(store, args.records, threads)
                ms = [x * 1000 for x in latencies]
                rows.append(
                    f"{name:<24} {len(ms):>8} {len(ms) / elapsed:>8.0f} "
                    f"{statistics.median(ms):>8.2f} {percentile(ms, 0.99):>8.2f} {ms[-1]:>8.2f}"
                )
                started = time.perf_counter()
                result = store.verify()
                took = time.perf_counter() - started
                assert result.ok and result.records == args.records, result
                size = sum(f.stat().st_size for f in path.parent.iterdir()) / 1e6
                verifies.append(
                    f"{'verify ' + name + ' store':<24} {result.records:>8} "
                    f"{result.records / took:>8.0f} total {took * 1000:.1f} ms ({size:.1f} MB)"
                )
            finally:
                store.close()
    print()
    print(header)
    print("\n".join(rows))
    print()
    print(f"{'verify':<24} {'records':>8} {'rec/s':>8}")
    print("\n".join(verifies))
    print(f"\ncpus: {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
