"""Mattermost REST API v4 over ``mattermostdriver``, with pooled connections per thread.

``mattermostdriver.Client`` opens a new TCP (and TLS) connection for every call through the
module-level ``requests`` functions. :class:`PooledClient` keeps one ``requests.Session`` per
thread instead, so concurrent senders never share a connection and none pays a handshake per
post. Errors keep the driver's exception classes, with the HTTP response attached so callers
can read ``Retry-After`` and friends.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
from mattermostdriver import Driver
from mattermostdriver.client import Client
from mattermostdriver.exceptions import (
    ContentTooLarge,
    FeatureDisabled,
    InvalidOrMissingParameters,
    MethodNotAllowed,
    NoAccessTokenProvided,
    NotEnoughPermissions,
    ResourceNotFound,
)

_ERRORS_BY_STATUS: dict[int, type[requests.HTTPError]] = {
    400: InvalidOrMissingParameters,
    401: NoAccessTokenProvided,
    403: NotEnoughPermissions,
    404: ResourceNotFound,
    405: MethodNotAllowed,
    413: ContentTooLarge,
    501: FeatureDisabled,
}


def error_message(response: requests.Response) -> str:
    """Mattermost's AppError message, or the raw body when it is not JSON."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("message") or body)
    return str(body)


class PooledClient(Client):
    """A driver client that reuses one HTTP session per calling thread."""

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Proxy, CA-bundle and netrc settings from the environment are resolved once
            # here instead of on every request (a scan of os.environ and the file system
            # that cost more than the request itself on loopback).
            settings = session.merge_environment_settings(self.url, {}, None, self._verify, None)
            session.trust_env = False
            session.proxies.update(settings["proxies"])
            session.verify = settings["verify"]
            self._local.session = session
        return session

    def make_request(
        self,
        method: str,
        endpoint: str,
        options: Any = None,
        params: Any = None,
        data: Any = None,
        files: Any = None,
        basepath: str | None = None,
    ) -> requests.Response:
        url = self.url
        if basepath:
            url = f"{self._scheme}://{self._options['url']}:{self._port}{basepath}"
        response = self._session().request(
            method.upper(),
            url + endpoint,
            headers=self.auth_header(),
            json=options if files is None and data is None else None,
            params=params,
            data=data,
            files=files,
            timeout=self.request_timeout,
        )
        if response.status_code >= 400:
            error = _ERRORS_BY_STATUS.get(response.status_code, requests.HTTPError)
            raise error(
                f"{response.status_code} {method.upper()} {endpoint}: {error_message(response)}",
                response=response,
            )
        return response


def status_of(exc: BaseException) -> int | None:
    """HTTP status code of a failed request, None for network errors."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


class MattermostREST:
    """The calls Opsroom makes, with JSON in and out. Safe to use from many threads."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.driver = Driver(options, client_cls=PooledClient)
        self._client = self.driver.client

    # --- identity --------------------------------------------------------------------------
    def login(self) -> dict[str, Any]:
        """Check the token; returns the bot's own user. Raises on 401 and network errors."""
        return self.driver.login()

    @property
    def user_id(self) -> str:
        return self._client.userid

    @property
    def username(self) -> str:
        return self._client.username

    # --- reads -----------------------------------------------------------------------------
    def get(self, endpoint: str, params: dict[str, Any] | None = None) -> Any:
        return self._client.make_request("get", endpoint, params=params).json()

    def user(self, user_id: str) -> dict[str, Any]:
        return self.get(f"/users/{user_id}")

    def user_by_username(self, username: str) -> dict[str, Any]:
        return self.get(f"/users/username/{username}")

    def user_groups(self, user_id: str) -> list[dict[str, Any]]:
        """The user's Mattermost groups (501 on servers whose licence has no groups)."""
        return self.get(f"/users/{user_id}/groups")

    def my_teams(self) -> list[dict[str, Any]]:
        return self.get("/users/me/teams")

    def my_channels(self, team_id: str) -> list[dict[str, Any]]:
        """Channels of a team the bot belongs to, plus its direct and group channels."""
        return self.get(f"/users/me/teams/{team_id}/channels")

    def channel(self, channel_id: str) -> dict[str, Any]:
        return self.get(f"/channels/{channel_id}")

    def channel_by_name(self, team_name: str, channel_name: str) -> dict[str, Any]:
        return self.get(f"/teams/name/{team_name}/channels/name/{channel_name}")

    def channel_members(self, channel_id: str) -> list[dict[str, Any]]:
        return self.get(f"/channels/{channel_id}/members", params={"per_page": 200})

    def reactions(self, post_id: str) -> list[dict[str, Any]]:
        """Every reaction on a post (who, which emoji)."""
        return self.get(f"/posts/{post_id}/reactions")

    def posts_since(self, channel_id: str, since_ms: int) -> list[dict[str, Any]]:
        """Posts of a channel created or changed since ``since_ms``, in no particular order."""
        body = self.get(f"/channels/{channel_id}/posts", params={"since": since_ms})
        return list((body.get("posts") or {}).values())

    # --- writes ----------------------------------------------------------------------------
    def direct_channel(self, other_user_id: str) -> dict[str, Any]:
        return self._client.post("/channels/direct", options=[self.user_id, other_user_id])

    def join_channel(self, channel_id: str) -> dict[str, Any]:
        return self._client.post(
            f"/channels/{channel_id}/members", options={"user_id": self.user_id}
        )

    def leave_channel(self, channel_id: str) -> None:
        self._client.make_request("delete", f"/channels/{channel_id}/members/{self.user_id}")

    def create_post(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._client.post("/posts", options=body)

    def patch_post(self, post_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._client.put(f"/posts/{post_id}/patch", options=body)

    def add_reaction(self, post_id: str, emoji_name: str) -> dict[str, Any]:
        return self._client.post(
            "/reactions",
            options={"user_id": self.user_id, "post_id": post_id, "emoji_name": emoji_name},
        )

    def upload_file(self, channel_id: str, filename: str, content: bytes) -> dict[str, Any]:
        """Upload one file to a channel; returns its FileInfo (attach by id to a post)."""
        result = self._client.post(
            "/files",
            data={"channel_id": channel_id},
            files={"files": (filename, content)},
        )
        return result["file_infos"][0]

    # --- channels, pins and groups (incidents) ---------------------------------------------
    def create_channel(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /channels``: ``type`` "P" creates it private from the start (converting
        later needs a team admin)."""
        return self._client.post("/channels", options=body)

    def patch_channel(self, channel_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._client.put(f"/channels/{channel_id}/patch", options=body)

    def add_channel_member(self, channel_id: str, user_id: str) -> dict[str, Any]:
        """Add one user (who must be on the channel's team) to a channel."""
        return self._client.post(f"/channels/{channel_id}/members", options={"user_id": user_id})

    def post(self, post_id: str) -> dict[str, Any]:
        return self.get(f"/posts/{post_id}")

    def pin_post(self, post_id: str) -> dict[str, Any]:
        return self._client.post(f"/posts/{post_id}/pin")

    def groups_named(self, name: str) -> list[dict[str, Any]]:
        """Groups whose name or display name matches ``name`` (501 on Team Edition)."""
        return self.get("/groups", params={"q": name, "per_page": 200})

    def group_members(self, group_id: str) -> list[dict[str, Any]]:
        body = self.get(f"/groups/{group_id}/members", params={"per_page": 200})
        return list(body.get("members") or [])
