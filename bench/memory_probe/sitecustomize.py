"""Loaded by the bot process when bench/soak.py runs it with ``--trace-memory``.

It watches ``$OPSROOM_SOAK_SNAPSHOTS`` for ``<name>.request`` files: ``start.request``
starts tracemalloc (after start-up, which it would slow too much), any other is answered
with a tracemalloc snapshot dumped to ``<name>`` (after a garbage collection, so that only
what is still referenced counts).
"""

import gc
import os
import threading
import time
import tracemalloc
from pathlib import Path

FRAMES = 25


def _serve(folder: Path) -> None:
    while True:
        for request in folder.glob("*.request"):
            target = folder / request.stem
            if request.stem == "start":
                tracemalloc.start(FRAMES)
                target.touch()
            else:
                gc.collect()
                tracemalloc.take_snapshot().dump(str(target.with_suffix(".tmp")))
                target.with_suffix(".tmp").rename(target)
            request.unlink()
        time.sleep(0.2)


if os.environ.get("OPSROOM_SOAK_SNAPSHOTS"):
    threading.Thread(
        target=_serve,
        args=(Path(os.environ["OPSROOM_SOAK_SNAPSHOTS"]),),
        name="soak-memory-probe",
        daemon=True,
    ).start()
