import threading

from bot.backends.dispatch import CommandPool


def test_admin_drain_calls_do_not_wait_and_shutdown_has_one_deadline(monkeypatch):
    pool = CommandPool(4)
    release = threading.Event()
    finished: list[int] = []
    for n in range(4):
        pool.apply_async(lambda n=n: release.wait(30) and finished.append(n))
    pool.close()  # what Errbot does before an admin-only command
    pool.join()
    pool.apply_async(lambda: None).wait()
    assert finished == []  # nothing was drained: the four commands still run
    # One deadline for all threads: each join gets what is left of it, not a fresh 0.3 s.
    threads = list(pool._executor._threads)
    joins: list[float] = []
    for thread in threads:
        monkeypatch.setattr(
            thread, "join", lambda timeout, join=thread.join: (joins.append(timeout), join(timeout))
        )
    assert pool.shutdown(timeout=0.3) is False  # four busy threads
    assert len(joins) == 4 and sum(joins) <= 0.3
    release.set()
    assert pool.shutdown(timeout=30) is True
    assert sorted(finished) == [0, 1, 2, 3]
