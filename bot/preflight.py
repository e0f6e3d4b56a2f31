"""What ``opsroom run`` needs beyond valid settings, checked before it starts.

``opsroom check-config`` and ``opsroom run`` share these checks, so that a configuration the
first one passes is one the second one starts with: the policy and inventory files, the data
directory, the extra plugin folders. :func:`preflight` also describes what is in effect
(backend, teams, policy, inventory, plugins, data directory) for ``check-config``'s summary
and the start-up log, and :func:`check_online` asks the Mattermost server whether it accepts
the token.
"""

from __future__ import annotations

import configparser
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bot.alerts.config import AlertsConfigError, check_rules, load_config
from bot.backends.registry import declared_actions
from bot.connectors.kubernetes import KubeConfig, missing_contexts
from bot.http.server import parse_listen
from bot.incidents.config import IncidentsConfigError, load_incidents_config
from bot.inventory import Inventory, InventoryError
from bot.inventory.kubernetes import kubernetes_contexts
from bot.outcomes import Table
from bot.rendering import TextRenderer
from bot.runtime.policy import Policy, PolicyError
from bot.settings import Settings, SettingsError
from bot.shipped import plugins_dir

NO_POLICY = "none: reads open, every change denied"
NO_INVENTORY = "none: SSH commands answer that no inventory is configured"
NO_ALERTS = "none (OPSROOM_ALERTS unset)"


@dataclass(frozen=True)
class InEffect:
    """What a bot started with these settings uses, in words."""

    backend: str
    teams: str
    policy: str
    inventory: str
    plugins: str
    data_dir: str
    warnings: list[str] = field(default_factory=list)
    http: str = "none"
    alerts: str = NO_ALERTS
    incidents: str = "defaults (docs/incidents.md)"

    def table(self) -> str:
        rows = [
            ("backend", self.backend),
            ("teams", self.teams),
            ("policy", self.policy),
            ("inventory", self.inventory),
            ("incidents", self.incidents),
            ("plugins", self.plugins),
            ("data directory", self.data_dir),
            ("http", self.http),
            ("alerts", self.alerts),
        ]
        return TextRenderer(width=None).table(Table(("setting", "in effect"), rows))


def preflight(settings: Settings) -> InEffect:
    """Check everything ``opsroom run`` will need; raise :class:`SettingsError` listing every
    problem (one per line, naming the setting and what to do), else describe what is in effect."""
    problems: list[str] = []
    warnings: list[str] = []
    policy = _policy(settings, problems, warnings)
    inventory = _inventory(settings, problems)
    incidents = _incidents(settings, problems)
    data_dir = settings.opsroom_data_dir.resolve()
    problem = data_dir_problem(data_dir)
    if problem:
        problems.append(problem)
    plugin_dirs = [plugins_dir()]
    for entry in settings.opsroom_extra_plugin_dirs:
        folder = Path(entry).resolve()
        if folder.is_dir():
            plugin_dirs.append(folder)
        else:
            problems.append(
                f"OPSROOM_EXTRA_PLUGIN_DIRS: {folder} is not a directory; "
                "fix the path or remove it from the list"
            )
    http = _http(settings, problems)
    alerts = _alerts(settings, plugin_dirs, problems)
    if problems:
        raise SettingsError("\n".join(problems))
    if settings.mattermost_url:
        backend = f"Mattermost at {settings.mattermost_url}"
        teams = ", ".join(settings.mattermost_teams) or "every team the bot is a member of"
    else:
        backend = "terminal (Errbot's text backend; set MATTERMOST_URL for Mattermost)"
        teams = "none (terminal)"
    return InEffect(
        backend=backend,
        teams=teams,
        policy=policy,
        inventory=inventory,
        plugins=", ".join(plugin_names(plugin_dirs)) or "none",
        data_dir=str(data_dir),
        warnings=warnings,
        http=http,
        alerts=alerts,
        incidents=incidents,
    )


def _http(settings: Settings, problems: list[str]) -> str:
    """The HTTP server's address, checked to be free now (a busy port stops start-up)."""
    listen = settings.opsroom_http_listen
    if not listen:
        return "none (OPSROOM_HTTP_LISTEN is empty)"
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        problems.append(
            f"OPSROOM_HTTP_LISTEN: cannot listen on {listen}: {exc.strerror}; "
            "choose a free host:port"
        )
        return ""
    tls = " (TLS)" if settings.opsroom_http_tls_cert else ""
    return f"{listen}{tls}: /healthz, /readyz and the alert receivers"


def _alerts(settings: Settings, plugin_dirs: list[Path], problems: list[str]) -> str:
    """The alerts file, validated; its rules checked against the actions the plugins
    declare (an unknown action or parameter stops start-up)."""
    path = settings.opsroom_alerts
    if path is None:
        return NO_ALERTS
    try:
        config = load_config(path)
    except AlertsConfigError as exc:
        problems.append(f"invalid alerts file:\n{exc}")
        return ""
    if config.rules:
        actions, broken = declared_actions(plugin_dirs)
        found = check_rules(config, actions, str(path))
        if found:
            problems.append("invalid alerts file:\n" + "\n".join(found + broken))
            return ""
    if config.receivers and not settings.opsroom_http_listen:
        problems.append(
            f"OPSROOM_ALERTS: {path} has receivers but OPSROOM_HTTP_LISTEN is empty; "
            "set it to the address the senders post to"
        )
        return ""
    return (
        f"{path} ({len(config.receivers)} receivers, {len(config.routes)} routes, "
        f"{len(config.rules)} rules)"
    )


