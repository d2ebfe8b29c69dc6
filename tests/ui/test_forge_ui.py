"""The forge in the workbench: the Inspector's tool section as a real widget, and the whole
loop from the Inspector against a real backend subprocess whose BRICK talks through
FakeOllama (a TEST DOUBLE for an Ollama server) scripted to fail once, then pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kivy.clock import Clock

from morphs.inspector import InspectorMorph
from shared_api.commands import ForgeTool, Invoke
from shared_api.events import ForgeProgress, Progress
from shared_api.replies import DoesNotUnderstand, ToolResult
from shared_api.tools import Provenance, Tool, ToolAttempt
from tests.doubles.fake_ollama import GB, FakeOllama
from tests.forge.scripts import RIGHT, WRONG
from tests.ui.conftest import frames, screenshot
from tests.ui.test_inspector import DESCRIPTION
from tests.ui.test_workbench import start_app, until
from ui.store import WorkbenchStore

TOOL = Tool(
    name="add_numbers",
    proto="BRICK",
    description="add two numbers",
    source="def add_numbers(a, b):\n    return a + b\n",
    tests="def test_adds():\n    assert add_numbers(2, 3) == 5\n",
    params=["a", "b"],
    provenance=Provenance(forge_id="f1", author="BRICK", requested_by="user", forged_at=0.0),
    attempts=[
        ToolAttempt(number=1, stage="test", passed=False, runtime="runsc"),
        ToolAttempt(number=2, stage="test", passed=True, runtime="runsc"),
    ],
)


def test_tools_are_listed_and_calls_and_forges_are_announced(window: Any) -> None:
    morph = InspectorMorph("BRICK", pos=(20, 20))
    intents: list[tuple[Any, str]] = []
    morph.bind(on_intent=lambda _m, command, key: intents.append((command, key)))
    window.add_widget(morph)
    morph.show(DESCRIPTION.model_copy(update={"tools": [TOOL]}))
    frames(3)
    texts = [getattr(w, "text", "") for w in morph._body.walk()]
    assert any("add_numbers(a, b)" in t for t in texts)
    assert any("passed on attempt 2 in runsc" in t for t in texts)
    assert any("# tests it passed" in t for t in texts)

    morph.inputs["call:name"].text = "mystery"
    morph.inputs["call"].text = "[1]"
    morph.call_message("call")
    assert intents == [] and "JSON object" in morph.results["call"].text
    morph.inputs["call"].text = '{"x": 2}'
    morph.call_message("call")
    assert intents[-1] == (Invoke(proto="BRICK", method="mystery", args={"x": 2}), "call")
    proposal = {"proto": "BRICK", "name": "mystery", "description": "do the mystery"}
    morph.show_result(
        "call",
        DoesNotUnderstand(
            proto="BRICK", message="mystery", args={}, known_methods=[], proposal=proposal
        ),
    )
    assert "press forge" in morph.results["call"].text
    assert morph.inputs["forge:name"].text == "mystery"  # the proposal fills the form

    morph.inputs["forge:name"].text = "Bad Name"
    morph.forge_tool("forge")
    assert "lower case" in morph.results["forge"].text
    morph.inputs["forge:name"].text = "mystery"
    morph.forge_tool("forge")
    assert intents[-1] == (
        ForgeTool(proto="BRICK", name="mystery", description="do the mystery"),
        "forge",
    )
    morph.show_result(
        "call",
        ToolResult(proto="BRICK", name="add_numbers", result=5, runtime="runsc", duration_s=0.3),
    )
    assert "= 5" in morph.results["call"].text and "runsc" in morph.results["call"].text

    store = WorkbenchStore()
    store.persona("BRICK").bind(forge=lambda _m, text: morph.show_forge(text))
    store.apply(
        ForgeProgress(
            request_id="f", proto="BRICK", name="mystery", attempt=1, max_attempts=3,
            phase="failed", message="the tests failed", feedback="AssertionError: 1 != 2",
        )
    )  # fmt: skip
    frames(2)
    assert "attempt 1/3 failed" in morph.forge_label.text
    assert "AssertionError" in morph.forge_label.text


def test_forge_from_the_inspector_against_a_real_backend(window: Any, tmp_path: Path) -> None:
    with FakeOllama({"phi3:mini": 2 * GB}) as fake:
        fake.state.load_delay_s = 0.0
        # no examples given: BRICK first proposes them, then writes one candidate an attempt;
        # the wrong one fails the proposed example (2 - 3 returned -1)
        fake.script('{"examples": ["add_numbers(a=2, b=3) == 5"]}', WRONG, RIGHT)
        app = start_app(
            window, tmp_path / "home", fake.host, "[forge]\ncandidates = 1\nretry_candidates = 0\n"
        )
        try:
            inspector = app.open_inspector("ROBIN", (420, 20))
            inspector.size = (520, 700)
            until(lambda: inspector.description is not None)
            steps: list[str] = []
            app.store.persona("ROBIN").bind(forge=lambda _m, text: steps.append(text))
            inspector.inputs["forge:name"].text = "add_numbers"
            inspector.inputs["forge"].text = "add two numbers"
            inspector.forge_tool("forge")
            until(lambda: bool(inspector.description and inspector.description.tools))
            assert any("attempt 1/3 failed" in s and "returned -1" in s for s in steps), steps
            assert "forged in 2 attempt(s)" in app.store.persona("ROBIN").forge
            # the new tool is callable from the inspector, and runs in the sandbox
            inspector.inputs["call:name"].text = "add_numbers"
            inspector.inputs["call"].text = '{"a": 20, "b": 22}'
            inspector.call_message("call")
            until(lambda: "= 42" in inspector.results["call"].text)
            scroll = next(w for w in inspector.walk() if type(w).__name__ == "ScrollView")
            scroll.scroll_y = 0.25  # down to the tools
            frames(3)
            screenshot("workbench-forge")
        finally:
            app.on_stop()
            Clock.tick()


def test_long_operations_show_in_the_store_until_done() -> None:
    store = WorkbenchStore()
    store.apply(Progress(op="forge", op_id="f1", fraction=0.34, message="add: [1/3] writing"))
    store.apply(Progress(op="image_save", op_id="s1", fraction=0.5, message="serialize"))
    assert store.progress == {
        "f1": "forge 34% add: [1/3] writing",
        "s1": "image save 50% serialize",
    }
    store.apply(Progress(op="forge", op_id="f1", fraction=1.0, message="attached", done=True))
    assert list(store.progress) == ["s1"]
