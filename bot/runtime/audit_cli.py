"""``opsroom audit export`` and ``opsroom audit verify``: the audit log from the shell.

Both open ``$OPSROOM_DATA_DIR/audit.sqlite3`` read-only, so they are safe to run beside the
bot, on a copy, or on a file whose directory the operator cannot write. Exit codes: 0 OK, 1 the
chain does not verify, 2 no audit log (or bad arguments / configuration).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TextIO

from bot.runtime.audit import FIELDS, FILENAME, AuditError, AuditRecord, AuditStore
from bot.settings import get_settings

EXIT_BROKEN = 1
EXIT_NO_LOG = 2


def parse_since(value: str) -> datetime:
    """ISO 8601 date or date-time (``2026-11-01``, ``2026-11-01T00:00``, ``...Z``, ``+02:00``);
    without an offset it is UTC, like the times in the log."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-01T00:00, got {value!r}"
        ) from None


def add_audit_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` and ``verify`` to the ``opsroom audit`` sub-command."""
    export = subparsers.add_parser(
        "export", help="write audit records as JSON lines or CSV (stdout by default)"
    )
    export.add_argument(
        "--format", choices=("jsonl", "csv"), default="jsonl", help="default: %(default)s"
    )
    export.add_argument(
        "--since",
        type=parse_since,
        metavar="TIME",
        help="only records at or after TIME (ISO 8601, UTC unless an offset is given)",
    )
    export.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: stdout")
    export.set_defaults(func=cmd_export)
    verify = subparsers.add_parser("verify", help="check the hash chain of the whole audit log")
    verify.set_defaults(func=cmd_verify)


def audit_path() -> Path:
    return get_settings().opsroom_data_dir / FILENAME


def _open_store() -> AuditStore | None:
    path = audit_path()
    try:
        return AuditStore(path, read_only=True)
    except AuditError as exc:
        print(f"opsroom: {exc}", file=sys.stderr)
        return None


@contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    if path is not None:
        with path.open("w", encoding="utf-8", newline="") as handle:
            yield handle
        return
    if isinstance(sys.stdout, io.TextIOWrapper):
        # The export is UTF-8 whatever the terminal's locale (ensure_ascii=False in JSON).
        sys.stdout.reconfigure(encoding="utf-8", newline="")
    yield sys.stdout
    sys.stdout.flush()


def write_jsonl(records: Iterator[AuditRecord], out: TextIO) -> int:
    """One canonical JSON object per line (the exact text the hash is over, plus ``hash``)."""
    count = 0
    for record in records:
        out.write(record.to_json() + "\n")
        count += 1
    return count


def write_csv(records: Iterator[AuditRecord], out: TextIO) -> int:
    """A header row, then one row per record; ``parameters`` is a JSON string column and
    ``duration_ms`` is empty when unknown."""
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    count = 0
    for record in records:
        data = record.as_dict()
        data["parameters"] = json.dumps(
            record.parameters, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        if data["duration_ms"] is None:
            data["duration_ms"] = ""
        writer.writerow([data[name] for name in FIELDS])
        count += 1
    return count


def cmd_export(args: argparse.Namespace) -> int:
    store = _open_store()
    if store is None:
        return EXIT_NO_LOG
    writer = write_csv if args.format == "csv" else write_jsonl
    try:
        with _output(args.output) as out:
            writer(store.since(args.since), out)
    except BrokenPipeError:  # `opsroom audit export | head`
        # As the Python docs advise: point stdout at devnull so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        store.close()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    store = _open_store()
    if store is None:
        return EXIT_NO_LOG
    try:
        result = store.verify()
    finally:
        store.close()
    if result.ok:
        print(f"audit log OK: {result.records} records")
        return 0
    print(f"audit log BROKEN at {result.first_bad}: {result.reason}")
    return EXIT_BROKEN
