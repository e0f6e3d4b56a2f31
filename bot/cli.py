"""The ``opsroom`` command: run the bot, check its configuration, report its health."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import signal
import sys
from pathlib import Path
from types import ModuleType

from bot import redaction
from bot.errbot_config import config_module
from bot.incidents.cli import add_incident_commands
from bot.operator_cli import add_do_command
from bot.preflight import check_online, preflight
from bot.runtime.audit_cli import add_audit_commands
from bot.settings import SettingsError, get_settings

EXIT_CONFIG = 2
log = logging.getLogger("opsroom")


def _load_config_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("config", path)
    if spec is None or spec.loader is None:
        raise SettingsError(f"cannot load Errbot configuration from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["config"] = module
    spec.loader.exec_module(module)
    return module


def _terminate_on_sigterm() -> None:
    """Turn SIGTERM into the same clean shutdown as Ctrl-C (Errbot installs no handler)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def cmd_run(args: argparse.Namespace) -> int:
    from errbot.bootstrap import setup_bot
    from errbot.logs import console_hdlr

    settings = get_settings()
    if args.config is None:
        config = config_module(settings)
    else:
        config_path = Path(args.config)
        if not config_path.is_file():
            print(
                f"opsroom: {config_path} not found; pass the path of an Errbot config file, "
                "or leave out --config for the built-in configuration",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        config = _load_config_module(config_path.resolve())
    in_effect = preflight(settings)
    try:
        settings.opsroom_data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(
            f"OPSROOM_DATA_DIR: cannot create {settings.opsroom_data_dir.resolve()}: "
            f"{exc.strerror}; set OPSROOM_DATA_DIR to a directory this user may create and write"
        ) from None
    _terminate_on_sigterm()
    # Errbot attaches its console handler during setup; redact through it from the start.
    redaction.install(settings.secrets, extra_handlers=[console_hdlr])
    bot = setup_bot(config.BACKEND, logging.getLogger(), config)
    redaction.install(settings.secrets)  # handlers added by setup (the log file)
    log.info("Opsroom starting on the %s backend", config.BACKEND)
    log.info("Inventory: %s; policy: %s", in_effect.inventory, in_effect.policy)
    for warning in in_effect.warnings:
        log.warning("%s", warning)
    bot.serve_forever()
    return int(getattr(bot, "exit_code", 0))


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = get_settings()
    in_effect = preflight(settings)
    online = check_online(settings) if args.online else None
    print("configuration OK")
    print(in_effect.table())
    if online:
        print(online)
    for warning in in_effect.warnings:
        print(f"warning: {warning}")
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    from bot.mattermost.heartbeat import heartbeat_age

    settings = get_settings()
    age = heartbeat_age(settings.opsroom_data_dir)
    limit = 3 * settings.opsroom_ws_ping_interval.total_seconds()
    if age is None:
        print("unhealthy: no heartbeat yet")
        return 1
    if age > limit:
        print(f"unhealthy: last heartbeat {age:.0f}s ago (limit {limit:.0f}s)")
        return 1
    print(f"healthy: last heartbeat {age:.1f}s ago")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsroom",
        description="Opsroom ChatOps bot. Settings come from the environment; "
        "see docs/configuration.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the bot")
    run.add_argument(
        "--config",
        metavar="PATH",
        help="an Errbot config file to use instead of the built-in configuration",
    )
    run.set_defaults(func=cmd_run)
    check = sub.add_parser(
        "check-config", help="check what `run` needs, show what is in effect, and exit"
    )
    check.add_argument(
        "--online",
        action="store_true",
        help="also ask the Mattermost server whether it accepts the token",
    )
    check.set_defaults(func=cmd_check_config)
    health = sub.add_parser("healthcheck", help="exit 0 when the bot's heartbeat is fresh")
    health.set_defaults(func=cmd_healthcheck)
    audit = sub.add_parser("audit", help="export or verify the audit log")
    add_audit_commands(audit.add_subparsers(dest="audit_command", required=True))
    add_do_command(sub)
    incident = sub.add_parser("incident", help="export an incident's post-mortem")
    add_incident_commands(incident.add_subparsers(dest="incident_command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"opsroom: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
