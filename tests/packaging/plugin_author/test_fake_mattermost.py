"""The fake Mattermost of bot.testing, as docs/plugin-authoring.md shows it."""

import requests


def test_the_token_works(fake_mm):
    bot = fake_mm.add_user("opsbot", is_bot=True)
    token = fake_mm.create_token(bot)
    me = requests.get(
        f"{fake_mm.url}/api/v4/users/me", headers={"Authorization": f"Bearer {token}"}
    ).json()
    assert me["username"] == "opsbot"
    assert fake_mm.contract_violations == []  # every exchange matched Mattermost's API docs
