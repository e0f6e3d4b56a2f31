from bot.mattermost.inbound import (
    STALE_NOTICE,
    InboundPolicy,
    decode_json_field,
    ignore_reason,
    is_command,
    normalize_command,
    stale_notice,
)

POLICY = InboundPolicy(bot_user_id="b" * 26, bot_username="opsbot", prefix="!")


def post(**fields):
    return {"id": "p" * 26, "user_id": "u" * 26, "message": "!echo x", "type": "", **fields}


def test_own_posts_system_posts_and_deleted_posts_are_ignored():
    assert ignore_reason(post(user_id=POLICY.bot_user_id), POLICY) == "own post"
    assert "system" in ignore_reason(post(type="system_join_channel"), POLICY)
    assert ignore_reason(post(delete_at=5), POLICY) == "deleted"
    assert ignore_reason(post(), POLICY) is None


def test_bots_and_webhooks_are_answered_only_when_enabled():
    from_bot = post(props={"from_bot": "true"})
    from_hook = post(props={"from_webhook": "true"})
    assert ignore_reason(from_bot, POLICY) == "from a bot"
    assert ignore_reason(from_hook, POLICY) == "from a webhook"
    permissive = InboundPolicy(
        POLICY.bot_user_id, "opsbot", "!", answer_bots=True, answer_webhooks=True
    )
    assert ignore_reason(from_bot, permissive) is None
    assert ignore_reason(from_hook, permissive) is None


def test_mention_becomes_prefixed_command():
    assert normalize_command("@opsbot echo x", POLICY) == "!echo x"
    assert normalize_command("@OpsBot: echo x", POLICY) == "!echo x"
    assert normalize_command("@opsbot, !echo x", POLICY) == "!echo x"
    # Only a mention at the start addresses the bot; a longer name is someone else.
    assert normalize_command("hey @opsbot echo x", POLICY) == "hey @opsbot echo x"
    assert normalize_command("@opsbot2 echo x", POLICY) == "@opsbot2 echo x"
    assert normalize_command("@opsbot", POLICY) == "@opsbot"


def test_command_detection_in_channels_and_direct_messages():
    assert is_command("!echo", POLICY, direct=False)
    assert not is_command("echo", POLICY, direct=False)
    assert is_command("echo", POLICY, direct=True)
    assert not is_command("   ", POLICY, direct=True)


def test_stale_notice_names_the_command_and_the_rule():
    text = stale_notice("!deploy api 1.2\nmore", 900)
    assert "`!deploy api 1.2`" in text and "15 min" in text and STALE_NOTICE in text


def test_event_fields_are_json_strings():
    assert decode_json_field('{"a": 1}') == {"a": 1}
    assert decode_json_field("not json") is None
    assert decode_json_field({"a": 1}) == {"a": 1}
