from __future__ import annotations

import time

import pytest

from shared_api.commands import COMMAND_ADAPTER, Ping, SetState
from shared_api.envelope import Header
from shared_api.wire import DELIMITER, Codec, ReplayGuard, WireError, pack, unpack

KEY = b"k" * 32


def test_round_trip_with_identities() -> None:
    codec = Codec(KEY)
    header, frames = codec.encode("set_state", SetState(proto="BRICK", path="a.b", value=[1, 2]))
    identities, env = Codec(KEY).decode([b"peer-1", *frames])
    assert identities == [b"peer-1"]
    assert env.header.msg_id == header.msg_id and env.header.kind == "set_state"
    cmd = COMMAND_ADAPTER.validate_python(env.body)
    assert cmd == SetState(proto="BRICK", path="a.b", value=[1, 2])


@pytest.mark.parametrize("part", [1, 2, 3])
def test_any_flipped_byte_is_refused(part: int) -> None:
    _, frames = Codec(KEY).encode("ping", Ping())
    damaged = bytearray(frames[part])
    damaged[len(damaged) // 2] ^= 0x01
    frames[part] = bytes(damaged)
    with pytest.raises(WireError) as err:
        Codec(KEY).decode(frames)
    assert err.value.reason == "bad_signature"


def test_wrong_key_is_refused() -> None:
    _, frames = Codec(b"x" * 32).encode("ping", Ping())
    with pytest.raises(WireError, match="bad_signature"):
        Codec(KEY).decode(frames)


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"no", b"delimiter"], "no_delimiter"),
        ([DELIMITER, b"sig", b"header"], "frame_count"),
        ([DELIMITER, b"sig", b"h", b"b", b"extra"], "frame_count"),
    ],
)
def test_structural_errors(frames: list[bytes], reason: str) -> None:
    with pytest.raises(WireError) as err:
        Codec(KEY).decode(frames)
    assert err.value.reason == reason


def test_signed_garbage_is_malformed_not_a_crash() -> None:
    codec = Codec(KEY)
    for header, body in [
        (b"\xc1", pack({})),
        (pack({"kind": "x"}), pack({})),
        (pack(Header.make("ping")), b"\xc1"),
        (pack(Header.make("ping")), pack([1])),
    ]:
        with pytest.raises(WireError) as err:
            codec.decode([DELIMITER, codec.sign(header, body), header, body])
        assert err.value.reason == "malformed"


def test_replay_is_rejected() -> None:
    _, frames = Codec(KEY).encode("ping", Ping())
    receiver = Codec(KEY)
    receiver.decode(frames)
    with pytest.raises(WireError, match="replay"):
        receiver.decode(frames)


def test_stale_and_future_messages_are_rejected() -> None:
    guard = ReplayGuard(window=10, max_skew=5)
    old = Header.make("ping").model_copy(update={"ts": time.time() - 60})
    future = Header.make("ping").model_copy(update={"ts": time.time() + 60})
    with pytest.raises(WireError, match="stale"):
        guard.check(old)
    with pytest.raises(WireError, match="future"):
        guard.check(future)


def test_replay_guard_forgets_after_window(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = ReplayGuard(window=10)
    for _ in range(100):
        guard.check(Header.make("ping"))
    assert len(guard._seen) == 100
    later = time.time() + 11
    monkeypatch.setattr(time, "time", lambda: later)
    fresh = Header.make("ping")
    guard.check(fresh)
    assert list(guard._seen) == [fresh.msg_id]


def test_pack_unpack_round_trip() -> None:
    data = {"a": [1, 2.5, None, True, "x"], "b": {"c": b"\x00\x01"}}
    assert unpack(pack(data)) == data


def test_short_key_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Codec(b"short")
