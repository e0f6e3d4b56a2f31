"""The incidents' chat operations against the fake Mattermost (checked against the vendor
OpenAPI on every request): what a real server does, handled one by one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.backends.surfaces import MattermostSurface
from bot.incidents.chat import ChannelSpec, ChatRefused, GroupsUnavailable, NameTaken
from bot.incidents.config import IncidentsConfig
from bot.incidents.model import Actor
from bot.incidents.service import IncidentService
from bot.incidents.store import IncidentStore
from bot.mattermost.directory import Directory
from bot.mattermost.outbox import Outbox
from bot.mattermost.poster import Poster
from bot.mattermost.rest import MattermostREST
from bot.runtime.policy import Principal


@pytest.fixture
def world(fake_mm):
    bot = fake_mm.add_user("opsbot", is_bot=True)
    users = {name: fake_mm.add_user(name) for name in ("alice", "bob", "carol", "outsider")}
    team = fake_mm.add_team("alpha")
    for user in (bot, *(users[n] for n in ("alice", "bob", "carol"))):
        fake_mm.add_to_team(team, user)
    news = fake_mm.add_channel(team, "incidents")
    for user in (users["alice"], users["bob"]):
        fake_mm.add_member(news, user)
    yield SimpleNamespace(bot=bot, team=team, news=news, token=fake_mm.create_token(bot), **users)
    assert fake_mm.contract_violations == []
    assert fake_mm.unexpected_requests == []


@pytest.fixture
def surface(fake_mm, world):
    port = fake_mm.url.rsplit(":", 1)[1]
    rest = MattermostREST(
        {
            "scheme": "http",
            "url": "127.0.0.1",
            "port": int(port),
            "basepath": "/api/v4",
            "token": world.token,
            "verify": False,
        }
    )
    rest.login()
    directory = Directory(rest, [])
    directory.refresh_teams()
    outbox = Outbox(workers=2)

    def build_identifier(text):
        user = directory.user_by_name(text) if text.startswith("@") else directory.user(text)
        return SimpleNamespace(nick=user["username"], person=text, aclattr=user["id"])

    backend = SimpleNamespace(
        rest=rest,
        directory=directory,
        poster=Poster(rest, outbox),
        build_identifier=build_identifier,
    )
    yield MattermostSurface(backend)
    outbox.close(timeout=5)


def spec(name, **overrides):
    values = {"team": "", "name": name, "display_name": "INC-1 Outage", "private": True}
    return ChannelSpec(**{**values, **overrides})


def test_a_private_channel_is_private_from_the_start(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1", header="h", purpose="p"))
    stored = fake_mm.get_channel(channel.id)
    assert stored["type"] == "P" and stored["header"] == "h" and stored["purpose"] == "p"
    assert not any(r.path.endswith("/privacy") for r in fake_mm.requests)  # never converted
    [me] = fake_mm.channel_members(channel.id)
    assert me["user_id"] == world.bot["id"] and "channel_admin" in me["roles"]


def test_a_forbidden_creation_is_said_clearly(fake_mm, world, surface):
    fake_mm.channel_creation_allowed = False
    with pytest.raises(ChatRefused, match="does not let the bot create private channels"):
        surface.create_channel(spec("inc-1"))


def test_names_are_checked_before_calling(fake_mm, world, surface):
    for bad in ("Inc-1", "-inc", "inc 1", "i" * 65):
        with pytest.raises(ValueError):
            surface.create_channel(spec(bad))
    with pytest.raises(ValueError, match="display name"):
        surface.create_channel(spec("inc-1", display_name="x" * 65))
    with pytest.raises(ValueError, match="purpose"):
        surface.create_channel(spec("inc-1", purpose="x" * 251))
    assert not any(r.path == "/api/v4/channels" for r in fake_mm.requests)


def test_a_name_over_64_would_have_been_a_500(fake_mm, world):
    """What the check above avoids: the server accepts it and fails storing it."""
    import requests

    answer = requests.post(
        f"{fake_mm.url}/api/v4/channels",
        headers={"Authorization": f"Bearer {world.token}"},
        json={"team_id": world.team["id"], "name": "i" * 65, "display_name": "x", "type": "O"},
        timeout=5,
    )
    assert answer.status_code == 500


def test_archived_names_stay_taken(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1"))
    fake_mm.archive_channel(channel.id)
    with pytest.raises(NameTaken):
        surface.create_channel(spec("inc-1"))


def test_a_taken_name_gets_a_unique_suffix_through_the_service(fake_mm, world, surface, tmp_path):
    fake_mm.add_channel(world.team, "inc-20300101-outage-1")
    service = IncidentService(IncidentsConfig(), IncidentStore(tmp_path / "i.db"), surface)
    incident, _ = service.declare("Outage", declared_by=Actor(world.alice["id"], "alice"))
    assert incident.channel_name.startswith(f"inc-{incident.declared_at:%Y%m%d}-outage-1")


def test_members_are_added_one_by_one_and_must_be_on_the_team(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1"))
    surface.add_member(channel.id, world.alice["id"])
    with pytest.raises(ChatRefused, match="must be a member of the channel's team"):
        surface.add_member(channel.id, world.outsider["id"])
    assert [m["user_id"] for m in fake_mm.channel_members(channel.id)] == [
        world.bot["id"],
        world.alice["id"],
    ]


def test_a_private_channel_the_bot_left_answers_404(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1"))
    fake_mm.remove_member(channel.id, world.bot)
    with pytest.raises(ChatRefused, match="HTTP 404"):
        surface.add_member(channel.id, world.alice["id"])
    with pytest.raises(ChatRefused, match="404"):
        surface.patch_channel(channel.id, header="x")


def test_header_and_purpose_are_patched_within_limits(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1"))
    surface.patch_channel(channel.id, header="h" * 2000, purpose="p" * 300)
    stored = fake_mm.get_channel(channel.id)
    assert len(stored["header"]) == 1024 and stored["header"].endswith("…")
    assert len(stored["purpose"]) == 250


def test_the_servers_system_posts_come_back_as_the_bots_and_carry_their_type(
    fake_mm, world, surface
):
    channel = surface.create_channel(spec("inc-1"))
    surface.add_member(channel.id, world.alice["id"])
    surface.patch_channel(channel.id, header="new")
    types = [p["type"] for p in fake_mm.posts_by(world.bot) if p["channel_id"] == channel.id]
    assert types == ["system_join_channel", "system_add_to_channel", "system_header_change"]
    post_id = surface.post_message(channel.id, "summary")
    info = surface.get_post(post_id)
    assert not info.is_system
    system = surface.get_post(
        next(p["id"] for p in fake_mm.posts_by(world.bot) if p["type"] == "system_header_change")
    )
    assert system.is_system  # the timeline and the 📌 filter drop these by type


def test_pinning_only_edits_and_anyone_may_unpin(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1", private=False))
    surface.add_member(channel.id, world.alice["id"])
    post_id = surface.post_message(channel.id, "summary")
    posts_before = len(fake_mm.posts_by(world.bot))
    surface.pin(post_id)
    assert surface.is_pinned(post_id)
    assert fake_mm.get_post(post_id)["edit_at"] == 0  # not an edit of the text
    assert len(fake_mm.posts_by(world.bot)) == posts_before  # no new post
    fake_mm.set_pinned(world.alice, post_id, False)
    assert not surface.is_pinned(post_id)


def test_groups_are_read_by_name(fake_mm, world, surface):
    fake_mm.add_group("sre", [world.alice, world.carol])
    fake_mm.add_group("sre-leads", [world.bob])
    members = surface.group_members("sre")
    assert members == sorted(
        [Principal(world.alice["id"], "alice"), Principal(world.carol["id"], "carol")],
        key=lambda p: p.user_id,
    )
    with pytest.raises(ChatRefused, match="no Mattermost group named dba"):
        surface.group_members("dba")


def test_groups_on_team_edition_answer_501_and_degrade(fake_mm, world, surface):
    fake_mm.groups_enabled = False
    with pytest.raises(GroupsUnavailable, match="Team Edition answers 501"):
        surface.group_members("sre")


def test_user_groups_forbidden_with_a_professional_licence(fake_mm, world, surface):
    import requests

    fake_mm.user_groups_forbidden = True
    fake_mm.add_group("sre", [world.alice])
    answer = requests.get(
        f"{fake_mm.url}/api/v4/users/{world.alice['id']}/groups",
        headers={"Authorization": f"Bearer {world.token}"},
        timeout=5,
    )
    assert answer.status_code == 403
    assert [p.username for p in surface.group_members("sre")] == ["alice"]  # still readable


def test_the_stakeholder_channel_is_joined_before_posting(fake_mm, world, surface):
    channel = surface.channel_named("~incidents")
    surface.post_message(channel.id, "INC-1 declared")
    assert world.bot["id"] in [m["user_id"] for m in fake_mm.channel_members(world.news)]
    secret = fake_mm.add_channel(world.team, "board", type="P")
    with pytest.raises(Exception, match="board"):
        surface.channel_named("~board")
    assert fake_mm.channel_members(secret) == []


def test_files_go_to_the_channel_posted_in_and_are_checked(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1"))
    post_id = surface.upload(channel.id, "postmortem-INC-1.md", b"# PM", "Post-mortem")
    post = fake_mm.get_post(post_id)
    assert post["channel_id"] == channel.id and len(post["file_ids"]) == 1
    [uploaded] = fake_mm.uploaded_files
    assert uploaded["channel_id"] == channel.id and uploaded["content"] == b"# PM"


def test_a_file_of_another_channel_is_dropped_silently_and_that_is_caught(fake_mm, world, surface):
    channel = surface.create_channel(spec("inc-1"))
    other = surface.create_channel(spec("inc-2"))
    rest = surface._backend.rest
    upload = rest.upload_file
    rest.upload_file = lambda channel_id, name, content: upload(other.id, name, content)
    with pytest.raises(Exception, match=r"dropped the file chart\.png"):
        surface.upload(channel.id, "chart.png", b"\x89PNG", "trend")
    [post] = [p for p in fake_mm.posts_by(world.bot) if p["message"] == "trend"]
    assert post["channel_id"] == channel.id and not post.get("file_ids")
