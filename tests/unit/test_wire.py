from __future__ import annotations

import hmac
import math
import time

import pytest

from shared_api.commands import COMMAND_ADAPTER, Ping, SetState
from shared_api.envelope import Envelope, Header
from shared_api.version import PROTOCOL_VERSION, compatible
from shared_api.wire import (
    EVENT,
    MAGIC,
    MAX_FRAMES,
    REPLY,
    REQUEST,
    Codec,
    ReplayGuard,
    WireError,
    pack,
    unpack,
)

KEY = b"k" * 32
SIG = 32
DATA_AT = len(MAGIC) + SIG


def header_list(**changes: object) -> list[object]:
    """A fresh, valid header as it travels: ``[msg_id, parent_id, kind, ts, protocol]``."""
    return list(Header.make("ping")._replace(**changes))


def test_payload_layout() -> None:
    codec = Codec(KEY)
    header, payload = codec.encode("set_state", SetState(proto="BRICK", path="a", value=1))
    assert isinstance(payload, bytes)
    assert payload[: len(MAGIC)] == MAGIC == b"EMC2"
    data = payload[DATA_AT:]
    assert payload[len(MAGIC) : DATA_AT] == codec.sign(data)
    assert len(codec.sign(data)) == SIG
    assert codec.seal(data) == payload
    assert unpack(data) == [
        list(header),
        {"kind": "set_state", "proto": "BRICK", "path": "a", "value": 1},
    ]
    assert codec.encode_with(header, SetState(proto="BRICK", path="a", value=1)) == payload


def test_round_trip_with_identities() -> None:
    codec = Codec(KEY)
    header, payload = codec.encode("set_state", SetState(proto="BRICK", path="a.b", value=[1, 2]))
    identities, env = Codec(KEY).decode([b"peer-1", b"", payload])
    assert identities == [b"peer-1", b""]
    assert isinstance(env, Envelope) and isinstance(env.header, Header)
    assert env.header == header
    assert env.header.kind == "set_state" and env.header.protocol == PROTOCOL_VERSION
    cmd = COMMAND_ADAPTER.validate_python(env.body)
    assert cmd == SetState(proto="BRICK", path="a.b", value=[1, 2])


def test_round_trip_without_identities() -> None:
    header, payload = Codec(KEY).encode("ping", Ping(), parent_id="p-1")
    identities, env = Codec(KEY).decode([payload])
    assert identities == []
    assert env.header == header and env.header.parent_id == "p-1"


def test_header_is_a_plain_tuple() -> None:
    header = Header.make("ping", "parent")
    assert tuple(header) == (header.msg_id, "parent", "ping", header.ts, PROTOCOL_VERSION)
    assert Header.from_wire(list(header)) == header
    assert Header.make("ping").msg_id != header.msg_id
    assert Header.from_wire([*header[:3], 7, header[4]]).ts == 7.0  # an int ts is a float


def test_any_flipped_bit_is_refused() -> None:
    _, payload = Codec(KEY).encode("ping", Ping())
    for i in range(len(payload) * 8):
        damaged = bytearray(payload)
        damaged[i // 8] ^= 1 << (i % 8)
        with pytest.raises(WireError) as err:
            Codec(KEY).decode([bytes(damaged)])
        expected = "not_a_message" if i < len(MAGIC) * 8 else "bad_signature"
        assert err.value.reason == expected, i


def test_wrong_key_is_refused() -> None:
    _, payload = Codec(b"x" * 32).encode("ping", Ping())
    with pytest.raises(WireError, match="bad_signature"):
        Codec(KEY).decode([payload])


def test_payload_must_be_the_last_frame() -> None:
    _, payload = Codec(KEY).encode("ping", Ping())
    for frames in ([payload, b""], [payload, b"x"], [payload, payload[:-1]]):
        with pytest.raises(WireError):
            Codec(KEY).decode(frames)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "empty"),
        ([b""], "not_a_message"),
        ([b"no"], "not_a_message"),
        ([MAGIC], "not_a_message"),
        ([MAGIC + b"s" * (SIG - 1)], "not_a_message"),
        ([b"EMC0" + b"s" * SIG + pack([])], "not_a_message"),
        ([b"<EMC>", b"s" * SIG, pack([]), pack({})], "not_a_message"),  # the old layout
        ([MAGIC + b"s" * SIG], "bad_signature"),
        ([MAGIC + b"s" * SIG + pack([header_list(), {}])], "bad_signature"),
    ],
)
def test_structural_errors(frames: list[bytes], reason: str) -> None:
    with pytest.raises(WireError) as err:
        Codec(KEY).decode(frames)
    assert err.value.reason == reason


