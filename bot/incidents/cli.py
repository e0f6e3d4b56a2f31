"""``opsroom incident export <id> --format md|json``: the post-mortem, from the bot's host.

Reads the incident store and the audit log under ``OPSROOM_DATA_DIR`` (read-only: the
running bot keeps writing them) and the ``OPSROOM_INCIDENTS`` configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bot.errors import AuditError
from bot.incidents.config import load_incidents_config
from bot.incidents.model import parse_ref
from bot.incidents.postmortem import PostMortem
from bot.incidents.store import FILENAME, IncidentStore
from bot.runtime.audit import FILENAME as AUDIT_FILENAME
from bot.runtime.audit import AuditStore
from bot.settings import SettingsError, get_settings


def add_incident_commands(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser("export", help="write an incident's post-mortem")
    export.add_argument("incident", help="the incident: INC-7 or 7")
    export.add_argument("--format", choices=("md", "json"), default="md")
    export.add_argument("--output", metavar="PATH", help="write here instead of stdout")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    settings = get_settings()
    number = parse_ref(args.incident)
    if number is None:
        raise SettingsError(f"incident export: {args.incident!r} is not an incident (INC-7 or 7)")
    path = Path(settings.opsroom_data_dir) / FILENAME
    if not path.is_file():
        raise SettingsError(f"incident export: no incidents at {path} (OPSROOM_DATA_DIR)")
    config = load_incidents_config(settings.opsroom_incidents)
    store = IncidentStore(path)
    try:
        incident = store.get(number)
        if incident is None:
            raise SettingsError(f"incident export: no incident INC-{number} in {path}")
        audit = None
        try:
            audit = AuditStore(Path(settings.opsroom_data_dir) / AUDIT_FILENAME, read_only=True)
        except AuditError as exc:
            print(f"opsroom: no audit log ({exc}); actions are left out", file=sys.stderr)
        try:
            document = PostMortem(incident, config, store, audit)
        finally:
            if audit is not None:
                audit.close()
    finally:
        store.close()
    text = (
        document.markdown()
        if args.format == "md"
        else json.dumps(document.as_dict(), indent=2, ensure_ascii=False) + "\n"
    )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
