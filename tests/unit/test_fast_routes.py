"""The inline fast paths of cheap commands (``Route.fast``) agree with full validation and
the handler: a body they answer validates and the handler gives the same reply; a body they
decline (None) goes through validation and its typed errors."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backend import handlers as _core_routes  # noqa: F401 - registers ping and echo
from backend.routing import ROUTES, Context
from shared_api.commands import COMMAND_ADAPTER
from shared_api.replies import REPLY_ADAPTER

#: Values a body can hold once decoded from MessagePack.
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=16),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = {"echo": ["data"], "ping": ["client"]}


def _ctx() -> Context:
    return Context(runtime=None, llm=None, endpoints={}, request_stop=lambda save: None)  # type: ignore[arg-type]


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    names = st.sampled_from([*FIELDS[kind], "junk", "Data"])
    return {**draw(st.dictionaries(names, values, max_size=2)), "kind": kind}


def test_cheap_commands_have_fast_paths() -> None:
    assert ROUTES["echo"].fast is not None and ROUTES["ping"].fast is not None
    assert not any(r.blocking and r.fast for r in ROUTES.values())


@settings(max_examples=300, deadline=None)
@given(body=bodies())
def test_fast_path_agrees_with_validation(body: dict[str, Any]) -> None:
    route = ROUTES[body["kind"]]
    assert route.fast is not None
    answer = route.fast(_ctx(), dict(body))
    try:
        command = COMMAND_ADAPTER.validate_python(body)
    except ValidationError:
        assert answer is None, f"answered a body that does not validate: {body!r}"
        return
    if answer is None:  # declining is always allowed: the slow path answers
        return
    expected = route.handler(_ctx(), command)
    assert REPLY_ADAPTER.validate_python(answer) == expected
    assert answer == expected.model_dump()


def test_known_good_shapes_take_the_fast_path() -> None:
    ctx = _ctx()
    echo, ping = ROUTES["echo"].fast, ROUTES["ping"].fast
    assert echo is not None and ping is not None
    assert echo(ctx, {"kind": "echo", "data": "x" * 1024}) == {
        "kind": "echo_reply",
        "data": "x" * 1024,
    }
    assert echo(ctx, {"kind": "echo", "data": b"\x00"}) == {"kind": "echo_reply", "data": b"\x00"}
    assert echo(ctx, {"kind": "echo"}) == {"kind": "echo_reply", "data": ""}
    assert ping(ctx, {"kind": "ping", "client": "workbench"})["kind"] == "pong"
    assert echo(ctx, {"kind": "echo", "data": 1}) is None
    assert echo(ctx, {"kind": "echo", "data": "x", "junk": 1}) is None
    assert ping(ctx, {"kind": "ping", "client": "x" * 33}) is None
