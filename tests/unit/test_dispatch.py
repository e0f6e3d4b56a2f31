import threading
import time

from bot.backends.dispatch import CommandPool


def test_admin_drain_calls_do_not_wait_and_shutdown_has_one_deadline():
    pool = CommandPool(4)
    release = threading.Event()
    for _ in range(4):
        pool.apply_async(release.wait, (5,))
    started = time.monotonic()
    pool.close()  # what Errbot does before an admin-only command
    pool.join()
    pool.apply_async(lambda: None).wait()
    assert time.monotonic() - started < 0.5  # nothing was drained
    started = time.monotonic()
    assert pool.shutdown(timeout=0.3) is False  # four busy threads, one 0.3 s deadline
    assert time.monotonic() - started < 1.0
    release.set()
    assert pool.shutdown(timeout=2) is True
