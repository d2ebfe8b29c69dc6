from __future__ import annotations

import pytest
from pydantic import ValidationError

import backend.server  # noqa: F401 - imports every route module
from backend.routing import ROUTES
from shared_api.commands import COMMAND_ADAPTER, COMMAND_KINDS, Invoke, SetState
from shared_api.errors import ErrorCode, ErrorReply, NotFoundError
from shared_api.events import EVENT_ADAPTER, CognitiveDissonance
from shared_api.replies import REPLY_ADAPTER, ProtoUpdated
from shared_api.version import PROTOCOL_VERSION, compatible


def test_every_command_has_a_handler() -> None:
    assert set(ROUTES) == COMMAND_KINDS


def test_issue_examples_decode() -> None:
    examples = [
        {"kind": "set_state", "proto": "BRICK", "path": "mood.level", "value": 3},
        {"kind": "get_state", "proto": "BRICK"},
        {
            "kind": "define_method",
            "proto": "BRICK",
            "name": "greet",
            "source": "def greet(self, who): ...",
        },
        {"kind": "invoke", "proto": "BRICK", "method": "greet", "args": {"who": "ROBIN"}},
    ]
    decoded = [COMMAND_ADAPTER.validate_python(e) for e in examples]
    assert isinstance(decoded[0], SetState) and decoded[0].value == 3
    assert isinstance(decoded[3], Invoke) and decoded[3].args == {"who": "ROBIN"}


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "set_state", "proto": "BRICK", "path": "a..b", "value": 1},
        {"kind": "set_state", "proto": "BRICK", "path": "", "value": 1},
        {"kind": "set_state", "proto": "bad name!", "path": "a", "value": 1},
        {"kind": "define_method", "proto": "BRICK", "name": "__init__", "source": ""},
        {"kind": "invoke", "proto": "BRICK", "method": "x", "args": [1]},
        {"kind": "get_state", "proto": "BRICK", "unexpected": 1},
        {"kind": "swap_proto", "proto": "BRICK", "base_version": -1},
    ],
)
def test_invalid_bodies_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        COMMAND_ADAPTER.validate_python(body)


def test_replies_and_events_are_tagged_unions() -> None:
    assert isinstance(
        REPLY_ADAPTER.validate_python(
            {"kind": "proto_updated", "proto": "B", "version": 1, "change": "x"}
        ),
        ProtoUpdated,
    )
    err = REPLY_ADAPTER.validate_python({"kind": "error", "code": "not_found", "message": "m"})
    assert isinstance(err, ErrorReply) and err.code is ErrorCode.NOT_FOUND
    ev = EVENT_ADAPTER.validate_python(
        {"kind": "cognitive_dissonance", "proto": "B", "source": "s", "score": 0.4}
    )
    assert isinstance(ev, CognitiveDissonance)
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python(
            {"kind": "cognitive_dissonance", "proto": "B", "source": "s", "score": 4}
        )


def test_typed_error_to_reply() -> None:
    reply = NotFoundError("No Proto named 'X'.", proto="X").to_reply()
    assert reply.code is ErrorCode.NOT_FOUND and reply.detail == {"proto": "X"}


def test_protocol_version_compatibility() -> None:
    assert compatible(PROTOCOL_VERSION)
    assert compatible(PROTOCOL_VERSION.split(".")[0] + ".99")
    assert not compatible("0.1") and not compatible("banana")