def _policy(settings: Settings, problems: list[str], warnings: list[str]) -> str:
    path = settings.opsroom_policy
    if path is None:
        return NO_POLICY
    try:
        policy = Policy.load(path)
    except PolicyError as exc:
        problems.append(f"invalid policy:\n{exc}")
        return ""
    roles = sorted(policy.document.roles)
    if not roles:
        empty = not policy.document.model_fields_set
        warnings.append(
            f"OPSROOM_POLICY: {path} {'is empty' if empty else 'defines no roles'}: "
            "reads are open and every change is denied, as with no policy"
        )
    return f"{path} (roles: {', '.join(roles) or 'none'})"


def _inventory(settings: Settings, problems: list[str]) -> str:
    path, is_sample = settings.inventory_in_effect()
    if path is None:
        return NO_INVENTORY
    try:
        inventory = Inventory.load(path)
    except InventoryError as exc:
        problems.append(f"invalid inventory:\n{exc}")
        return ""
    if not is_sample:  # the sample's clusters are as fictional as its hosts
        problems += kubernetes_problems(inventory)
    return f"{path} (SAMPLE: fake *.example.com hosts)" if is_sample else str(path)


def kubernetes_problems(inventory: Inventory) -> list[str]:
    """A problem for each ``kubernetes.context`` of the inventory that the kubeconfig
    (``KUBECONFIG``, else ~/.kube/config, else in-cluster) does not have."""
    wanted = kubernetes_contexts(inventory.document.environments)
    found = missing_contexts(KubeConfig.from_environment(), wanted)
    return [f"invalid inventory:\n{inventory.source}: {key}: {text}" for key, text in found.items()]


def _incidents(settings: Settings, problems: list[str]) -> str:
    path = settings.opsroom_incidents
    try:
        config = load_incidents_config(path)
    except IncidentsConfigError as exc:
        problems.append(f"invalid incident configuration:\n{exc}")
        return ""
    if path is None:
        return "defaults (OPSROOM_INCIDENTS not set; docs/incidents.md)"
    where = config.stakeholder_channel or "no stakeholder channel"
    return f"{path} (services: {', '.join(sorted(config.services)) or 'none'}; {where})"


def data_dir_problem(path: Path) -> str | None:
    """Why ``OPSROOM_DATA_DIR`` cannot be used (created if missing, then written), or None.

    Nothing is created: the nearest existing folder must be a writable directory."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    what = "cannot write to" if existing == path else "cannot create"
    if not existing.is_dir():
        reason = f"{existing} is not a directory"
    elif not os.access(existing, os.W_OK | os.X_OK):
        reason = f"{existing} is not writable by this user"
    else:
        return None
    return (
        f"OPSROOM_DATA_DIR: {what} {path}: {reason}; "
        "set OPSROOM_DATA_DIR to a directory this user may create and write"
    )


def plugin_names(folders: list[Path]) -> list[str]:
    """The names (``[Core] Name`` of each ``.plug`` file) of the plugins under ``folders``."""
    names = []
    for folder in folders:
        for plug in sorted(folder.rglob("*.plug")):
            parser = configparser.ConfigParser()
            parser.read(plug, encoding="utf-8")
            names.append(parser.get("Core", "Name", fallback=plug.stem))
    return names


def check_online(settings: Settings) -> str:
    """Ask the server who the token belongs to (``GET /api/v4/users/me``).

    Returns a line saying who the bot is; raises :class:`SettingsError` naming the setting
    to fix when the server cannot be reached, rejects the token or is not Mattermost."""
    if settings.mattermost_url is None:
        raise SettingsError(
            "check-config --online: MATTERMOST_URL is not set (terminal backend), "
            "so there is no server to check"
        )
    base = str(settings.mattermost_url).rstrip("/")
    endpoint = "/api/v4/users/me"
    options = settings.driver_options()
    timeout = settings.mattermost_request_timeout.total_seconds()
    try:
        response = requests.get(
            base + endpoint,
            headers={"Authorization": f"Bearer {settings.token}"},
            timeout=timeout,
            verify=options["verify"],  # type: ignore[arg-type]
        )
    except requests.exceptions.SSLError as exc:
        raise SettingsError(
            f"MATTERMOST_URL: TLS with {base} failed ({_reason(exc)}); for a private CA "
            "set MATTERMOST_CA_FILE"
        ) from None
    except requests.Timeout:
        raise SettingsError(
            f"MATTERMOST_URL: {base} did not answer within {timeout:g}s; check the URL "
            "and that the server is up"
        ) from None
    except requests.RequestException as exc:
        raise SettingsError(
            f"MATTERMOST_URL: cannot reach {base} ({_reason(exc)}); check the URL "
            "and that the server is up"
        ) from None
    if response.status_code == 401:
        raise SettingsError(
            f"MATTERMOST_TOKEN: {base} rejected the token (HTTP 401): it is invalid or "
            "revoked; create a new personal access token for the bot account"
        )
    try:
        me = response.json() if response.ok else None
    except ValueError:
        me = None
    if not isinstance(me, dict) or "username" not in me:
        raise SettingsError(
            f"MATTERMOST_URL: {base} answered HTTP {response.status_code} to GET {endpoint}, "
            "not a Mattermost user; is it the base URL of the Mattermost server?"
        )
    return f"online: {base} accepts the token of @{me['username']}"


def _reason(exc: BaseException) -> str:
    """The short cause of a network error ("Connection refused"), not urllib3's paragraph."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(
        r"\[SSL: [A-Z_]+\] ([^'\")(]+)", text
    )
    return match.group(1).strip() if match else type(exc).__name__
