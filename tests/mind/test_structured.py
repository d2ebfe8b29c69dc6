"""Schema-bound outputs and choice scoring through each backend: the embedded llama.cpp
(SmolLM2, real and fast) and Ollama's HTTP API (the FakeOllama TEST DOUBLE: no Ollama server
can run here), plus the typed error when a backend ignores the schema."""

from __future__ import annotations

import json
import math
import threading

import pytest
from pydantic import BaseModel

from backend.llm import structured
from backend.llm.base import ChatMessage, Completion, GenerationParams
from backend.llm.embedded import EmbeddedBackend
from backend.llm.manager import ModelManager
from backend.llm.ollama_backend import OllamaBackend
from backend.llm.pairwise import VERDICT_OPENING, pairwise_prompt
from shared_api.errors import ModelFailedError, ModelOutputError
from tests.doubles.fake_ollama import GB, FakeOllama
from tests.doubles.scripted_model import ScriptedModel


class Colour(BaseModel):
    name: str
    warm: bool


def test_ollama_gets_the_schema_as_format_and_scores_choices() -> None:
    with FakeOllama({"m": GB}) as fake:
        manager = ModelManager({"ollama": OllamaBackend(fake.host, 5.0)})
        fake.script('{"name": "red", "warm": true}')
        value, _ = structured.generate(
            manager, Colour, backend="ollama", model_name="m", prompt="A colour?"
        )
        assert value == Colour(name="red", warm=True)
        assert fake.chat_requests()[-1]["format"] == structured.schema_of(Colour)
        fake.state.top_logprobs.append({"A": math.log(0.7), " B": math.log(0.2), "x": -5.0})
        done = manager.generate(
            backend="ollama", model="m", messages=[ChatMessage("user", "A or B?")],
            params=GenerationParams(choices=("A", "B", "C")),
        )  # fmt: skip
        assert done.text == "A" and done.choice_logprobs["B"] == pytest.approx(math.log(0.2))
        assert done.choice_logprobs["C"] < -5.0  # not listed: below the least likely listed
        sent = fake.chat_requests()[-1]
        assert sent["logprobs"] is True and sent["options"]["num_predict"] == 1
        with pytest.raises(ModelFailedError, match="no log-probabilities"):
            manager.generate(
                backend="ollama", model="m", messages=[ChatMessage("user", "A or B?")],
                params=GenerationParams(choices=("A", "B")),
            )  # fmt: skip


def test_an_answer_that_ignores_the_schema_is_a_typed_error() -> None:
    model = ScriptedModel(["name: red", '{"name": "red", "warm": "maybe"}'])
    manager = ModelManager({"embedded": model})
    for _ in range(2):
        with pytest.raises(ModelOutputError, match="not a valid Colour") as info:
            structured.generate(manager, Colour, backend="embedded", model_name="s", prompt="?")
        assert info.value.detail["answer"] and "did not honour the JSON schema" in str(info.value)
    cut = Completion('{"name": "re', "length")
    with pytest.raises(ModelOutputError, match="raise max_tokens"):
        structured.parse(Colour, cut)


@pytest.mark.timeout(600)  # real tokens on 2 shared cores
def test_embedded_grammar_and_choice_scoring_are_real() -> None:
    backend = EmbeddedBackend()  # SmolLM2-135M: fast; what it says need not be wise
    tiny = backend.model_name
    backend.load(tiny)
    try:
        schema = structured.schema_of(Colour)
        done = backend.generate(
            tiny, [ChatMessage("user", "Name a colour and say if it is warm, in JSON.")],
            GenerationParams(max_tokens=48, json_schema=schema), None, threading.Event(),
        )  # fmt: skip
        assert done.stop_reason == "stop", done.text
        assert set(json.loads(done.text)) == {"name", "warm"}  # the grammar's shape, exactly
        messages = [ChatMessage("user", pairwise_prompt("2+2?", "4", "5", []))]
        params = GenerationParams(choices=("A", "B"), prefill=VERDICT_OPENING)
        first = backend.generate(tiny, messages, params, None, threading.Event())
        again = backend.generate(tiny, messages, params, None, threading.Event())
        assert first.choice_logprobs == again.choice_logprobs  # one forward pass, no sampling
        assert all(-50 < lp < 0 for lp in first.choice_logprobs.values())
        assert first.text in ("A", "B") and first.completion_tokens == 0
        assert first.prompt_tokens > 20
    finally:
        backend.unload()
