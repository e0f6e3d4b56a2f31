"""Typed, validated settings for Opsroom.

Settings come from the environment and, optionally, from a dotenv-style file named by
``OPSROOM_ENV_FILE`` (default ``./opsroom.env`` when it exists). The environment wins over
the file. Every setting is documented in ``docs/configuration.md``; keep the two in step.
"""

from __future__ import annotations

import functools
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.durations import parse_duration
from bot.errors import ConfigurationError
from bot.shipped import sample_inventory_path


def split_list(value: object) -> object:
    """Accept a comma- or whitespace-separated string as a list of strings."""
    if isinstance(value, str):
        return [item for item in re.split(r"[,\s]+", value) if item]
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
StrList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """Every setting Opsroom reads. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        env_file_encoding="utf-8",
        validate_default=True,
    )

    # --- Mattermost connection -------------------------------------------------------------
    mattermost_url: AnyHttpUrl | None = Field(
        None, description="Base URL of the Mattermost server; unset = terminal (text) backend."
    )
    mattermost_token: SecretStr | None = Field(
        None, description="Personal access token of the bot account."
    )
    mattermost_token_file: Path | None = Field(
        None, description="File holding the token (e.g. a mounted secret)."
    )
    mattermost_teams: StrList = Field(
        default_factory=list, description="Team names to serve; empty = every team."
    )
    mattermost_ca_file: Path | None = Field(None, description="CA bundle for a private CA.")
    mattermost_verify_tls: bool = Field(True, description="Verify the server's certificate.")
    mattermost_request_timeout: Duration = Field(timedelta(seconds=30))

    # --- Behaviour -------------------------------------------------------------------------
    opsroom_prefix: str = Field("!", min_length=1, max_length=5)
    opsroom_data_dir: Path = Field(Path("./data"))
    opsroom_admins: StrList = Field(default_factory=list)
    opsroom_log_level: LogLevel = "INFO"
    opsroom_max_command_age: Duration = Field(timedelta(minutes=10))
    opsroom_backfill_window: Duration = Field(timedelta(hours=1))
    opsroom_reply_in_thread: bool = False
    opsroom_answer_bots: bool = False
    opsroom_answer_webhooks: bool = False
    opsroom_ws_ping_interval: Duration = Field(timedelta(seconds=20))
    opsroom_reconnect_max_delay: Duration = Field(timedelta(seconds=60))
    opsroom_post_workers: int = Field(8, ge=1, le=64)
    opsroom_extra_plugin_dirs: StrList = Field(default_factory=list)
    opsroom_redact_env: StrList = Field(
        default_factory=list, description="env variables whose values are secrets"
    )
    opsroom_policy: Path | None = Field(None, description="YAML policy: roles and grants")
    opsroom_inventory: Path | None = Field(
        None, description="YAML inventory of hosts, services, recipes and deploys"
    )
    opsroom_incidents: Path | None = Field(
        None, description="YAML incident configuration: channels, responders, checklists"
    )
    opsroom_incident_reminder_check: Duration = Field(
        timedelta(seconds=30), description="how often overdue status updates are looked for"
    )
    opsroom_ssh_trust_on_first_use: bool = Field(
        False, description="accept and record unknown SSH host keys (never changed ones)"
    )
    opsroom_ssh_max_parallel: int = Field(10, ge=1, le=200)
    opsroom_audit_channel: str | None = Field(None, description="e.g. ~ops-audit")
    opsroom_audit_key_file: Path | None = Field(
        None, description="key that signs every audit record and checkpoint (HMAC-SHA256)"
    )
    opsroom_audit_checkpoint_records: int = Field(
        1000, ge=1, description="post an audit checkpoint after this many new records"
    )
    opsroom_audit_checkpoint_interval: Duration = Field(
        timedelta(hours=1), description="... and at least this often when there are new ones"
    )
    opsroom_job_workers: int = Field(16, ge=1, le=256)
    opsroom_jenkins_poll_interval: Duration = Field(
        timedelta(seconds=5), description="longest pause between two polls of a followed build"
    )

    # --- HTTP server and alerts ------------------------------------------------------------
    opsroom_http_listen: str = Field(
        "127.0.0.1:8080", description="host:port of the bot's HTTP server; empty = no server"
    )
    opsroom_http_tls_cert: Path | None = Field(None, description="PEM certificate (chain)")
    opsroom_http_tls_key: Path | None = Field(None, description="PEM private key")
    opsroom_alerts: Path | None = Field(
        None, description="YAML alert receivers, routes and remediation rules"
    )

    @field_validator("mattermost_url", mode="before")
    @classmethod
    def _url_has_a_scheme(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None  # MATTERMOST_URL= in a file: unset
            if "://" not in value:
                raise ValueError(
                    f"must start with https:// or http:// (e.g. https://{value.rstrip('/')})"
                )
        return value

    @field_validator("opsroom_http_listen")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        from bot.http.server import parse_listen

        value = value.strip()
        if value:
            parse_listen(value)  # ValueError names what was expected
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.opsroom_http_tls_cert is None) != (self.opsroom_http_tls_key is None):
            raise ValueError(
                "OPSROOM_HTTP_TLS_CERT and OPSROOM_HTTP_TLS_KEY go together: set both or neither"
            )
        return self

    @field_validator("opsroom_log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("opsroom_prefix")
    @classmethod
    def _prefix_has_no_space(cls, value: str) -> str:
        if any(ch.isspace() for ch in value):
            raise ValueError("the prefix must not contain spaces")
        return value

    @field_validator(
        "opsroom_max_command_age",
        "opsroom_backfill_window",
        "opsroom_ws_ping_interval",
        "opsroom_reconnect_max_delay",
        "mattermost_request_timeout",
        "opsroom_jenkins_poll_interval",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be greater than zero")
        return value

    @field_validator("opsroom_backfill_window")
    @classmethod
    def _within_ledger_retention(cls, value: timedelta) -> timedelta:
        # Handled post ids are kept 7 days; catching up further back could run a command twice.
        if value > timedelta(days=7):
            raise ValueError("must be at most 7d (handled commands are remembered for 7 days)")
        return value

    @model_validator(mode="after")
    def _token_when_connected(self) -> Settings:
        if self.mattermost_token is not None and not self.token.strip():
            raise ValueError(
                "MATTERMOST_TOKEN is empty: set it to the bot account's personal access token, "
                "or remove it to use MATTERMOST_TOKEN_FILE or the terminal"
            )
        if self.mattermost_url is None:
            if self.mattermost_token is not None or self.mattermost_token_file is not None:
                raise ValueError(
                    "MATTERMOST_TOKEN or MATTERMOST_TOKEN_FILE is set but MATTERMOST_URL is not: "
                    "set MATTERMOST_URL (e.g. https://chat.example.com) to connect to Mattermost, "
                    "or unset the token to run in the terminal"
                )
            return self
        if self.mattermost_token is None and self.mattermost_token_file is None:
            raise ValueError(
                "MATTERMOST_TOKEN or MATTERMOST_TOKEN_FILE is required when MATTERMOST_URL is set"
            )
        if self.mattermost_token is None and self.mattermost_token_file is not None:
            try:
                token = self.mattermost_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(
                    f"MATTERMOST_TOKEN_FILE: cannot read {self.mattermost_token_file}: "
                    f"{exc.strerror}"
                ) from None
            if not token:
                raise ValueError(f"MATTERMOST_TOKEN_FILE: {self.mattermost_token_file} is empty")
            self.mattermost_token = SecretStr(token)
        return self

    # --- Derived values ----------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Errbot backend name: our Mattermost backend, or Errbot's terminal backend."""
        return "Mattermost" if self.mattermost_url else "Text"

    @property
    def token(self) -> str:
        """The bot token in clear; only for the HTTP client. Never log it."""
        return self.mattermost_token.get_secret_value() if self.mattermost_token else ""

    @property
    def secrets(self) -> list[str]:
        """Values that must never appear in logs, chat or the audit log: the token, the
        values of the variables named in ``OPSROOM_REDACT_ENV`` and the inventory's Jenkins
        API tokens."""
        from bot.inventory.jenkins import jenkins_secrets  # the inventory reads settings

        values = [self.token, *(os.environ.get(name, "") for name in self.opsroom_redact_env)]
        values += jenkins_secrets(self.inventory_in_effect()[0])
        return [value for value in values if value]

    def inventory_in_effect(self) -> tuple[Path | None, bool]:
        """The inventory to load and whether it is the sample: ``OPSROOM_INVENTORY`` when
        set; otherwise the sample inventory on the terminal backend only (so that
        ``make run`` has hosts to show), and none at all when connected to Mattermost."""
        if self.opsroom_inventory is not None:
            return self.opsroom_inventory, False
        if self.mattermost_url is None:
            return sample_inventory_path(), True
        return None, False

    def driver_options(self) -> dict[str, object]:
        """Options for ``mattermostdriver.Driver`` derived from ``MATTERMOST_URL``."""
        assert self.mattermost_url is not None
        parts = urlsplit(str(self.mattermost_url))
        scheme = parts.scheme
        verify: bool | str = self.mattermost_verify_tls
        if verify and self.mattermost_ca_file:
            verify = str(self.mattermost_ca_file)
        return {
            "scheme": scheme,
            "url": parts.hostname,
            "port": parts.port or (443 if scheme == "https" else 80),
            "basepath": parts.path.rstrip("/") + "/api/v4",
            "verify": verify,
            "token": self.token,
            "request_timeout": self.mattermost_request_timeout.total_seconds(),
        }


class SettingsError(ConfigurationError):
    """Settings did not validate; the message names every bad key."""


def _env_file() -> str | None:
    path = os.environ.get("OPSROOM_ENV_FILE")
    if path:
        if not Path(path).is_file():
            raise SettingsError(f"OPSROOM_ENV_FILE: {path} does not exist")
        return path
    return "opsroom.env" if Path("opsroom.env").is_file() else None


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()


def load_settings(**overrides: Any) -> Settings:
    """Read and validate settings, raising :class:`SettingsError` with readable messages."""
    try:
        return Settings(_env_file=_env_file(), **overrides)
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``KEY: what is wrong (got 'value')``. Secrets are not echoed."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]).upper()
        message = error["msg"].removeprefix("Value error, ")
        if not key:  # a check across settings: its message names them
            lines.append(message)
            continue
        shown = ""
        if "TOKEN" not in key and error.get("input") is not None:
            shown = f" (got {error['input']!r})"
        lines.append(f"{key}: {message}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
