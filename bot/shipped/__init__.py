"""The files Opsroom ships besides its code: the plugins, the sample inventory and policy.

They live at the top of the repository (``plugins/``, ``examples/``) and pyproject.toml maps
those folders into the wheel as the packages ``bot.shipped.plugins`` and
``bot.shipped.examples``. Both a wheel and an editable install (``pip install -e``, what
``make`` does) resolve these package names through the import system, so the functions below
find the same files from a source checkout and from an installed package, whatever the
working directory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["example_policy_path", "plugins_dir", "sample_inventory_path"]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed; reinstall the opsroom package")
    return Path(next(iter(spec.submodule_search_locations)))


def plugins_dir() -> Path:
    """The folder of Opsroom's own Errbot plugins (opsroom, runtime, ssh_ops)."""
    return _package_dir("bot.shipped.plugins")


def sample_inventory_path() -> Path:
    """The sample inventory (fake ``*.example.com`` hosts)."""
    return _package_dir("bot.shipped.examples") / "inventory.yaml"


def example_policy_path() -> Path:
    """The example policy, a commented reference of every policy key."""
    return _package_dir("bot.shipped.examples") / "policy.yaml"
