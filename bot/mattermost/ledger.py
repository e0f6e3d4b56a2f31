"""The record of handled posts: exactly-once processing and backfill watermarks.

One SQLite file under ``OPSROOM_DATA_DIR``. A post is *claimed* (its id inserted) before it
is handed to Errbot, in the same transaction that moves its channel's watermark forward, so
that after a reconnect or a restart a post seen twice (replayed by the server, found again by
backfill) is recognised and not run again. A crash between the claim and the run loses that
one command rather than running it twice: for operations commands, "not run, re-issue it" is
the safe failure.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS handled_posts (
    post_id    TEXT PRIMARY KEY,
    channel_id TEXT NOT NULL,
    create_at  INTEGER NOT NULL,
    outcome    TEXT NOT NULL,
    handled_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS channel_watermarks (
    channel_id     TEXT PRIMARY KEY,
    last_create_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bot_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# How long handled post ids are kept; far longer than any replay or backfill reaches back.
RETENTION_SECONDS = 7 * 86400


class Ledger:
    """Thread-safe store of handled post ids and per-channel watermarks."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # WAL with synchronous=NORMAL: every commit survives a crash of the process (the
        # failure that matters here); only a power loss can lose the last commits.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.execute(
            "DELETE FROM handled_posts WHERE handled_at < ?", (time.time() - RETENTION_SECONDS,)
        )

    def claim(self, post_id: str, channel_id: str, create_at: int, outcome: str) -> bool:
        """Record a post as handled. False when it already was (do not handle it again)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO handled_posts VALUES (?, ?, ?, ?, ?)",
                    (post_id, channel_id, create_at, outcome, time.time()),
                ).rowcount
                self._db.execute(
                    "INSERT INTO channel_watermarks VALUES (?, ?) ON CONFLICT(channel_id) "
                    "DO UPDATE SET last_create_at = max(last_create_at, excluded.last_create_at)",
                    (channel_id, create_at),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return inserted == 1

    def watermark(self, channel_id: str) -> int | None:
        """``create_at`` (ms) of the newest post seen in the channel, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT last_create_at FROM channel_watermarks WHERE channel_id = ?",
                (channel_id,),
            ).fetchone()
        return row[0] if row else None

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM bot_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO bot_state VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
