"""``opsroom audit export`` and ``opsroom audit verify``: the audit log from the shell.

Both open ``$OPSROOM_DATA_DIR/audit.sqlite3`` read-only, so they are safe to run beside the
bot, on a copy, or on a file whose directory the operator cannot write. Exit codes: 0 OK, 1 the
chain does not verify, 2 no audit log (or bad arguments / configuration).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TextIO

from bot.runtime.audit import (
    FIELDS,
    FILENAME,
    HIGH_WATER_SUFFIX,
    AuditError,
    AuditRecord,
    AuditStore,
    VerifyResult,
)
from bot.runtime.audit_evidence import AuditKey, Checkpoint, Witness, witnesses_in
from bot.settings import Settings, get_settings

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
    export.add_argument("--job", metavar="J-...", help="only the records of this job")
    export.add_argument("--output", "-o", type=Path, metavar="FILE", help="default: stdout")
    export.set_defaults(func=cmd_export)
    verify = subparsers.add_parser(
        "verify",
        help="check the hash chain of the whole audit log, and outside evidence about it",
    )
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a file holding checkpoint lines and/or echo references kept elsewhere",
    )
    verify.add_argument(
        "--online",
        action="store_true",
        help="read the bot's checkpoints and echoes back from the audit channel",
    )
    verify.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="audit key file: require and check signatures (repeat for rotated keys)",
    )
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
        data = dict.fromkeys(FIELDS, "") | record.as_dict()
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
            writer(store.since(args.since, job_id=args.job), out)
    except BrokenPipeError:  # `opsroom audit export | head`
        # As the Python docs advise: point stdout at devnull so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        store.close()
    return 0


OFFLINE_COVERAGE = (
    "offline check: edits, deletions, insertions and reordering inside the log are "
    "detected, and a cut tail or a rewritten last record against the high-water mark "
    "{mark}; a re-hashed tail (with a rewritten {mark}) needs --checkpoint, --online or --key"
)


class EvidenceError(AuditError):
    """Outside evidence could not be read: the message says which and why."""


def evidence_from_files(paths: list[Path]) -> tuple[list[Checkpoint], list[Witness]]:
    checkpoints: list[Checkpoint] = []
    references: list[Witness] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise EvidenceError(f"cannot read {path}: {exc.strerror}") from None
        found, refs = witnesses_in([text], f"{path.name}: echo")
        if not found and not refs:
            raise EvidenceError(f"{path} holds no audit checkpoint line and no echo reference")
        checkpoints.extend(found)
        references.extend(refs)
    return checkpoints, references


def audit_channel_posts(settings: Settings) -> list[str]:
    """The messages the bot itself posted in ``OPSROOM_AUDIT_CHANNEL``, oldest first
    (posts by anyone else witness nothing)."""
    # Imported here: the offline commands must not need a Mattermost client.
    from bot.mattermost.directory import Directory
    from bot.mattermost.rest import MattermostREST

    if settings.mattermost_url is None or not settings.opsroom_audit_channel:
        raise EvidenceError("--online needs MATTERMOST_URL, a token and OPSROOM_AUDIT_CHANNEL")
    try:
        rest = MattermostREST(settings.driver_options())
        me = rest.login()
        name = settings.opsroom_audit_channel
        if re.fullmatch(r"[a-z0-9]{26}", name):
            channel_id = name
        else:
            directory = Directory(rest, settings.mattermost_teams)
            directory.refresh_teams()
            channel_id = directory.channel_by_name(name)["id"]
        posts: list[dict] = []
        for page in itertools.count():
            body = rest.get(f"/channels/{channel_id}/posts", {"page": page, "per_page": 200})
            batch = list((body.get("posts") or {}).values())
            posts.extend(batch)
            if not batch or not body.get("has_next", len(batch) == 200):
                break
    except Exception as exc:  # network, 401, unknown channel: all mean "no evidence"
        raise EvidenceError(f"cannot read the audit channel: {exc}") from None
    posts.sort(key=lambda post: post.get("create_at", 0))
    return [post.get("message", "") for post in posts if post.get("user_id") == me["id"]]


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        keys = [AuditKey.load(path) for path in args.key] if args.key else None
        checkpoints, references = evidence_from_files(args.checkpoint)
        if args.online:
            found, refs = witnesses_in(audit_channel_posts(get_settings()), "channel echo")
            if not found and not refs:
                raise EvidenceError("the audit channel holds no checkpoint and no echo")
            checkpoints += found
            references += refs
    except (AuditError, EvidenceError) as exc:
        print(f"opsroom: {exc}", file=sys.stderr)
        return EXIT_NO_LOG
    store = _open_store()
    if store is None:
        return EXIT_NO_LOG
    try:
        result = store.verify(checkpoints, references, keys)
    finally:
        store.close()
    print(_summary(result))
    evidence = len(checkpoints) + len(references)
    if evidence or keys is not None:
        print(
            f"checked against {len(checkpoints)} checkpoints, {len(references)} echoes"
            + (f", {result.signed} signatures" if keys is not None else "")
        )
    else:
        print(OFFLINE_COVERAGE.format(mark=Path(FILENAME).stem + HIGH_WATER_SUFFIX))
    return 0 if result.ok else EXIT_BROKEN


def _summary(result: VerifyResult) -> str:
    if result.ok:
        return f"audit log OK: {result.records} records"
    return f"audit log BROKEN at {result.first_bad}: {result.reason}"
