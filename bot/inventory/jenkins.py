"""The inventory's Jenkins section: servers, and the jobs each environment may trigger.

Top level::

    jenkins:
      servers:
        ci: {url: https://ci.example.com, user: opsbot, token_env: JENKINS_TOKEN}

and per environment::

    environments:
      staging:
        jenkins: {server: ci, jobs: [deploy-staging, "team/app/*"]}

The API token is never written in the inventory: ``token_file`` or ``token_env`` says where
it is, and it is read when a server is used (a missing token is a :class:`TokenUnavailable`
naming file and key). :func:`jenkins_secrets` gives the token values the redactor must scrub.

A job may be triggered only when an environment's ``jobs`` allow it (``fnmatch`` globs on
the whole path, ``*`` not crossing ``/``); that environment is what the policy decides on.
Nothing here talks to Jenkins.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from bot.durations import parse_duration
from bot.errors import OpsroomError, Refusal, UnknownTarget
from bot.inventory.validation import (
    NAME,
    NAME_RULE,
    NotAllowed,
    check_value,
    hint,
    show_value,
)

if TYPE_CHECKING:
    from bot.inventory.model import InventoryDocument, Loc

# One path segment of a job: Jenkins item names, without '/' (folders separate segments).
SEGMENT = r"[A-Za-z0-9_.][A-Za-z0-9_. +@-]{0,99}"
JOB_PATH = re.compile(rf"{SEGMENT}(?:/{SEGMENT}){{0,9}}")
JOB_PATH_RULE = "a job path: names separated by '/' (team/app/deploy)"
_GLOB_SEGMENT = r"[A-Za-z0-9_.*?\[\]!][A-Za-z0-9_. +@*?\[\]!-]{0,99}"
JOB_GLOB = re.compile(rf"{_GLOB_SEGMENT}(?:/{_GLOB_SEGMENT}){{0,9}}")
ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _matching(regex: re.Pattern[str], rule: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"expected {rule}")
        return value

    return AfterValidator(check)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL (e.g. https://ci.example.com)")
    if parts.username or parts.password:
        raise ValueError("no credentials in the URL: use user and token_file or token_env")
    return value.rstrip("/") + "/"


def _positive(value: timedelta) -> timedelta:
    if value.total_seconds() <= 0:
        raise ValueError("must be greater than zero")
    return value


ServerName = Annotated[str, _matching(NAME, NAME_RULE)]
JobGlob = Annotated[str, _matching(JOB_GLOB, "a job path or glob: names separated by '/'")]
Timeout = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JenkinsServerEntry(_Model):
    """One Jenkins server: where, as whom, and where its API token is kept."""

    url: Annotated[str, AfterValidator(_http_url)]
    user: Annotated[str, Field(min_length=1, max_length=100)]
    token_file: Path | None = None
    token_env: Annotated[str, _matching(ENV_VAR, "an environment variable name")] | None = None
    ca_file: Path | None = None
    verify_tls: bool = True
    timeout: Timeout = timedelta(seconds=30)

    @model_validator(mode="after")
    def _one_token_source(self) -> JenkinsServerEntry:
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError(
                "give exactly one of token_file or token_env (the token itself is never "
                "written in the inventory)"
            )
        return self


class JenkinsSection(_Model):
    """The top-level ``jenkins:`` section."""

    servers: dict[ServerName, JenkinsServerEntry] = Field(min_length=1)


class EnvironmentJenkins(_Model):
    """An environment's ``jenkins:``: its server and the jobs it allows."""

    server: ServerName
    jobs: list[JobGlob] = Field(min_length=1)


def jenkins_problems(doc: InventoryDocument) -> list[tuple[Loc, str]]:
    """Cross-references: every environment's server is declared under ``jenkins.servers``."""
    servers = doc.jenkins.servers if doc.jenkins is not None else {}
    problems: list[tuple[Loc, str]] = []
    for env, entry in doc.environments.items():
        if entry.jenkins is not None and entry.jenkins.server not in servers:
            suggestion, _ = hint(entry.jenkins.server, servers)
            where = "jenkins.servers" if servers else "a top-level jenkins.servers section"
            problems.append(
                (
                    ("environments", env, "jenkins", "server"),
                    f"no server {entry.jenkins.server!r} in {where}{suggestion}",
                )
            )
    return problems


# --- what the bot uses --------------------------------------------------------------------------
class TokenUnavailable(Refusal):
    """The server's API token cannot be read (unset variable, missing or empty file)."""


