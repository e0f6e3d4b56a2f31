"""The reliable-websocket bookkeeping of EventStream, without a network."""

import json

from bot.mattermost.events import EventStream


def make_stream():
    events, resyncs = [], []
    stream = EventStream(
        "ws://127.0.0.1:1/api/v4/websocket",
        "token",
        on_event=events.append,
        on_resync=resyncs.append,
        on_unauthorized=lambda: None,
    )
    return stream, events, resyncs


def frame(event, seq, **data):
    return json.dumps({"event": event, "seq": seq, "data": data, "broadcast": {}})


def test_first_hello_asks_for_catch_up_and_sets_position():
    stream, events, resyncs = make_stream()
    stream._receive(frame("hello", 0, connection_id="c1"))
    assert resyncs == ["start"]
    assert [e["event"] for e in events] == ["hello"]
    assert (stream.position.connection_id, stream.position.next_seq) == ("c1", 1)


def test_resumed_session_replays_without_catch_up():
    stream, events, resyncs = make_stream()
    stream._receive(frame("hello", 0, connection_id="c1"))
    stream._receive(frame("posted", 1))
    # reconnect: the server replays seq 2 and 3, then says hello with the same id
    stream._receive(frame("posted", 2))
    stream._receive(frame("posted", 3))
    stream._receive(frame("hello", 4, connection_id="c1"))
    assert resyncs == ["start"]
    assert [e["seq"] for e in events if e["event"] == "posted"] == [1, 2, 3]
    assert "sequence_number=5" in stream._url() and "connection_id=c1" in stream._url()


def test_new_connection_id_means_events_were_lost():
    stream, _, resyncs = make_stream()
    stream._receive(frame("hello", 0, connection_id="c1"))
    stream._receive(frame("hello", 0, connection_id="c2"))
    assert resyncs == ["start", "reconnect"]


def test_duplicates_are_dropped_and_gaps_reported():
    stream, events, resyncs = make_stream()
    stream._receive(frame("hello", 0, connection_id="c1"))
    stream._receive(frame("posted", 1))
    stream._receive(frame("posted", 1))
    stream._receive(frame("posted", 5))
    assert [e["seq"] for e in events if e["event"] == "posted"] == [1, 5]
    assert resyncs == ["start", "gap"]


def test_responses_and_garbage_are_not_events():
    stream, events, _ = make_stream()
    stream._receive('{"status": "OK", "seq_reply": 1}')
    stream._receive("not json")
    stream._receive('{"event": "posted"}')
    assert events == []
