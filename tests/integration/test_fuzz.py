"""Fuzzing the wire protocol of a real backend subprocess over real ZeroMQ.

A request is one payload frame, ``b"EMC1" + HMAC-SHA256(data) + data`` with ``data`` the
MessagePack of ``[header, body]``; frames before it are routing identities. Whatever arrives,
the backend stays up and keeps serving. A message that is unsigned, badly signed, replayed or
malformed gets no reply at all; a signed request whose body is wrong gets a typed
``invalid_body`` error. One backend serves the whole module; after every test it must still
answer ``ping`` and a ``set_state`` / ``get_state`` round trip.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from zmq.utils.monitor import recv_monitor_message

from backend.launcher import BackendProcess
from shared_api.commands import COMMAND_ADAPTER, COMMAND_KINDS
from shared_api.envelope import Header
from shared_api.errors import ErrorCode, ErrorReply
from shared_api.replies import REPLY_ADAPTER, EchoReply, ProtoUpdated, StatusReply
from shared_api.version import PROTOCOL_VERSION
from shared_api.wire import MAGIC, Codec, WireError, pack, unpack
from tests.integration.helpers import DATA_AT, RawPeer, assert_healthy, unseal

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FUZZ_BODIES = settings(FUZZ, max_examples=150)
PROTO = "FUZZ"  # a clone of BRICK that the fuzzers may scribble on
MiB = 1024 * 1024
#: How long to wait for a reply that must not come from the worker pool (where set_state
#: and friends run, after the sentinel ping has been answered inline).
LATE = 0.5
#: Kinds a fuzzer may send with a valid signature and an arbitrary body. Never shutdown (it
#: would stop the shared backend), save_image (slow), clone_proto (it piles up Protos), nor
#: define_method / swap_proto (they would exec whatever text the fuzzer drew as source).
SAFE_KINDS = [
    "ping",
    "echo",
    "status",
    "list_protos",
    "describe_proto",
    "get_state",
    "set_state",
    "remove_method",
    "invoke",
]


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_proto(shared_backend: BackendProcess) -> str:
    with shared_backend.client() as client:
        client.call("clone_proto", {"proto": "BRICK", "new_name": PROTO})
    return PROTO


@pytest.fixture(scope="module")
def peer(shared_backend: BackendProcess, fuzz_proto: str) -> Iterator[RawPeer]:
    assert shared_backend.info is not None
    with RawPeer(shared_backend.info) as p:
        yield p


@pytest.fixture(scope="module")
def key(shared_backend: BackendProcess) -> bytes:
    assert shared_backend.info is not None
    return shared_backend.info.key_bytes


@pytest.fixture(autouse=True)
def backend_survives(shared_backend: BackendProcess) -> Iterator[None]:
    yield
    assert_healthy(shared_backend)


def dropped_counts(backend: BackendProcess) -> dict[str, int]:
    with backend.client() as client:
        status = client.call("status", {})
    assert isinstance(status, StatusReply)
    return dict(status.services["dropped_frames"])


# -- strategies -----------------------------------------------------------------------------
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
#: What the backend can decode, JSON or not (bytes, NaN, infinities).
decodable = st.recursive(
    json_scalars | st.binary(max_size=16) | st.just(math.nan),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
#: Anything MessagePack can carry, integer map keys included (which the backend refuses).
packable = st.recursive(
    json_scalars | st.binary(max_size=16) | st.just(math.nan),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 5), kids, max_size=4)
    ),
    max_leaves=12,
)
raw_frames = st.binary(max_size=64) | packable.map(pack)


# -- (a) arbitrary frames -------------------------------------------------------------------
@FUZZ
@given(
    frames=st.lists(
        st.binary(max_size=64)
        | st.just(MAGIC)
        | st.binary(min_size=32, max_size=32)
        | st.binary(max_size=64).map(lambda b: MAGIC + b)  # the magic, then random bytes
        | packable.map(pack)
        | st.tuples(st.binary(min_size=32, max_size=32), packable).map(
            lambda t: MAGIC + t[0] + pack(t[1])  # a message under a forged signature
        ),
        min_size=1,
        max_size=8,
    )
)
def test_arbitrary_frame_lists_get_no_reply(peer: RawPeer, frames: list[bytes]) -> None:
    assert peer.exchange(frames) == []


# -- (b) malformed MessagePack under a valid signature -------------------------------------
def safe_kind(kind: Any) -> bool:
    return not isinstance(kind, str) or kind in SAFE_KINDS or kind not in COMMAND_KINDS


#: Values that break one header field each (besides arbitrary MessagePack).
BAD_FIELDS: dict[str, list[Any]] = {
    "msg_id": ["", "x" * 65, None, 7],
    "parent_id": ["p" * 65, 3.5, [1]],
    "kind": ["", "k" * 65, None, b"ping"],
    "ts": [("now", -3600.0), ("now", 3600.0), math.nan, math.inf, -math.inf, "now", None, True],
    "protocol": ["", "x" * 17, "2.0", "0.9", "one", 1.0],
}
#: The header's fields, in their order on the wire.
FIELDS = ["msg_id", "parent_id", "kind", "ts", "protocol"]


@st.composite
def headers(draw: st.DrawFn) -> list[Any] | bytes:
    """A header array: valid, with one or two fields broken, missing or extra, or raw bytes
    (any MessagePack value, e.g. the map of an older protocol). A ``ts`` of ("now", offset)
    becomes time.time() + offset when it is sent."""
    mode = draw(st.sampled_from(["valid", "valid", "valid", "broken", "broken", "raw"]))
    if mode == "raw":
        return draw(raw_frames)
    header: dict[str, Any] = {
        "msg_id": draw(st.text(min_size=1, max_size=20)),
        "parent_id": draw(st.none() | st.text(max_size=10)),
        "kind": draw(st.sampled_from([*SAFE_KINDS, "no_such_kind"])),
        "ts": ("now", draw(st.sampled_from([0.0, -5.0, 5.0]))),
        "protocol": draw(st.sampled_from(["1.0", "1.9", "1"])),
    }
    dropped: set[str] = set()
    extra: list[Any] = []
    if mode == "broken":
        for name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2)):
            how = draw(st.sampled_from(["drop", "special", "any"]))
            if how == "drop":
                dropped.add(name)
            elif how == "special":
                header[name] = draw(st.sampled_from(BAD_FIELDS[name]))
            else:
                header[name] = draw(packable)
        if draw(st.booleans()):
            extra.append(draw(packable))
    fields = [header[name] for name in FIELDS if name not in dropped] + extra
    if draw(st.integers(0, 7)) == 0:  # the fields in another order
        fields = draw(st.permutations(fields))
    return fields


def header_bytes(header: list[Any] | bytes) -> bytes:
    if isinstance(header, bytes):
        return header
    fields = [time.time() + v[1] if isinstance(v, tuple) else v for v in header]
    if fields and isinstance(fields[0], str) and 1 <= len(fields[0]) <= 20:
        fields[0] = os.urandom(8).hex() + fields[0]  # never a replay of an earlier example
    return pack(fields)


json_maps = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
bodies = st.one_of(
    json_maps.map(pack),  # a map: the body is fine, the header decides
    json_maps.map(pack),
    json_maps.map(pack),
    raw_frames,  # random bytes or any MessagePack value
    st.tuples(json_maps.map(pack), st.integers(min_value=0)).map(
        lambda t: t[0][: t[1] % len(t[0])]  # truncated
    ),
)


@st.composite
def datas(draw: st.DrawFn) -> bytes:
    """What a signer might put under its signature: ``[header, body]`` as raw MessagePack
    bytes (so either part can be garbage), or the outer array broken."""
    h = header_bytes(draw(headers()))
    b = draw(bodies)
    shape = draw(st.sampled_from(["pair"] * 8 + ["one", "three", "map", "raw"]))
    if shape == "pair":
        return b"\x92" + h + b
    if shape == "one":
        return b"\x91" + h
    if shape == "three":
        return b"\x93" + h + b + draw(raw_frames)
    if shape == "map":
        return b"\x81\xa1h" + h
    return draw(raw_frames)


@FUZZ
@given(data=datas())
def test_malformed_payloads_with_valid_signature(peer: RawPeer, key: bytes, data: bytes) -> None:
    """Correctly signed frames are dropped exactly when the codec refuses them, and answered
    (never with an internal error) exactly when it accepts them."""
    payload = Codec(key).seal(data)
    try:
        _, envelope = Codec(key).decode([payload])
    except WireError as exc:
        envelope = None
        event(f"refused: {exc.reason}")
    if envelope is not None:
        kind = envelope.header.kind
        event(f"accepted: {kind if kind in COMMAND_KINDS else '?'}")
        if not safe_kind(kind):
            return
    expected = envelope.header.msg_id if envelope is not None else None
    received = peer.exchange([payload], expect_reply_to=expected)
    if envelope is None:
        assert received == [], f"a refused frame was answered: {[e.body for e in received]}"
        return
    assert [e.header.parent_id for e in received] == [expected]
    reply = REPLY_ADAPTER.validate_python(received[0].body)
    assert not (isinstance(reply, ErrorReply) and reply.code == ErrorCode.INTERNAL), reply


# -- (c) envelope structure ----------------------------------------------------------------
MUTATIONS = [
    "no_signature",
    "random_signature",
    "other_key",
    "short_signature",
    "prefix_signature",
    "other_messages_signature",
    "bad_magic",
    "no_magic",
    "double_magic",
    "separate_frames",
    "split",
    "split_many",
    "truncated",
    "leading_bytes",
    "trailing_bytes",
    "trailing_frame",
    "spliced",
    "concatenated",
    "bit_flip",
    "empty_frames",
]


def at(data: st.DataObject, low: int, high: int) -> int:
    """A position in ``[low, high]`` drawn from a fixed range: a payload's length varies with
    its message id (a counter), and hypothesis refuses draws whose bounds change between
    replays of the same example."""
    return low + data.draw(st.integers(0, 2**20)) % (high - low + 1)


def mutate(
    mutation: str, data: st.DataObject, payload: bytes, other: bytes, codec: Codec
) -> list[bytes]:
    """Break ``payload`` (a signed message) by ``mutation``; ``other`` is a second signed
    message the attacker also holds, never sent as it is."""
    sig, d = unseal(payload)
    junk = st.binary(min_size=1, max_size=16)
    if mutation == "no_signature":
        return [MAGIC + d]
    if mutation == "random_signature":
        forged = data.draw(st.binary(min_size=32, max_size=32).filter(lambda s: s != sig))
        return [MAGIC + forged + d]
    if mutation == "other_key":
        return [Codec(os.urandom(32)).seal(d)]
    if mutation == "short_signature":
        return [MAGIC + sig[: data.draw(st.integers(0, 31))] + d]
    if mutation == "prefix_signature":  # signs only part of the data
        return [MAGIC + codec.sign(d[: at(data, 0, len(d) - 1)]) + d]
    if mutation == "other_messages_signature":
        return [MAGIC + unseal(other)[0] + d]
    if mutation == "bad_magic":
        bad = data.draw(  # near misses of the magic, never the magic itself
            (
                st.sampled_from([b"emc2", b"EMC1", b"EMC0", b"EMC", b"", b"<EMC>", b"EMC2\0"])
                | st.binary(max_size=8)
            ).filter(lambda x: x != MAGIC)
        )
        return [bad + sig + d]
    if mutation == "no_magic":
        return [sig + d]
    if mutation == "double_magic":
        return [MAGIC + payload]
    if mutation == "separate_frames":  # the magic, signature and data as frames of their own
        return [MAGIC, sig, d]
    if mutation == "split":  # the head of the payload moved into an identity frame
        cut = at(data, 1, len(payload) - 1)
        return [payload[:cut], payload[cut:]]
    if mutation == "split_many":
        cuts = sorted({at(data, 1, len(payload) - 1) for _ in range(data.draw(st.integers(2, 5)))})
        return [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True)]
    if mutation == "truncated":
        return [payload[: at(data, 0, len(payload) - 1)]]
    if mutation == "leading_bytes":
        return [data.draw(junk) + payload]
    if mutation == "trailing_bytes":
        return [payload + data.draw(junk | st.just(other))]
    if mutation == "trailing_frame":  # the payload is no longer the last frame
        return [payload, data.draw(junk | st.just(b""))]
    if mutation == "spliced":  # the head of one signed message, the tail of the other
        cut = at(data, 1, max(len(payload), len(other)) - 1)
        first, second = data.draw(st.permutations([payload, other]))
        forged = first[:cut] + second[cut:]
        assume(forged not in (payload, other))
        return [forged]
    if mutation == "concatenated":
        return [payload + other]
    if mutation == "bit_flip":
        blob = bytearray(payload)
        i = at(data, 0, len(blob) * 8 - 1)
        blob[i // 8] ^= 1 << (i % 8)
        return [bytes(blob)]
    assert mutation == "empty_frames"
    return [b""] * data.draw(st.integers(1, 4))


def test_broken_envelopes_are_dropped(
    shared_backend: BackendProcess, peer: RawPeer, fuzz_proto: str
) -> None:
    """Every way of breaking a signed set_state's payload: no reply, and nothing applied."""

    @FUZZ
    @given(mutation=st.sampled_from(MUTATIONS), value=json_values, data=st.data())
    def fuzz(mutation: str, value: Any, data: st.DataObject) -> None:
        body = {"proto": fuzz_proto, "path": "must_not_exist", "value": value}
        _, payload = peer.encode("set_state", body)
        _, other = peer.encode("set_state", {**body, "value": data.draw(json_values)})
        assert peer.exchange(mutate(mutation, data, payload, other, peer.codec)) == []

    fuzz()
    assert peer.recv(LATE) is None  # nor a late reply from the worker pool
    with shared_backend.client() as client:
        state = client.call("get_state", {"proto": fuzz_proto}).value
    assert isinstance(state, dict)
    assert "must_not_exist" not in state


