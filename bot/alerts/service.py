"""Alerts in a running bot: the store, the receivers on the HTTP server, the engine.

Built by the Alerts plugin from ``OPSROOM_ALERTS`` (:func:`start_alerts`); the plugin's
commands use the :class:`AlertService` it returns. The receivers are mounted as soon as the
plugin activates (alerts are stored from then on); the engine starts once every plugin is
active (``callback_connect``), since the rules name actions of other plugins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.alerts.auth import RefusalLog
from bot.alerts.config import AlertsConfig, check_rules, load_config
from bot.alerts.engine import AlertEngine
from bot.alerts.receivers import Receiver
from bot.alerts.remediation import ActionRef
from bot.alerts.store import FILENAME, AlertStore
from bot.http import HttpServer
from bot.runtime.runtime import Runtime
from bot.runtime.surface import Place

log = logging.getLogger(__name__)


@dataclass
class AlertService:
    config: AlertsConfig
    source: str
    store: AlertStore
    engine: AlertEngine
    server: HttpServer | None
    actions: Callable[[], Mapping[str, ActionRef]]
    mounted: list[str] = field(default_factory=list)
    started: bool = False

    def start_engine(self) -> list[str]:
        """Check the rules against the actions now registered, start the engine; returns
        the problems found (logged: a rule whose action is missing skips its alerts)."""
        specs = {name: spec for name, (spec, _) in self.actions().items()}
        problems = check_rules(self.config, specs, self.source)
        for problem in problems:
            log.error("%s", problem)
        if not self.started:
            self.engine.start()
            self.started = True
        return problems

    def stop(self) -> None:
        if self.server is not None:
            for path in self.mounted:
                self.server.unmount("POST", path)
            self.server.remove_check("alert store")
        self.engine.stop()
        self.store.close()


def start_alerts(
    path: Path,
    data_dir: Path,
    runtime: Runtime,
    actions: Callable[[], Mapping[str, ActionRef]],
    place_named: Callable[[str], Place],
    server: HttpServer | None,
    clock: Callable[[], float] = time.time,
) -> AlertService:
    config = load_config(path)
    store = AlertStore(data_dir / FILENAME)
    engine = AlertEngine(config, store, runtime, actions, place_named, clock=clock)
    service = AlertService(config, str(path), store, engine, server, actions)
    if server is None:
        if config.receivers:
            log.error("OPSROOM_ALERTS has receivers but there is no HTTP server")
        return service
    refusals = RefusalLog()
    for name, receiver_config in config.receivers.items():
        receiver = Receiver(
            name, receiver_config, store, on_stored=engine.stored, refusals=refusals, clock=clock
        )
        route = config.path_of(name)
        server.mount("POST", route, receiver.handle)
        service.mounted.append(route)
        log.info("alert receiver %s (%s) at %s%s", name, receiver_config.kind, server.url, route)
    server.add_check("alert store", store.writable)
    return service
