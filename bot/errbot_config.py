"""Build Errbot's configuration (the names Errbot reads from ``config.py``) from Settings.

This is the built-in configuration: ``opsroom run`` uses it unless ``--config`` names a file,
and the top-level ``config.py`` is a thin shim over it for running Errbot directly.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from bot.mattermost.splitting import MATTERMOST_MAX_POST_LENGTH
from bot.settings import Settings
from bot.shipped import plugins_dir

BACKENDS_DIR = Path(__file__).resolve().parent / "backends"
STORAGE_DIR = Path(__file__).resolve().parent / "storage"

# Errbot's core plugins we load. Help is replaced by plugins/help (it also says how many
# actions the policy hides and why). Left out on purpose: ACLs (plugins/runtime has the one
# command filter: admin-only commands, help, audited denials), Plugins (lets chat users
# install code from git), Health (its admin ``!restart`` restarts the bot and shadows every
# command that starts with "restart"), Utils (its ``!whoami`` is ours; ``!echo`` is in
# plugins/opsroom), Backup, Flows, Webserver, VersionChecker (calls home), ChatRoom, TextCmds.
CORE_PLUGINS = ("CommandNotFoundFilter",)

# Name of the local user on the terminal backend; it is the admin there.
TEXT_USER = "@localuser"


def errbot_config(settings: Settings) -> dict[str, object]:
    """Return Errbot's settings: Opsroom's shipped plugins plus ``OPSROOM_EXTRA_PLUGIN_DIRS``."""
    data_dir = settings.opsroom_data_dir.resolve()
    plugin_dirs = [str(plugins_dir()), *settings.opsroom_extra_plugin_dirs]
    admins = tuple(settings.opsroom_admins) if settings.mattermost_url else (TEXT_USER,)
    return {
        "BACKEND": settings.backend,
        "BOT_EXTRA_BACKEND_DIR": str(BACKENDS_DIR),
        "STORAGE": "SQLite",
        "BOT_EXTRA_STORAGE_PLUGINS_DIR": str(STORAGE_DIR),
        "BOT_DATA_DIR": str(data_dir / "errbot"),
        "BOT_EXTRA_PLUGIN_DIR": plugin_dirs,
        "CORE_PLUGINS": CORE_PLUGINS,
        "AUTOINSTALL_DEPS": False,
        "BOT_PLUGIN_INDEXES": (),
        # The terminal backend owns the console, so its log goes to a file instead.
        "BOT_LOG_FILE": None if settings.mattermost_url else str(data_dir / "opsroom.log"),
        "BOT_LOG_LEVEL": settings.opsroom_log_level,
        "BOT_PREFIX": settings.opsroom_prefix,
        # In a direct message the prefix may be left out: "deploy x" works as "!deploy x".
        "BOT_PREFIX_OPTIONAL_ON_CHAT": True,
        "BOT_ADMINS": admins,
        "BOT_ADMINS_NOTIFICATIONS": (),
        "BOT_ASYNC": True,
        # Commands only parse, authorize and acknowledge (actions run as jobs elsewhere),
        # but third-party commands may block: room for many at once.
        "BOT_ASYNC_POOLSIZE": 32,
        "HIDE_RESTRICTED_COMMANDS": True,
        "SUPPRESS_CMD_NOT_FOUND": False,
        # Mattermost's own limit there; the terminal backend keeps its own (Errbot warns when
        # a configured limit exceeds the backend's).
        "MESSAGE_SIZE_LIMIT": MATTERMOST_MAX_POST_LENGTH if settings.mattermost_url else None,
        "CHATROOM_PRESENCE": (),
        "TEXT_DEMO_MODE": True,
        "BOT_IDENTITY": {},
        "OPSROOM_SETTINGS": settings,
    }


def config_module(settings: Settings) -> ModuleType:
    """The built-in configuration as the module object Errbot expects from ``config.py``."""
    module = ModuleType("config", "Opsroom's built-in Errbot configuration")
    vars(module).update(errbot_config(settings))
    return module
