"""Crash-safe errbot storage plugin backed by SQLite.

Errbot's default ``Shelf`` storage silently falls back to ``dbm.dumb`` when no
better dbm module is available, and ``dbm.dumb`` rewrites its index file
non-atomically: a SIGTERM at the wrong moment corrupted the whole store.  This
plugin keeps errbot's storage contract (see ``errbot.storage.base``) but puts
every namespace in its own SQLite database.

Enable it in the errbot config with::

    STORAGE = "SQLite"
    BOT_EXTRA_STORAGE_PLUGINS_DIR = os.path.dirname(bot.storage.__file__)

Design decisions:

* **One file per namespace** (``<BOT_DATA_DIR>/<namespace>.sqlite``), mirroring
  the Shelf layout (``<namespace>.db``).  Each ``open()`` owns its connection
  outright, so closing one plugin's storage (errbot does this on every plugin
  deactivate/reload) cannot affect another's; a damaged file only takes one
  plugin down; one plugin's state can be inspected, backed up or deleted
  with ordinary file tools.  The ``.sqlite`` suffix never collides with files
  left behind by Shelf.
* **WAL + synchronous=FULL.**  With WAL, ``NORMAL`` already survives a killed
  *process*, but a commit acknowledged just before a power loss or kernel
  crash may be rolled back.  ``FULL`` fsyncs the WAL on every commit, so a
  ``set`` that returned is durable.  Storage writes in a chat bot are rare
  (config, ACLs, plugin state), so the fsync per write is affordable.
* **Autocommit**: every ``set``/``remove`` is one statement committed before
  the method returns.
* **Pickle protocol 2**, exactly what errbot's Shelf uses, so values can be
  migrated between the two stores unchanged.
* **Thread safety**: errbot calls storage from its worker-thread pool, so
  the connection is created with ``check_same_thread=False`` and every use of
  it is serialised by a per-store lock.
"""

from __future__ import annotations

import logging
import os
import pickle
import sqlite3
import threading
from typing import Any
from urllib.parse import quote

from errbot.storage.base import StorageBase, StoragePluginBase

from bot.errors import OpsroomError

log = logging.getLogger("errbot.storage.sqlite")

#: Same protocol errbot's Shelf storage uses (``shelve.DbfilenameShelf(protocol=2)``).
PICKLE_PROTOCOL = 2
FILE_SUFFIX = ".sqlite"
#: Seconds to wait on a lock held by another *process* (e.g. an admin CLI
#: reading the store); threads of this process are serialised by our own lock.
BUSY_TIMEOUT_S = 30.0

_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"


class StorageClosedError(OpsroomError, RuntimeError):
    """Raised when a closed store is used."""


def namespace_path(basedir: str, namespace: str) -> str:
    """Return the database file for ``namespace`` under ``basedir``.

    Namespaces are errbot plugin names, normally plain identifiers; anything
    else is percent-encoded so a namespace can never escape ``basedir``.
    """
    if namespace in ("", ".", ".."):
        raise ValueError(f"invalid storage namespace {namespace!r}")
    return os.path.join(basedir, quote(namespace, safe="") + FILE_SUFFIX)


class SQLiteStorage(StorageBase):
    """One errbot storage namespace stored in one SQLite database file."""

    def __init__(self, path: str) -> None:
        log.debug("Open SQLite storage %s", path)
        self.path = path
        self._lock = threading.Lock()
        # Create the file owner-only before SQLite does: the store can hold
        # secrets (plugin configs) and SQLite gives its -wal/-shm files the
        # same permissions as the main database file.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,  # autocommit: each statement commits on its own
            check_same_thread=False,
        )
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise sqlite3.OperationalError(f"cannot enable WAL on {path} (got {mode!r})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._conn: sqlite3.Connection | None = conn

    def _db(self) -> sqlite3.Connection:
        # Callers hold self._lock.
        if self._conn is None:
            raise StorageClosedError(f"storage {self.path} is closed")
        return self._conn

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._db().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return pickle.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        # Pickle outside the lock: an unpicklable value fails before touching the db.
        blob = pickle.dumps(value, protocol=PICKLE_PROTOCOL)
        with self._lock:
            self._db().execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, blob),
            )

    def remove(self, key: str) -> None:
        with self._lock:
            deleted = self._db().execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount
        if deleted == 0:
            raise KeyError(key)

    def len(self) -> int:
        with self._lock:
            return self._db().execute("SELECT COUNT(*) FROM kv").fetchone()[0]

    def keys(self) -> list[str]:
        """Return a snapshot: callers may mutate the store while iterating it."""
        with self._lock:
            return [row[0] for row in self._db().execute("SELECT key FROM kv ORDER BY key")]

    def close(self) -> None:
        """Close the connection; safe to call more than once."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            # Closing the last connection checkpoints the WAL into the main file.
            conn.close()
            log.debug("Closed SQLite storage %s", self.path)


class SQLiteStoragePlugin(StoragePluginBase):
    """Errbot storage factory: ``open(namespace)`` -> :class:`SQLiteStorage`.

    The directory is ``STORAGE_CONFIG["basedir"]`` if set, else ``BOT_DATA_DIR``
    (the same convention as errbot's Shelf plugin).
    """

    def __init__(self, bot_config: Any) -> None:  # Errbot's config module
        super().__init__(bot_config)
        self.basedir: str = self._storage_config.get("basedir") or bot_config.BOT_DATA_DIR

    def open(self, namespace: str) -> SQLiteStorage:
        os.makedirs(self.basedir, exist_ok=True)
        return SQLiteStorage(namespace_path(self.basedir, namespace))
