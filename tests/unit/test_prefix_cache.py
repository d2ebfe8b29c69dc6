"""Prompt caching of the personas' system prefixes, on the real tiny model (llama.cpp): the
same replies as without it, restored states when personas take turns, nothing stale."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.llm.base import ChatMessage, GenerationParams
from backend.llm.embedded import EmbeddedBackend

PERSONAS = Path(__file__).resolve().parents[2] / "personas"
BRICK = json.loads((PERSONAS / "BRICK.json").read_text())["system_prompt"]
ROBIN = json.loads((PERSONAS / "ROBIN.json").read_text())["system_prompt"]


def backend(cache_mb: int) -> EmbeddedBackend:
    b = EmbeddedBackend(n_threads=1, prompt_cache_mb=cache_mb)
    b.load(b.model_name)
    return b


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[EmbeddedBackend, EmbeddedBackend]]:
    cached, plain = backend(64), backend(0)
    yield cached, plain
    cached.unload()
    plain.unload()


def reply(b: EmbeddedBackend, system: str, text: str) -> str:
    msgs = [ChatMessage("system", system), ChatMessage("user", text)]
    return b.generate(
        b.model_name, msgs, GenerationParams(max_tokens=10), None, threading.Event()
    ).text


def test_turns_restore_each_personas_prefix_and_reply_the_same(
    pair: tuple[EmbeddedBackend, EmbeddedBackend],
) -> None:
    cached, plain = pair
    turns = [(BRICK, "Why is the sky blue?"), (ROBIN, "How are you?"), (BRICK, "What is 2+2?"),
             (ROBIN, "Tell me a joke."), (BRICK, "What is 2+2?")]  # fmt: skip
    outcomes = []
    for system, text in turns:
        got = reply(cached, system, text)
        outcomes.append(cached.prefix_cache.last)
        plain._llm.reset()  # type: ignore[union-attr]  # the baseline processes every prompt
        assert got == reply(plain, system, text)  # greedy: the cache changes nothing
        assert plain.prefix_cache.last == "off"
    assert outcomes == ["miss", "miss", "hit", "hit", "hit"]
    assert 0 < cached.prefix_cache.size_bytes <= 64 * 1024 * 1024


def test_an_amended_system_prompt_or_an_unload_never_meets_a_stale_state(
    pair: tuple[EmbeddedBackend, EmbeddedBackend],
) -> None:
    cached, _ = pair
    reply(cached, BRICK, "Hello.")
    reply(cached, BRICK + " You always answer in French.", "Hello.")  # a codex amendment
    assert cached.prefix_cache.last == "miss"
    cached.unload()  # a model change unloads first
    assert cached.prefix_cache.size_bytes == 0
    cached.load(cached.model_name)
    reply(cached, BRICK, "Hello.")
    assert cached.prefix_cache.last == "miss"
