"""InspectorMorph as a real widget: renders a description, type-checks edits, announces
commands, and shows the backend's verdict inline."""

from __future__ import annotations

from typing import Any

from morphs.inspector import InspectorMorph, check_type, leaves
from shared_api.commands import DefineMethod, SetState
from shared_api.errors import ErrorCode, ErrorReply
from shared_api.replies import ProtoDescription, ProtoUpdated
from tests.ui.conftest import frames, screenshot

DESCRIPTION = ProtoDescription(
    name="BRICK",
    version=3,
    codex={"role": "The logician", "default_model": "phi3:mini", "core_principles": ["Be exact."]},
    state={"mood": {"level": 3, "name": "calm"}, "tags": ["a", "b"]},
    methods={"greet": "def greet(self, who):\n    return 'hi ' + who\n"},
    description={"interactions": 2},
    history=[
        {
            "prompt": "Why is the sky blue?",
            "reply": "Rayleigh scattering.",
            "model": "smollm2",
            "timings": {"tokens_per_s": 70.0, "ttft_ms": 40.0},
        },
        {
            "prompt": "[b]markup[/b] is shown as text",
            "reply": "ok",
            "model": "smollm2",
            "timings": {"tokens_per_s": 50.0, "ttft_ms": 60.0},
        },
    ],
)


def inspector(window: Any) -> tuple[InspectorMorph, list[tuple[Any, str]]]:
    morph = InspectorMorph("BRICK", pos=(20, 20))
    intents: list[tuple[Any, str]] = []
    morph.bind(on_intent=lambda _m, command, key: intents.append((command, key)))
    window.add_widget(morph)
    morph.show(DESCRIPTION)
    frames(3)
    return morph, intents


def test_history_and_performance_are_shown(window: Any) -> None:
    morph, _ = inspector(window)
    texts = [w.text for w in morph._body.children if hasattr(w, "text")]
    assert any("Rayleigh scattering." in t for t in texts)
    assert any("&bl;b&br;markup" in t for t in texts)  # user text never becomes markup
    assert any("60.0 tok/s mean" in t and "50 ms mean" in t for t in texts)


def test_leaves_and_type_checks() -> None:
    assert leaves(DESCRIPTION.state) == [
        ("mood.level", 3),
        ("mood.name", "calm"),
        ("tags", ["a", "b"]),
    ]
    assert check_type(3, 4.5) is None and check_type("x", "y") is None
    assert "a number" in (check_type(3, "three") or "")


def test_state_edit_is_type_checked_then_announced(window: Any) -> None:
    morph, intents = inspector(window)
    key = "state:mood.level"
    morph.inputs[key].text = '"three"'
    morph.edit_state(key, "mood.level", 3, new=False)
    assert intents == [] and "a number" in morph.results[key].text
    morph.inputs[key].text = "not json"
    morph.edit_state(key, "mood.level", 3, new=False)
    assert intents == [] and "not valid JSON" in morph.results[key].text
    morph.inputs[key].text = "4"
    morph.edit_state(key, "mood.level", 3, new=False)
    assert intents == [(SetState(proto="BRICK", path="mood.level", value=4), key)]
    morph.show_result(key, ProtoUpdated(proto="BRICK", version=4, change="set_state"))
    assert "applied" in morph.results[key].text
    morph.show_result(key, ErrorReply(code=ErrorCode.INVALID_PATH, message="No key 'x'."))
    assert "No key" in morph.results[key].text


def test_method_edit_shows_compile_errors_inline(window: Any) -> None:
    morph, intents = inspector(window)
    key = "method:greet"
    morph.inputs[key].text = "def greet(self, who):\n    return (who\n"
    morph.define_method(key, "greet")
    ((command, sent_key),) = intents
    assert isinstance(command, DefineMethod) and command.name == "greet" and sent_key == key
    error = ErrorReply(
        code=ErrorCode.COMPILE_ERROR,
        message="greet: '(' was never closed",
        detail={"line": 2, "column": 12},
    )
    morph.show_result(key, error)
    assert morph.results[key].text.startswith("line 2, column 12:")
    frames(2)
    screenshot("ui-inspector")


def test_refresh_waits_while_the_user_types(window: Any) -> None:
    morph, _ = inspector(window)
    morph.inputs["state:mood.name"].text = '"typing"'
    morph.inputs["state:mood.name"].focus = True
    newer = DESCRIPTION.model_copy(update={"version": 9})
    morph.show(newer)
    assert "v3" in morph.title.text and morph.inputs["state:mood.name"].text == '"typing"'
    morph.inputs["state:mood.name"].focus = False
    morph.show(newer)
    assert "v9" in morph.title.text
