"""A file whose age tells a health check whether the bot is connected and working."""

from __future__ import annotations

import os
import time
from pathlib import Path

FILENAME = "heartbeat"


def beat(data_dir: Path) -> None:
    """Write the current time atomically (a reader never sees a half-written file)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{FILENAME}.tmp"
    tmp.write_text(f"{time.time():.3f}\n", encoding="ascii")
    os.replace(tmp, data_dir / FILENAME)


def heartbeat_age(data_dir: Path) -> float | None:
    """Seconds since the last beat, or None when there has been none."""
    try:
        stamp = float((data_dir / FILENAME).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    return max(0.0, time.time() - stamp)


def clear(data_dir: Path) -> None:
    """Remove the heartbeat (on disconnect or shutdown) so the health check fails at once."""
    (data_dir / FILENAME).unlink(missing_ok=True)
