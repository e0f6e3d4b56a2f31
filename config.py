"""Errbot configuration for Opsroom, for running Errbot directly (``errbot -c config.py``).

``opsroom run`` does not need this file: it builds the same configuration itself. Every value
comes from validated settings (environment variables and an optional ``opsroom.env`` file, see
docs/configuration.md) through ``bot.errbot_config``; Errbot reads the names defined here.
``opsroom run --config config.py`` runs with it (or with your own copy).
"""

from bot.errbot_config import errbot_config
from bot.settings import get_settings

globals().update(errbot_config(get_settings()))