def test_dropped_frames_are_counted(shared_backend: BackendProcess, peer: RawPeer) -> None:
    before = dropped_counts(shared_backend)
    _, payload = peer.encode("ping", {})
    sig, d = unseal(payload)
    assert peer.exchange([MAGIC + os.urandom(32) + d]) == []
    assert peer.exchange([sig + d]) == []
    assert peer.exchange([peer.codec.seal(b"\xc1")]) == []
    after = dropped_counts(shared_backend)
    for reason in ("bad_signature", "not_a_message", "malformed"):
        assert after.get(reason, 0) == before.get(reason, 0) + 1, reason


def test_non_finite_timestamp_is_dropped(
    shared_backend: BackendProcess, peer: RawPeer, fuzz_proto: str
) -> None:
    """A correctly signed set_state stamped NaN or +-inf (an age the replay guard cannot
    judge) gets no reply and is not applied, neither the first time nor when replayed."""
    for ts in (math.nan, math.inf, -math.inf):
        header = [os.urandom(8).hex(), None, "set_state", ts, PROTOCOL_VERSION]
        body = {"proto": fuzz_proto, "path": "non_finite_ts", "value": 1}
        payload = peer.codec.seal(pack([header, body]))
        assert peer.exchange([payload]) == [], ts
        assert peer.exchange([payload]) == [], ts
    assert peer.recv(LATE) is None  # nor a late reply from the worker pool
    with shared_backend.client() as client:
        state = client.call("get_state", {"proto": fuzz_proto}).value
    assert isinstance(state, dict)
    assert "non_finite_ts" not in state