@dataclass(frozen=True)
class JenkinsServerConfig:
    """A server with its paths resolved; :meth:`token` reads the API token when needed."""

    name: str
    url: str
    user: str
    token_file: Path | None
    token_env: str | None
    ca_file: Path | None
    verify_tls: bool
    timeout: float
    source: str

    def token(self) -> str:
        key = f"{self.source}: jenkins.servers.{self.name}"
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise TokenUnavailable(
                    f"Jenkins server {self.name} has no API token: the variable "
                    f"{self.token_env} is not set ({key}.token_env)"
                )
            return value
        assert self.token_file is not None
        try:
            value = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise TokenUnavailable(
                f"Jenkins server {self.name} has no API token: cannot read {self.token_file}: "
                f"{exc.strerror} ({key}.token_file)"
            ) from None
        if not value:
            raise TokenUnavailable(
                f"Jenkins server {self.name} has no API token: {self.token_file} is empty "
                f"({key}.token_file)"
            )
        return value


@dataclass(frozen=True)
class JobPlace:
    """Where a job may run from: its environment and that environment's server."""

    job: str
    environment: str
    server: str


class JenkinsMap:
    """The Jenkins side of a loaded inventory: servers and allow-lists. No network."""

    def __init__(
        self,
        document: InventoryDocument,
        source: str = "<inventory>",
        base_dir: Path | None = None,
    ) -> None:
        self.source = source
        section = document.jenkins
        self.servers: Mapping[str, JenkinsServerConfig] = {
            name: JenkinsServerConfig(
                name=name,
                url=entry.url,
                user=entry.user,
                token_file=_resolve(entry.token_file, base_dir),
                token_env=entry.token_env,
                ca_file=_resolve(entry.ca_file, base_dir),
                verify_tls=entry.verify_tls,
                timeout=entry.timeout.total_seconds(),
                source=source,
            )
            for name, entry in (section.servers.items() if section is not None else ())
        }
        self.environments: Mapping[str, EnvironmentJenkins] = {
            env: entry.jenkins
            for env, entry in document.environments.items()
            if entry.jenkins is not None
        }

    @property
    def configured(self) -> bool:
        return bool(self.environments)

    def allowed(self, env: str | None = None) -> list[tuple[str, str, str]]:
        """(environment, server, job pattern) for every allowed pattern, or one env's."""
        return [
            (name, entry.server, pattern)
            for name, entry in self.environments.items()
            if env is None or name == env
            for pattern in entry.jobs
        ]

    def environment(self, env: str) -> EnvironmentJenkins:
        check_value("environment", env, pattern=NAME, expected=f"must be {NAME_RULE}")
        if env not in self.environments:
            suggestion, close = hint(env, self.environments)
            raise UnknownTarget(
                env, f"no Jenkins jobs are allowed in {show_value(env)}{suggestion}", close
            )
        return self.environments[env]

    def place(self, job: str, env: str | None = None) -> JobPlace:
        """The environment (and its server) that allows ``job``; refuses anything else.

        A job allowed in several environments must be asked for ``in <env>``: one request
        never spans environments, since the policy decides per environment."""
        check_value("job", job, pattern=JOB_PATH, expected=f"must be {JOB_PATH_RULE}")
        candidates = [env] if env is not None else list(self.environments)
        if env is not None:
            self.environment(env)
        matching = [
            name
            for name in candidates
            if any(_job_matches(job, pattern) for pattern in self.environments[name].jobs)
        ]
        if not matching:
            where = f" in {env}" if env is not None else " in any environment"
            raise NotAllowed(
                f"Jenkins job {show_value(job)} is not allowed{where} "
                f"(see !jenkins jobs; the inventory's environments.<env>.jenkins.jobs decide)"
            )
        if len(matching) > 1:
            raise Refusal(
                f"Jenkins job {job} is allowed in {' and '.join(matching)}: name the "
                f"environment (in {matching[0]})"
            )
        name = matching[0]
        return JobPlace(job, name, self.environments[name].server)

    def secrets(self) -> list[str]:
        """The API tokens that can be read now: values to scrub everywhere."""
        values = []
        for server in self.servers.values():
            try:
                values.append(server.token())
            except TokenUnavailable:
                continue
        return values


def _job_matches(job: str, pattern: str) -> bool:
    """``*`` and ``?`` match within one path segment; ``team/app`` allows the folder's jobs."""
    parts, globs = job.split("/"), pattern.split("/")
    if len(globs) < len(parts) and not any(ch in pattern for ch in "*?["):
        # A folder named without a glob allows everything under it.
        return parts[: len(globs)] == globs
    return len(parts) == len(globs) and all(
        fnmatchcase(part, glob) for part, glob in zip(parts, globs, strict=True)
    )


def _resolve(path: Path | None, base_dir: Path | None) -> Path | None:
    if path is None:
        return None
    path = path.expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def jenkins_secrets(path: Path | None) -> list[str]:
    """The Jenkins API tokens of the inventory at ``path`` that can be read now: values the
    redactor scrubs besides the settings' own. Nothing without an inventory; a bad one is
    reported by the start-up checks, not here."""
    from bot.inventory.queries import Inventory  # the model imports this module

    if path is None or not path.is_file():
        return []
    try:
        inventory = Inventory.load(path)
    except OpsroomError:  # a bad file
        return []
    return JenkinsMap(inventory.document, str(path), path.parent).secrets()
