"""``opsroom do``: an operator at the bot's host runs an action through the running bot.

The request goes to the bot's own HTTP server (the address it wrote to
``OPSROOM_DATA_DIR/http.address``, else ``OPSROOM_HTTP_LISTEN``) with the operator token the
bot wrote at start (``OPSROOM_DATA_DIR/operator.token``); see :mod:`bot.operator_api`.
With ``--wait`` the run's records are read from the audit log (read-only) until it ends.

Exit status: 0 accepted (or, with ``--wait``, succeeded); 1 denied, refused, failed, or still
not finished when the wait ran out; 2 usage, configuration or connection errors.
"""

from __future__ import annotations

import argparse
import getpass
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bot.errors import AuditError
from bot.http.server import parse_listen
from bot.operator_api import ADDRESS_FILE, PATH, TOKEN_FILE
from bot.runtime.audit import TERMINAL_EVENTS, AuditEvent, AuditRecord, AuditStore
from bot.runtime.audit_cli import audit_path
from bot.settings import Settings, get_settings

EXIT_OK = 0
EXIT_NOT_DONE = 1
EXIT_USAGE = 2
REQUEST_TIMEOUT_SECONDS = 30
POLL_SECONDS = 0.2
# Events after which a run goes no further (besides the terminal ones of a started job).
ENDED_EVENTS = TERMINAL_EVENTS | {
    AuditEvent.DENIED,
    AuditEvent.REJECTED,
    AuditEvent.EXPIRED,
    AuditEvent.ABANDONED,
}
LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class CliError(Exception):
    """Something to tell the operator before exiting with status 2."""


def add_do_command(sub: Any) -> None:
    do = sub.add_parser(
        "do",
        help="run an action through the running bot, as an operator acting as policy roles",
        description="Run an action through the running bot as an operator. The policy "
        "decides what the roles given with --as-role may do. Needs read access to the "
        "bot's data directory (its operator token).",
    )
    do.add_argument("action", help="the action's name, e.g. hold")
    do.add_argument("arguments", nargs="*", help="the action's arguments, as typed in chat")
    do.add_argument(
        "--as-role",
        dest="roles",
        action="append",
        required=True,
        metavar="ROLE",
        help="a policy role to act as (repeat for several)",
    )
    do.add_argument(
        "--channel", default="", help="a channel (~team/channel, ~channel or id) to echo in"
    )
    do.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for the run to end and show its outcome",
    )
    do.set_defaults(func=cmd_do)


def cmd_do(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        token = read_token(settings.opsroom_data_dir)
        url = bot_url(settings)
        answer = post(url, settings, token, request_body(args))
    except CliError as exc:
        print(f"opsroom: {exc}", file=sys.stderr)
        return EXIT_USAGE
    status = answer.get("status", "")
    job_id = answer.get("job_id", "")
    if status in ("denied", "refused"):
        print(f"{status}: {answer.get('reason', '')} (audit {answer.get('audit', '-')})")
        return EXIT_NOT_DONE
    print(f"{status}: {args.action} job {job_id}")
    if args.wait <= 0:
        return EXIT_OK
    return wait_for(job_id, args.wait)


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "action": args.action,
        "arguments": " ".join(args.arguments),
        "operator": getpass.getuser(),
        "roles": args.roles,
        "channel": args.channel,
    }


def read_token(data_dir: Path) -> str:
    path = data_dir / TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CliError(
            f"no operator token at {path}: is the bot running with this OPSROOM_DATA_DIR "
            "and an HTTP server (OPSROOM_HTTP_LISTEN)?"
        ) from None
    except OSError as exc:
        raise CliError(
            f"cannot read the operator token {path}: {exc.strerror}; only a user who may "
            "read the bot's data directory may act as an operator"
        ) from None


def bot_url(settings: Settings) -> str:
    """The running bot's HTTP server: the address it wrote at bind, else the setting."""
    try:
        written = (settings.opsroom_data_dir / ADDRESS_FILE).read_text(encoding="utf-8")
    except OSError:
        written = ""
    if written.strip():
        scheme, _, rest = written.strip().partition("://")
        listen = rest
    else:
        if not settings.opsroom_http_listen:
            raise CliError("OPSROOM_HTTP_LISTEN is empty: the bot serves no HTTP to reach")
        scheme = "https" if settings.opsroom_http_tls_cert else "http"
        listen = settings.opsroom_http_listen
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise CliError(f"OPSROOM_HTTP_LISTEN: {exc}") from None
    host = LOOPBACK.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def _tls(settings: Settings) -> ssl.SSLContext | None:
    """Trust the bot's own certificate (it may be self-signed), whatever name it carries:
    the CLI talks to the bot on its own host."""
    if settings.opsroom_http_tls_cert is None:
        return None
    context = ssl.create_default_context(cafile=str(settings.opsroom_http_tls_cert))
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def post(url: str, settings: Settings, token: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url + PATH,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(
            request, timeout=REQUEST_TIMEOUT_SECONDS, context=_tls(settings)
        ) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise CliError(f"the bot answered {exc.code}: {_error_of(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach the bot at {url} ({reason}): is it running, with its HTTP server "
            f"on OPSROOM_HTTP_LISTEN ({settings.opsroom_http_listen or 'empty'})?"
        ) from None


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
    except ValueError:
        return str(exc.reason)
    error = str(body.get("error", exc.reason))
    if body.get("actions"):
        error += f" (known: {', '.join(body['actions'])})"
    return error


def wait_for(job_id: str, seconds: float) -> int:
    """Follow the job's records in the audit log until the run ends or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    try:
        store = AuditStore(audit_path(), read_only=True)
    except AuditError as exc:
        print(f"opsroom: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with store:
        while True:
            ended = _ended(store.by_job(job_id))
            if ended is not None:
                print(f"{ended.event.value}: {ended.outcome} (audit {ended.id})".rstrip())
                return EXIT_OK if ended.event is AuditEvent.SUCCEEDED else EXIT_NOT_DONE
            if time.monotonic() >= deadline:
                print(f"not finished after {seconds:g}s: see `opsroom audit` for job {job_id}")
                return EXIT_NOT_DONE
            time.sleep(POLL_SECONDS)


def _ended(records: list[AuditRecord]) -> AuditRecord | None:
    return next((r for r in reversed(records) if r.event in ENDED_EVENTS), None)
