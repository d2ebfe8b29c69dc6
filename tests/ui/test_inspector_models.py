"""The Inspector's *Models* rows: which model serves each role of the persona, and why."""

from __future__ import annotations

from typing import Any

from morphs.inspector import InspectorMorph
from shared_api.replies import ModelSelection, ProtoDescription
from tests.ui.conftest import frames

WHY = "Ollama unreachable at http://127.0.0.1:11434; the default model (built in)"


def test_the_models_serving_each_role_are_shown_with_why(window: Any) -> None:
    description = ProtoDescription(
        name="ALFRED",
        version=1,
        codex={"role": "The judge", "default_model": "llama3.1:8b"},
        state={},
        methods={},
        description={"interactions": 0},
        models={
            "chat": ModelSelection(backend="embedded", model="qwen2.5-coder-1.5b-instruct",
                                   reason=f"chat: {WHY}"),
            "judge": ModelSelection(backend="embedded", model="smollm2-135m-instruct",
                                    reason="judge: [models.personas.ALFRED] judge = [tiny]"),
        },
    )  # fmt: skip
    morph = InspectorMorph("ALFRED", pos=(20, 20))
    window.add_widget(morph)
    morph.show(description)
    frames(2)
    texts = [w.text for w in morph._body.children if hasattr(w, "text")]
    (rows,) = [t for t in texts if "embedded:qwen2.5-coder-1.5b-instruct" in t]
    assert f"chat: embedded:qwen2.5-coder-1.5b-instruct [color=8899aa]({WHY})" in rows
    assert "judge: embedded:smollm2-135m-instruct" in rows
    assert "= &bl;tiny&br;" in rows  # a reason is text, never markup
    assert any("[b]Models[/b]" in t for t in texts)
    window.remove_widget(morph)