# -- (d) signed envelopes with invalid bodies for real commands -----------------------------
def field(good: st.SearchStrategy[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """A good value half of the time, else a known-bad one or any decodable value."""
    return st.one_of(good, good, st.sampled_from(bad), decodable)


proto_names = field(st.just(PROTO), ["NOBODY", "", "9lives", "x" * 70])
paths = field(
    st.sampled_from(["mood", "mood.level", "list.0", "a.b.c"]), ["a..b", ".", "", "x" * 600]
)
method_names = field(st.sampled_from(["work", "nope"]), ["_x", "1st", "m" * 70])
method_sources = st.sampled_from(
    [
        "def m(self):\n    return 1\n",
        "def m(self:\n",
        "x = 1\n",
        "def m():\n    return 1\n",
        "raise RuntimeError('boom')\n",
        "s" * (256 * 1024 + 1),
    ]
) | st.text(alphabet="abcdefxyz ()\n:", max_size=30)
BODIES = {
    "set_state": {"proto": proto_names, "path": paths, "value": decodable},
    "get_state": {"proto": proto_names, "path": paths},
    "describe_proto": {"proto": proto_names},
    "invoke": {
        "proto": proto_names,
        "method": method_names,
        "args": st.dictionaries(st.text(max_size=6), json_values, max_size=3) | decodable,
    },
    "swap_proto": {
        "proto": proto_names,
        "base_version": st.integers(-3, 10**6) | decodable,
        "state": st.none()
        | st.dictionaries(st.text(max_size=6), json_values, max_size=3)
        | decodable,
        "methods": st.dictionaries(
            st.sampled_from(["m", "work", "1st"]), method_sources, max_size=2
        ),
        "remove_methods": st.lists(method_names, max_size=2) | decodable,
    },
    "remove_method": {"proto": proto_names, "name": method_names},
    "echo": {"data": st.text(max_size=20) | decodable},
    # ping and echo are answered by their routes' fast paths when the body has a known-good
    # shape, and must agree with full validation on every other shape
    "ping": {"client": field(st.text(max_size=40), ["x" * 33, "\u00b2" * 33])},
}
junk_fields = st.dictionaries(
    st.sampled_from(["kind", "junk", "Proto", "args"]), decodable, max_size=2
)


@st.composite
def command_bodies(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(BODIES)))
    fields = BODIES[kind]
    if draw(st.booleans()):  # every field present
        body = draw(st.fixed_dictionaries(fields))
    else:
        body = draw(st.fixed_dictionaries({}, optional=fields))
    if draw(st.integers(0, 3)) == 0:
        body.update(draw(junk_fields))
    return kind, body


@FUZZ_BODIES
@example(command=("set_state", {"proto": PROTO}))
@example(command=("set_state", {"proto": PROTO, "path": "ok", "value": 1}))
@example(command=("invoke", {"proto": PROTO, "method": "work", "args": {"x": b"\x00"}}))
@example(command=("swap_proto", {"proto": PROTO, "base_version": -1}))
@given(command=command_bodies())
def test_invalid_bodies_get_invalid_body_errors(
    peer: RawPeer, command: tuple[str, dict[str, Any]]
) -> None:
    kind, body = command
    header, payload = peer.encode(kind, body)
    try:  # what the backend will see: the body as it comes out of MessagePack
        COMMAND_ADAPTER.validate_python({**unpack(unseal(payload)[1])[1], "kind": kind})
        valid = True
    except ValidationError:
        valid = False
    event(f"{kind}: {'valid' if valid else 'invalid'}")
    received = peer.exchange([payload], expect_reply_to=header.msg_id)
    assert [e.header.parent_id for e in received] == [header.msg_id]
    reply = REPLY_ADAPTER.validate_python(received[0].body)
    if valid:
        assert not isinstance(reply, ErrorReply) or reply.code not in (
            ErrorCode.INVALID_BODY,
            ErrorCode.INTERNAL,
        ), reply
    else:
        assert isinstance(reply, ErrorReply), reply
        assert reply.code == ErrorCode.INVALID_BODY, reply
        assert reply.detail["errors"], reply


# -- (d2) signed frames with arbitrary header values ---------------------------------------
#: Any MessagePack-able value, or text of any script (e.g. "²", a digit to ``str.isdigit``).
header_values = packable | st.text(max_size=20) | st.text(alphabet="0123456789.²³¹٠١", max_size=6)


@FUZZ
@example(protocol="\u00b2.0", kind="ping", msg_id="x", parent_id=None)  # shut the backend down
@example(protocol="\u0661.0", kind="status", msg_id="y", parent_id="p")
@given(
    protocol=header_values,
    kind=st.sampled_from(SAFE_KINDS) | header_values,
    msg_id=header_values,
    parent_id=header_values,
)
def test_signed_frames_with_arbitrary_header_values(
    peer: RawPeer, key: bytes, protocol: Any, kind: Any, msg_id: Any, parent_id: Any
) -> None:
    """Correctly signed headers whose fields hold anything: a typed reply (never an internal
    error) or silence, and the backend keeps serving (checked after every example)."""
    if isinstance(msg_id, str):
        msg_id = os.urandom(8).hex() + msg_id  # never a replay of an earlier example
    if not safe_kind(kind):
        return
    data = pack([[msg_id, parent_id, kind, time.time(), protocol], {}])
    payload = Codec(key).seal(data)
    try:
        _, envelope = Codec(key).decode([payload])
    except WireError as exc:
        event(f"refused: {exc.reason}")
        assert peer.exchange([payload]) == []
        return
    received = peer.exchange([payload], expect_reply_to=envelope.header.msg_id)
    assert [e.header.parent_id for e in received] == [envelope.header.msg_id]
    reply = REPLY_ADAPTER.validate_python(received[0].body)
    assert not (isinstance(reply, ErrorReply) and reply.code == ErrorCode.INTERNAL), reply
    if isinstance(reply, ErrorReply):
        event(f"answered: {reply.code}")


def test_replies_and_events_are_not_requests(shared_backend: BackendProcess, peer: RawPeer) -> None:
    """A reply or an event, signed by the backend, sent back to it is dropped unanswered."""
    assert shared_backend.info is not None
    _, payload = peer.encode("ping", {})
    peer.send([payload])
    got = peer.recv(15.0)
    assert got is not None
    reply_frame = got[0][-1]
    with shared_backend.client(events=True) as client:
        client.wait_event(lambda e: e.kind == "heartbeat", timeout=10)
        sub = client._sub
        assert sub is not None
        client.call("set_state", {"proto": PROTO, "path": "echoed", "value": 1})
        assert sub.poll(10_000)
        event_frame = sub.recv()
    before = dropped_counts(shared_backend).get("bad_signature", 0)
    assert peer.exchange([reply_frame]) == []
    assert peer.exchange([event_frame]) == []
    assert dropped_counts(shared_backend).get("bad_signature", 0) == before + 2


def test_frames_per_message_and_total_size_are_bounded(peer: RawPeer) -> None:
    """A signed ping behind too many identity frames, or behind identities that make the
    message larger than max_message_bytes (each frame under it), is dropped unread."""
    _, ping = peer.encode("ping", {})
    assert peer.exchange([*([b"hop"] * 20), ping]) == []
    _, ping = peer.encode("ping", {})
    assert peer.exchange([os.urandom(10 * MiB), os.urandom(10 * MiB), ping]) == []


# -- (e) replay ----------------------------------------------------------------------------
def test_replayed_request_is_not_executed_twice(
    shared_backend: BackendProcess, peer: RawPeer, fuzz_proto: str
) -> None:
    with shared_backend.client() as client:
        before = client.call("get_state", {"proto": fuzz_proto, "path": ""}).version
        dropped_before = dropped_counts(shared_backend).get("replay", 0)
        header, payload = peer.encode(
            "set_state", {"proto": fuzz_proto, "path": "replay", "value": 1}
        )
        first = peer.exchange([payload], expect_reply_to=header.msg_id)
        assert [e.header.parent_id for e in first] == [header.msg_id]
        reply = REPLY_ADAPTER.validate_python(first[0].body)
        assert isinstance(reply, ProtoUpdated) and reply.version == before + 1
        assert peer.exchange([payload]) == []  # the very same frame again: silence
        assert peer.exchange([b"another-route", payload]) == []  # ... behind an identity
        with RawPeer(shared_backend.info) as other:
            assert other.exchange([payload]) == []  # ... from another connection too
            assert other.recv(LATE) is None  # nor a late reply from the worker pool
        assert peer.recv(LATE) is None
        state = client.call("get_state", {"proto": fuzz_proto, "path": ""})
        assert state.version == before + 1
    assert dropped_counts(shared_backend).get("replay", 0) == dropped_before + 3


def test_identity_frames_come_back_with_the_reply(peer: RawPeer) -> None:
    """Frames before the payload are routing identities: the reply carries them back."""
    header, payload = peer.encode("ping", {})
    peer.send([b"route-a", b"", payload])
    got = peer.recv(15.0)
    assert got is not None, "no reply"
    frames, envelope = got
    assert frames[:-1] == [b"route-a", b""]
    assert envelope.header.parent_id == header.msg_id
    assert envelope.body["kind"] == "pong"


# -- (f) huge frames ----------------------------------------------------------------------
@pytest.mark.parametrize("signed", [False, True], ids=["junk", "signed_echo"])
def test_oversized_frame_is_refused(shared_backend: BackendProcess, signed: bool) -> None:
    with RawPeer(shared_backend.info) as raw:
        assert raw.exchange([b"hello"]) == []  # connected
        if signed:
            frames = [raw.encode("echo", {"data": os.urandom(20 * MiB)})[1]]
        else:
            frames = [MAGIC + os.urandom(32 + 20 * MiB)]
        monitor_ready = raw.sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            raw.send(frames)
            if not monitor_ready.poll(15_000):
                raise AssertionError("the backend accepted a frame over max_message_bytes")
            assert recv_monitor_message(monitor_ready)["event"] == zmq.EVENT_DISCONNECTED
        finally:
            raw.sock.disable_monitor()
            monitor_ready.close(0)
        assert raw.recv(0.2) is None


def test_many_large_frames_under_the_limit(peer: RawPeer) -> None:
    """Each frame is under the limit, together 40 MiB: decoded, refused, connection kept."""
    frames = [os.urandom(10 * MiB) for _ in range(3)]
    assert peer.exchange([*frames, MAGIC + os.urandom(10 * MiB)]) == []


def test_largest_allowed_echo_round_trips(shared_backend: BackendProcess) -> None:
    data = os.urandom(15 * MiB)
    with shared_backend.client(timeout=60) as client:
        reply = client.call("echo", {"data": data})
    assert isinstance(reply, EchoReply)
    assert reply.data == data


# -- in-process: Codec.decode on arbitrary input -------------------------------------------
UNIT_KEY = b"k" * 32


@FUZZ
@given(
    prefix=st.lists(st.binary(max_size=8) | st.just(MAGIC), max_size=3),
    parts=st.lists(raw_frames | st.just(MAGIC) | raw_frames.map(lambda f: MAGIC + f), max_size=5),
    sign=st.booleans(),
    data=datas(),
)
def test_codec_decode_raises_only_wire_error(
    prefix: list[bytes], parts: list[bytes], sign: bool, data: bytes
) -> None:
    codec = Codec(UNIT_KEY)
    frames = [*prefix, codec.seal(data)] if sign else [*prefix, *parts]
    try:
        identities, envelope = codec.decode(frames)
    except WireError:
        return
    assert sign, "an unsigned frame was accepted"
    assert isinstance(envelope.header, Header)
    assert type(envelope.header.ts) is float and math.isfinite(envelope.header.ts)
    assert isinstance(envelope.body, dict)
    assert identities == prefix
    assert unpack(data)[1] == envelope.body


TAMPERINGS = [
    "split",
    "split_many",
    "separate_frames",
    "truncate",
    "prepend",
    "append",
    "identity_steals_tail",
    "splice",
    "swap_signature",
    "concatenate",
    "reseal_part",
]


@FUZZ
@example(tampering="split", body={"value": {}}, cut=DATA_AT - 1, junk=b"x")
@example(tampering="identity_steals_tail", body={"value": {}}, cut=0, junk=b"x")
@given(
    tampering=st.sampled_from(TAMPERINGS),
    body=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    cut=st.integers(min_value=0),
    junk=st.binary(min_size=1, max_size=40),
)
def test_signature_binds_the_whole_payload(
    tampering: str, body: dict[str, Any], cut: int, junk: bytes
) -> None:
    """Whatever an attacker does with signed payloads (moving bytes between the payload
    and identity frames, splitting, truncating, extending, splicing two of them), the
    codec accepts nothing but a payload byte for byte as it was signed, and decodes it to
    the message that was signed."""
    codec = Codec(UNIT_KEY, replay_window=None)
    header, payload = codec.encode("set_state", body)
    other_header, other = codec.encode("echo", {"data": junk})
    sig, d = unseal(payload)
    n = len(payload)
    at = 1 + cut % (n - 1)  # strictly inside the payload
    frames: list[bytes]
    if tampering == "split":
        frames = [payload[:at], payload[at:]]
    elif tampering == "split_many":
        cuts = sorted({at, 1 + (cut // n) % (n - 1), 1 + (cut // n // n) % (n - 1)})
        frames = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    elif tampering == "separate_frames":
        frames = [MAGIC, sig, d]
    elif tampering == "truncate":
        frames = [payload[:at]]
    elif tampering == "prepend":
        frames = [junk + payload]
    elif tampering == "append":
        frames = [payload + junk]
    elif tampering == "identity_steals_tail":  # the payload's tail moved out of it
        frames = [payload[at:], payload[:at]]
    elif tampering == "splice":
        frames = [payload[:at] + other[at:]]
    elif tampering == "swap_signature":
        frames = [MAGIC + unseal(other)[0] + d]
    elif tampering == "concatenate":
        frames = [payload + other]
    else:
        assert tampering == "reseal_part"  # the frame boundary moved inside the data,
        frames = [payload[:at], MAGIC + sig + payload[at:]]  # keeping the signature
    try:
        identities, envelope = codec.decode(frames)
    except WireError:
        return
    assert frames[-1] in (payload, other), f"a tampered payload verified: {frames!r}"
    if frames[-1] == payload:
        assert (envelope.header, envelope.body) == (header, body)
    else:
        assert (envelope.header, envelope.body) == (other_header, {"data": junk})
    assert identities == frames[:-1]


def test_inner_message_cannot_be_cut_out_and_executed(
    shared_backend: BackendProcess, peer: RawPeer, fuzz_proto: str
) -> None:
    """A man in the middle holds one signed set_state whose value carries a complete inner
    message, ``[header, body]`` of another set_state, as its last bytes: the signed data
    ends with exactly the data of the command he wants to run. He cuts, moves and re-frames
    those bytes every way he can; the backend must execute neither command."""
    inner_header = list(Header.make("set_state"))
    inner_body = {"proto": fuzz_proto, "path": "injected", "value": "pwned"}
    inner = pack([inner_header, inner_body])
    _, payload = peer.encode(
        "set_state",
        {"proto": fuzz_proto, "path": "harmless", "value": [inner_header, inner_body]},
    )
    sig, d = unseal(payload)
    assert d.endswith(inner), "the inner message is not the tail of the signed data"
    at = len(payload) - len(inner)
    forgeries = [
        [payload[:at], payload[at:]],  # the inner data in a frame of its own
        [payload[:DATA_AT], payload[at:]],
        [payload[:at], MAGIC + sig + payload[at:]],  # ... under the outer signature
        [MAGIC + sig + inner],
        [payload[at:], MAGIC + sig + inner],
        [MAGIC + sig, inner],
        [MAGIC, sig, inner],
        [payload[:at] + MAGIC + sig + inner],
        [MAGIC + sig + d[: at - DATA_AT]],  # the outer message with its value cut off
        [MAGIC + sig + inner + d[: at - DATA_AT]],
    ]
    received: list[Any] = []
    for forged in forgeries:
        received += peer.exchange(forged)
    late = peer.recv(LATE)  # set_state runs on the worker pool: its reply may come later
    if late is not None:
        received.append(late[1])
    with shared_backend.client() as client:
        state = client.call("get_state", {"proto": fuzz_proto}).value
    assert isinstance(state, dict)
    assert "injected" not in state, "a re-framed signed message executed an injected command"
    assert "harmless" not in state, "a forged frame executed the outer command"
    assert received == [], [e.body for e in received]


# -- a body that validates must never break the Proto it edits ------------------------------
def test_deep_state_path_never_breaks_reads(shared_backend: BackendProcess) -> None:
    """set_state accepts any path up to 512 characters: 256 one-letter segments nest the
    state deeper than MessagePack and pydantic can carry. Either the write is refused with a
    typed error, or the state stays readable; an internal error on every later read of the
    Proto is a bug."""
    with shared_backend.client() as client:
        client.call("clone_proto", {"proto": "BRICK", "new_name": "DEEP"})
        path = ".".join(["a"] * 256)
        reply = client.call_raw("set_state", {"proto": "DEEP", "path": path, "value": 1})
        assert not (isinstance(reply, ErrorReply) and reply.code == ErrorCode.INTERNAL), reply
        for kind, body in [
            ("get_state", {"proto": "DEEP"}),
            ("describe_proto", {"proto": "DEEP"}),
        ]:
            got = client.call_raw(kind, body)
            assert not isinstance(got, ErrorReply), f"{kind}: {got}"
