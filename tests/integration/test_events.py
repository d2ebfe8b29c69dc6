"""Events on the PUB socket of a real backend: heartbeats, changes, dissonance, progress."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from backend.launcher import BackendProcess
from shared_api.envelope import Envelope
from shared_api.events import CognitiveDissonance, Event, Heartbeat, Progress, ProtoChanged
from shared_api.replies import DoesNotUnderstand, ImageSaved, ProtoUpdated
from shared_api.transport import Client
from shared_api.wire import EVENT, Codec
from tests.integration.helpers import RawPeer


@pytest.fixture
def events(shared_backend: BackendProcess) -> Iterator[Client]:
    """A client subscribed to events, past the PUB/SUB slow-joiner window: it has seen a
    heartbeat, so nothing published from now on is missed."""
    with shared_backend.client(events=True) as client:
        client.wait_event(lambda e: isinstance(e, Heartbeat), timeout=10)
        yield client


def test_heartbeats_arrive_regularly(shared_backend: BackendProcess, events: Client) -> None:
    first = events.wait_event(lambda e: isinstance(e, Heartbeat), timeout=5)
    second = events.wait_event(lambda e: isinstance(e, Heartbeat), timeout=5)
    assert isinstance(first, Heartbeat) and isinstance(second, Heartbeat)
    assert shared_backend.proc is not None
    assert first.pid == second.pid == shared_backend.proc.pid
    assert first.interval_s == 1.0
    assert 0.5 <= second.uptime_s - first.uptime_s <= 3.0


def test_set_state_publishes_proto_changed(events: Client) -> None:
    reply = events.call("set_state", {"proto": "ROBIN", "path": "mood.level", "value": 7})
    assert isinstance(reply, ProtoUpdated)
    event = events.wait_event(
        lambda e: isinstance(e, ProtoChanged) and e.proto == "ROBIN" and e.version == reply.version
    )
    assert isinstance(event, ProtoChanged)
    assert event.change == "set_state"
    assert event.detail == {"path": "mood.level"}


def test_unknown_method_is_does_not_understand_and_dissonance(events: Client) -> None:
    reply = events.call("invoke", {"proto": "BABS", "method": "fly", "args": {"height": 3}})
    assert isinstance(reply, DoesNotUnderstand)  # a reply, not an error
    assert (reply.proto, reply.message, reply.args) == ("BABS", "fly", {"height": 3})
    event = events.wait_event(lambda e: isinstance(e, CognitiveDissonance) and e.proto == "BABS")
    assert isinstance(event, CognitiveDissonance)
    assert event.source == "does_not_understand"
    assert (event.detail["message"], event.detail["args"]) == ("fly", {"height": 3})
    assert event.detail["proposal"]["name"] == "fly"  # type: ignore[index,call-overload]
    assert reply.proposal == event.detail["proposal"]  # autonomy is off: a forge is proposed
    assert 0.0 < event.score <= 1.0


def test_save_image_publishes_progress_until_done(events: Client) -> None:
    saved = events.call("save_image", {}, timeout=60)
    assert isinstance(saved, ImageSaved)
    progress: list[Progress] = []

    def collect(e: Event) -> bool:
        if isinstance(e, Progress) and e.op == "image_save":
            progress.append(e)
            return e.done
        return False

    events.wait_event(collect, timeout=10)
    assert len({p.op_id for p in progress}) == 1, progress
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions), fractions
    assert len(progress) >= 2
    assert progress[0].fraction == 0.0
    assert progress[-1].done and progress[-1].fraction == 1.0
    assert not any(p.done for p in progress[:-1])
    assert f"generation {saved.generation}" in progress[-1].message


def test_events_carry_the_request_that_caused_them(shared_backend: BackendProcess) -> None:
    """An event's header names the request behind it as parent_id; a heartbeat has none."""
    assert shared_backend.info is not None
    info = shared_backend.info
    codec = Codec(info.key_bytes)
    sub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(info.event_endpoint)
    try:

        def next_envelope(timeout: float = 10.0) -> Envelope:
            assert sub.poll(int(timeout * 1000)), "no event"
            frames = sub.recv_multipart()
            assert len(frames) == 1, "an event is a single payload frame"
            identities, envelope = codec.decode(frames, EVENT)
            assert identities == []
            return envelope

        deadline = time.monotonic() + 10
        while (heartbeat := next_envelope()).header.kind != "heartbeat":
            assert time.monotonic() < deadline
        assert heartbeat.header.parent_id is None
        with RawPeer(info) as peer:
            header, payload = peer.encode("set_state", {"proto": "ALFRED", "path": "x", "value": 1})
            assert peer.exchange([payload], expect_reply_to=header.msg_id)[0].body["kind"] == (
                "proto_updated"
            )
            header2, payload2 = peer.encode("invoke", {"proto": "ALFRED", "method": "nope"})
            peer.exchange([payload2], expect_reply_to=header2.msg_id)
        seen: dict[str, str | None] = {}
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            envelope = next_envelope()
            if envelope.header.kind in ("proto_changed", "cognitive_dissonance"):
                seen.setdefault(envelope.header.kind, envelope.header.parent_id)
        assert seen == {"proto_changed": header.msg_id, "cognitive_dissonance": header2.msg_id}
    finally:
        sub.close(0)
