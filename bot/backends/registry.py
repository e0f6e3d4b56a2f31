"""The actions that exist: in a running bot (Errbot's commands), or declared by the plugin
folders before it starts (for ``check-config`` and ``run``'s start-up checks, which must
refuse an alert rule naming an action no plugin declares)."""

from __future__ import annotations

import configparser
import importlib.util
import inspect
import logging
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bot.runtime.actions import ACTION_ATTRIBUTE, ActionSpec

log = logging.getLogger(__name__)


def registered_actions(bot: Any) -> dict[str, tuple[ActionSpec, Any]]:
    """Every action of the running bot's plugins: name -> (spec, plugin instance)."""
    found = {}
    for method in bot.all_commands.values():
        spec = getattr(method, ACTION_ATTRIBUTE, None)
        if spec is not None:
            found[spec.name] = (spec, getattr(method, "__self__", None))
    return found


def declared_actions(folders: Iterable[Path]) -> tuple[dict[str, ActionSpec], list[str]]:
    """The actions declared by the plugins under ``folders`` (each ``.plug`` file's module,
    imported without Errbot running), and the plugins that could not be imported."""
    found: dict[str, ActionSpec] = {}
    problems = []
    for folder in folders:
        for plug in sorted(Path(folder).rglob("*.plug")):
            parser = configparser.ConfigParser()
            parser.read(plug, encoding="utf-8")
            module_name = parser.get("Core", "Module", fallback="")
            source = plug.parent / f"{module_name}.py"
            if not module_name or not source.is_file():
                continue  # storage and backend plugins, packages: no actions of ours
            try:
                module = _import(source, f"opsroom_declared_{plug.parent.name}_{module_name}")
            except Exception as exc:
                problems.append(f"{source}: cannot import: {type(exc).__name__}: {exc}")
                continue
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != module.__name__:
                    continue
                for _, member in inspect.getmembers(cls):
                    spec = getattr(member, ACTION_ATTRIBUTE, None)
                    if isinstance(spec, ActionSpec):
                        found[spec.name] = spec
    return found, problems


def _import(source: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # As Errbot does, appended (a plugin may import its siblings): in front, plugins/jenkins
    # would shadow the python-jenkins library that bot.connectors.jenkins imports.
    added = str(source.parent) not in sys.path
    if added:
        sys.path.append(str(source.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        if added:
            sys.path.remove(str(source.parent))
    return module
