"""Errbot configuration for Opsroom.

Nothing is configured here by hand: every value comes from validated settings (environment
variables and an optional ``opsroom.env`` file, see docs/configuration.md) through
``bot.errbot_config``. Errbot reads the module-level names this file defines.
"""

from pathlib import Path

from bot.errbot_config import errbot_config
from bot.settings import get_settings

globals().update(errbot_config(get_settings(), root=Path(__file__).resolve().parent))
