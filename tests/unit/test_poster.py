import threading

import pytest

from bot.mattermost.outbox import Outbox
from bot.mattermost.poster import Poster, attachment
from bot.mattermost.splitting import MATTERMOST_MAX_POST_LENGTH as POST_LIMIT


class RecordingREST:
    user_id = "b" * 26

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def _record(self, *call):
        with self.lock:
            self.calls.append(call)
        return {"id": f"post{len(self.calls)}"}

    def create_post(self, body):
        return self._record("create", body)

    def patch_post(self, post_id, body):
        return self._record("patch", post_id, body)

    def add_reaction(self, post_id, emoji):
        return self._record("react", post_id, emoji)

    def upload_file(self, channel_id, filename, content):
        self._record("upload", channel_id, filename, content)
        return {"id": "file1"}


@pytest.fixture
def poster():
    rest = RecordingREST()
    outbox = Outbox(workers=4)
    yield Poster(rest, outbox), rest
    outbox.close()


def test_long_text_is_split_in_order_with_props_on_the_last_part(poster):
    poster, rest = poster
    text = "\n".join("x" * 100 for _ in range(400))  # ~40 KB
    futures = poster.post("c1", text, root_id="r1", props={"attachments": []})
    for future in futures:
        future.result(5)
    bodies = [call[1] for call in rest.calls]
    assert len(bodies) == 3
    assert all(len(b["message"]) <= POST_LIMIT for b in bodies)
    assert "\n".join(b["message"] for b in bodies) == text
    assert [("props" in b) for b in bodies] == [False, False, True]
    assert {b["root_id"] for b in bodies} == {"r1"}
    ids = [b["pending_post_id"] for b in bodies]
    assert len(set(ids)) == 3 and all(i.startswith(rest.user_id + ":") for i in ids)


def test_edit_react_and_upload(poster):
    poster, rest = poster
    poster.edit("p1", "y" * (POST_LIMIT + 10)).result(5)
    poster.react("p1", ":white_check_mark:").result(5)
    poster.upload("c1", "out.txt", b"data", message="full output").result(5)
    kinds = [call[0] for call in rest.calls]
    assert kinds == ["patch", "react", "upload", "create"]
    assert len(rest.calls[0][2]["message"]) <= POST_LIMIT
    assert rest.calls[1][2] == "white_check_mark"
    assert rest.calls[3][1]["file_ids"] == ["file1"]


def test_attachment_maps_colour_names_and_fields():
    card = attachment(title="Deploy", color="green", fields=[("env", "prod")])
    assert card["color"] == "#3db887"
    assert card["fields"] == [{"title": "env", "value": "prod", "short": True}]
    assert card["fallback"] == "Deploy"
    assert attachment(color="#123456")["color"] == "#123456"


def test_every_text_is_scrubbed_before_it_leaves():
    rest = RecordingREST()
    outbox = Outbox(workers=1)
    poster = Poster(rest, outbox, scrub=lambda text: text.replace("s3cret", "[REDACTED]"))
    poster.post("c1", "pw s3cret").pop().result(5)
    poster.edit("p1", "still s3cret").result(5)
    poster.upload("c1", "f.txt", b"x", message="s3cret too").result(5)
    outbox.close()
    assert "s3cret" not in repr(rest.calls)
