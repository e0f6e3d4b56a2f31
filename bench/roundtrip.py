"""Command round trip through the real bot: websocket event in -> REST post out.

Starts the fake Mattermost server (tests/fake_mattermost) and a real ``opsroom run`` process,
then sends ``!echo`` commands and measures, for each, the time from the moment the server
emits the ``posted`` event to the moment it receives the bot's reply over REST. Senders are
closed-loop: each waits for its answer before sending the next command. The floor is a bare
websocket echo on loopback, measured the same way.

    python bench/roundtrip.py [--commands 1000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.server import serve
from websockets.sync.client import connect

from tests.e2e.harness import BotProcess, seed
from tests.fake_mattermost import FakeMattermost


class Result:
    def __init__(self, name: str, latencies: list[float], elapsed: float) -> None:
        self.name, self.latencies, self.elapsed = name, sorted(latencies), elapsed

    def row(self) -> str:
        n = len(self.latencies)
        p50 = statistics.median(self.latencies) * 1000
        p99 = self.latencies[min(n - 1, int(n * 0.99))] * 1000
        worst = self.latencies[-1] * 1000
        rate = n / self.elapsed
        return f"{self.name:<34} {n:>6} {rate:>10.0f} {p50:>8.2f} {p99:>8.2f} {worst:>8.2f}"


def run_senders(total: int, senders: int, one: Callable[[int, int], float], name: str) -> Result:
    """``one(sender, i)`` sends one request, waits for its answer and returns the latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_sender = total // senders

    def sender(s: int) -> None:
        mine = [one(s, i) for i in range(per_sender)]
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=sender, args=(s,)) for s in range(senders)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Result(name, latencies, time.perf_counter() - started)


def bench_bot(total: int, concurrency: int) -> list[Result]:
    arrivals: dict[str, float] = {}
    waiters: dict[str, threading.Event] = {}
    lock = threading.Lock()

    def received(post: dict) -> None:
        now = time.perf_counter()
        with lock:
            arrivals[post["message"]] = now
            event = waiters.get(post["message"])
        if event:
            event.set()

    mm = FakeMattermost(strict=False, post_received=received)
    mm.start()
    world = seed(mm)
    channels = [world.ops, world.secret, world.infra]
    users = [world.alice, world.bob, world.admin]
    with tempfile.TemporaryDirectory() as tmp:
        bot = BotProcess(mm.url, world.token, Path(tmp))
        bot.start()

        def one(sender: int, i: int) -> float:
            text = f"bench-{sender}-{i}"
            event = threading.Event()
            with lock:
                waiters[text] = event
            started = time.perf_counter()
            mm.post_as(users[sender % 3], channels[sender % 3], f"!echo {text}")
            if not event.wait(30):
                raise RuntimeError(f"no reply to {text}")
            return arrivals[text] - started

        for i in range(50):  # warm-up: imports, connections, caches
            one(999, i)
        results = [
            run_senders(total // 2, 1, lambda s, i: one(1000 + s, i), "bot, sequential"),
            run_senders(total, concurrency, one, f"bot, {concurrency} concurrent senders"),
        ]
        bot.stop()
    mm.stop()
    return results


def bench_floor(total: int, concurrency: int) -> list[Result]:
    ready = threading.Event()
    holder: dict = {}

    async def echo(ws) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            holder["port"] = server.sockets[0].getsockname()[1]
            holder["stop"] = asyncio.get_running_loop().create_future()
            ready.set()
            await holder["stop"]

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait()
    url = f"ws://127.0.0.1:{holder['port']}"
    clients: dict[int, object] = {}

    def one(sender: int, i: int) -> float:
        ws = clients.get(sender) or clients.setdefault(sender, connect(url))
        started = time.perf_counter()
        ws.send(f"{sender}-{i}")
        ws.recv()
        return time.perf_counter() - started

    results = [
        run_senders(total // 2, 1, one, "websocket echo floor, sequential"),
        run_senders(total, concurrency, one, f"websocket echo floor, {concurrency} concurrent"),
    ]
    for ws in clients.values():
        ws.close()
    loop.call_soon_threadsafe(holder["stop"].set_result, None)
    thread.join(5)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    results = bench_bot(args.commands, args.concurrency) + bench_floor(
        args.commands, args.concurrency
    )
    print(f"{'scenario':<34} {'n':>6} {'per sec':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