def test_tampering_with_a_signed_payload_is_refused() -> None:
    """Truncating, extending, splitting or splicing signed payloads never verifies."""
    codec = Codec(KEY)
    _, p1 = codec.encode("ping", Ping())
    _, p2 = codec.encode("echo", {"data": "x"})
    data1, data2 = p1[DATA_AT:], p2[DATA_AT:]
    forged = [
        [p1[:-1]],
        [p1 + b"\x00"],
        [p1 + p2],
        [b"\x00" + p1],
        [MAGIC + MAGIC + p1[len(MAGIC) :]],
        [p1[:DATA_AT] + data2],  # p1's signature over p2's data
        [p1[:DATA_AT], data1],  # magic and signature moved into an identity frame
        [MAGIC, p1[len(MAGIC) :]],
        [p1[: DATA_AT + 1], p1[DATA_AT + 1 :]],
        [p1[:DATA_AT] + data1[: len(data1) // 2] + data2[len(data2) // 2 :]],
        [MAGIC + codec.sign(data1[:-1]) + data1],
        [MAGIC + codec.sign(data1 + data2) + data1],
    ]
    for frames in forged:
        with pytest.raises(WireError):
            Codec(KEY).decode(frames)


def test_signed_garbage_is_malformed_not_a_crash() -> None:
    codec = Codec(KEY)
    good = header_list()
    for data in [
        b"",
        b"\xc1",
        pack({}),
        pack([]),
        pack([good]),
        pack([good, {}, {}]),
        pack((good, {}))[:-1],
        pack({"msg_id": "x", "kind": "ping", "ts": time.time(), "protocol": "1.0"}),
        pack([{"msg_id": "x", "kind": "ping", "ts": time.time(), "protocol": "1.0"}, {}]),
        pack([good[:4], {}]),
        pack([[*good, "extra"], {}]),
        pack([good, [1]]),
        pack([good, None]),
        pack([good, b"{}"]),
        b"\x92" + pack(good) + b"\xc1",
        pack([header_list(msg_id=""), {}]),
        pack([header_list(msg_id="x" * 65), {}]),
        pack([header_list(msg_id=7), {}]),
        pack([header_list(parent_id=3), {}]),
        pack([header_list(parent_id="p" * 65), {}]),
        pack([header_list(kind=""), {}]),
        pack([header_list(kind=b"ping"), {}]),
        pack([header_list(ts="now"), {}]),
        pack([header_list(ts=None), {}]),
        pack([header_list(ts=True), {}]),
        pack([header_list(protocol=""), {}]),
        pack([header_list(protocol=1.0), {}]),
        pack([header_list(protocol="x" * 17), {}]),
    ]:
        with pytest.raises(WireError) as err:
            codec.decode([codec.seal(data)])
        assert err.value.reason == "malformed", data


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_timestamp_is_refused(ts: float) -> None:
    """The replay guard cannot tell the age of a message stamped NaN: it is never "too old"
    nor "from the future", so once its id leaves the seen-set it could be replayed forever.
    A non-finite ``ts`` must be refused, as malformed or as stale (+inf may also read as
    a message from the future)."""
    allowed = {"malformed", "stale"} | ({"future"} if ts > 0 else set())
    codec = Codec(KEY)  # the server's settings
    for _ in range(2):  # the same message twice: neither is accepted
        data = pack([header_list(msg_id="fixed-id", ts=ts), {"kind": "ping"}])
        with pytest.raises(WireError) as err:
            codec.decode([codec.seal(data)])
        assert err.value.reason in allowed, err.value
    with pytest.raises(WireError) as err:
        codec.decode([codec.seal(pack([header_list(ts=ts), {}]))])
    assert err.value.reason in allowed, err.value


def test_replay_is_rejected() -> None:
    _, payload = Codec(KEY).encode("ping", Ping())
    receiver = Codec(KEY)
    receiver.decode([payload])
    with pytest.raises(WireError, match="replay"):
        receiver.decode([payload])
    with pytest.raises(WireError, match="replay"):  # other identities: the same message
        receiver.decode([b"someone-else", payload])


def test_client_codec_does_not_track_replays() -> None:
    _, payload = Codec(KEY).encode("ping", Ping())
    client = Codec(KEY, replay_window=None)
    assert client.replay is None
    assert client.decode([payload]) == client.decode([payload])


def test_server_window_is_thirty_seconds() -> None:
    codec = Codec(KEY)
    assert codec.replay is not None and codec.replay.window == 30.0
    old = Header.make("ping")._replace(ts=time.time() - 31)
    with pytest.raises(WireError, match="stale"):
        codec.decode([codec.encode_with(old, {})])
    recent = Header.make("ping")._replace(ts=time.time() - 25)
    codec.decode([codec.encode_with(recent, {})])


def test_stale_and_future_messages_are_rejected() -> None:
    guard = ReplayGuard(window=10, max_skew=5)
    old = Header.make("ping")._replace(ts=time.time() - 60)
    future = Header.make("ping")._replace(ts=time.time() + 60)
    with pytest.raises(WireError, match="stale"):
        guard.check(old)
    with pytest.raises(WireError, match="future"):
        guard.check(future)


def test_replay_guard_forgets_after_window_and_skew(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids are kept at least window + skew (15 s here) and at most twice that: memory stays
    bounded by the message rate, never by the uptime."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    guard = ReplayGuard(window=10, max_skew=5)
    first = [Header.make("ping") for _ in range(100)]
    for header in first:
        guard.check(header)
    assert len(guard) == 100
    for step in range(1, 31):  # a message a second for 30 s: each first id seen >= 15 s
        now += 1
        guard.check(Header.make("ping"))
        if step < 15:
            with pytest.raises(WireError, match="replay"):
                guard.check(first[step]._replace(ts=now))
    assert len(guard) <= 30  # the first 100 are gone, within twice the keep time
    assert all(header.msg_id not in guard._current | guard._previous for header in first)


def test_pack_unpack_round_trip() -> None:
    data = {"a": [1, 2.5, None, True, "x"], "b": {"c": b"\x00\x01"}}
    assert unpack(pack(data)) == data


def test_short_key_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Codec(b"short")


def test_future_stamped_message_cannot_be_replayed_before_it_is_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A message stamped max_skew ahead stays fresh until ts + window: its id must be
    remembered that long, or it can be replayed once in between."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    guard = ReplayGuard(window=10, max_skew=5)
    ahead = Header.make("ping")._replace(ts=now + 4.9)
    guard.check(ahead)
    now += 12  # past the window after it was seen, but it is not stale yet (4.9 + 10 > 12)
    guard.check(Header.make("ping")._replace(ts=now))  # evicts what is past the horizon
    with pytest.raises(WireError, match="replay"):
        guard.check(ahead)


@pytest.mark.parametrize(
    ("sent", "received"),
    [(REQUEST, REPLY), (REPLY, REQUEST), (EVENT, REQUEST), (EVENT, REPLY), (REPLY, EVENT)],
)
def test_signature_binds_the_channel(sent: bytes, received: bytes) -> None:
    """Nothing signed for one direction is accepted in another."""
    _, payload = Codec(KEY).encode("ping", Ping(), channel=sent)
    Codec(KEY).decode([payload], sent)
    with pytest.raises(WireError) as err:
        Codec(KEY).decode([payload], received)
    assert err.value.reason == "bad_signature"


def test_frame_count_and_total_size_are_bounded_before_authentication() -> None:
    codec = Codec(KEY, max_message_bytes=4096)
    _, payload = codec.encode("ping", Ping())
    codec.decode([b"id"] * (MAX_FRAMES - 1) + [payload])
    with pytest.raises(WireError) as err:
        codec.decode([b"id"] * MAX_FRAMES + [payload])
    assert err.value.reason == "too_many_frames"
    with pytest.raises(WireError) as err:
        codec.decode([b"x" * 4096, payload])  # the payload alone is fine; the message is not
    assert err.value.reason == "too_large"


@pytest.mark.parametrize("version", ["\u00b2.0", "\u0661.0", "1\u00b2", "", ".", "9" * 16, "x.y"])
def test_odd_protocol_versions_are_incompatible_not_errors(version: str) -> None:
    assert compatible(version) is False


@pytest.mark.parametrize("key_len", [16, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("channel", [REQUEST, REPLY, EVENT])
def test_signature_is_standard_hmac_sha256(key_len: int, channel: bytes) -> None:
    """The precomputed-pad signer is plain HMAC-SHA256 over ``channel + data``, for keys
    shorter than, equal to and longer than SHA-256's 64-byte block."""
    key = bytes(range(256))[:key_len]
    codec = Codec(key)
    for data in (b"", b"x", pack([header_list(), {"a": 1}]), b"y" * 70_000):
        assert codec.sign(data, channel) == hmac.digest(key, channel + data, "sha256")


def test_decode_reply_authenticates_like_decode() -> None:
    codec = Codec(KEY, replay_window=None)
    good = Codec(KEY).encode_payload("pong", {"kind": "pong"}, "p-1", REPLY)
    assert codec.decode_reply(good) == ("p-1", {"kind": "pong"})
    assert codec.decode_reply(good) == ("p-1", {"kind": "pong"})  # the client keeps no guard
    request = Codec(KEY).encode_payload("ping", {}, "p-1", REQUEST)
    flipped = bytearray(good)
    flipped[-1] ^= 1
    for frame, reason in [
        (request, "bad_signature"),  # signed for another direction
        (Codec(b"x" * 32).encode_payload("pong", {}, "p-1", REPLY), "bad_signature"),
        (bytes(flipped), "bad_signature"),
        (good[:-1], "bad_signature"),
        (good[:30], "not_a_message"),
        (b"EMC0" + good[4:], "not_a_message"),
        (codec.seal(b"\xc1", REPLY), "malformed"),
        (codec.seal(pack([header_list()[:4], {}]), REPLY), "malformed"),
        (codec.seal(pack([header_list(), []]), REPLY), "malformed"),
        (codec.seal(pack([header_list()]), REPLY), "malformed"),
    ]:
        with pytest.raises(WireError) as err:
            codec.decode_reply(frame)
        assert err.value.reason == reason, frame
