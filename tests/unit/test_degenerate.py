"""The loop guards on real replies: SmolLM2-135M's captured degenerate dialogue turn, and its
fluent ones (tests/unit/data/smollm2_replies.json says how they were captured)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from backend.llm.base import Completion, GenerationParams, OnToken
from backend.llm.degenerate import (
    RESAMPLE_NOTE,
    SentenceGuard,
    degenerate_ngram,
    first_repeated_sentence,
    generate_without_loops,
    is_degenerate,
    trim_degenerate,
)

SAMPLES = json.loads((Path(__file__).parent / "data" / "smollm2_replies.json").read_text())[
    "samples"
]
LOOPING = next(s["text"] for s in SAMPLES if s["degenerate"])
FLUENT = [s["text"] for s in SAMPLES if not s["degenerate"]]


def test_the_captured_loop_is_degenerate_and_the_fluent_replies_are_not() -> None:
    assert degenerate_ngram(LOOPING) == "agreed that the goal"  # 7 times
    assert FLUENT and not any(is_degenerate(t) for t in FLUENT)


def test_more_than_three_occurrences_of_a_4_word_sequence() -> None:
    base = "one two three four"
    assert not is_degenerate(" x ".join([base] * 3))
    assert is_degenerate(" x ".join([base] * 4))
    assert not is_degenerate("a a a")  # too short for any 4-word sequence
    assert is_degenerate("Hey, hey! HEY hey. hey hey hey")  # case and punctuation do not hide it


def test_trimming_keeps_the_text_before_the_loop() -> None:
    trimmed = trim_degenerate(LOOPING)
    assert not is_degenerate(trimmed)
    assert LOOPING.startswith(trimmed) and trimmed.endswith(".")
    assert trimmed.count("They agreed that the goal") == 1  # the first repeat is cut off
    for text in FLUENT:
        assert trim_degenerate(text) == text


def test_trimming_a_loop_without_sentences() -> None:
    text = "and then we go " * 10
    trimmed = trim_degenerate(text)
    assert not is_degenerate(trimmed) and trimmed and text.startswith(trimmed)


def test_the_guard_trips_on_the_first_repeated_sentence_as_it_streams() -> None:
    guard = SentenceGuard()
    fed = 0
    for piece in LOOPING.split(" "):
        fed += 1
        if guard.feed(piece + " "):
            break
    assert guard.tripped and fed < len(LOOPING.split(" "))
    assert guard.text == LOOPING[: first_repeated_sentence(LOOPING)].rstrip()
    assert guard.text.count("They agreed") == 1 and not is_degenerate(guard.text)


def test_the_guard_leaves_fluent_replies_and_short_repeats_alone() -> None:
    for text in [*FLUENT, "Yes. I see. Yes. I see. Yes. I see."]:
        guard = SentenceGuard()
        assert not any(guard.feed(piece) for piece in text.split(" ")) or not guard.tripped
        assert not guard.tripped


def _replaying(*texts: str) -> tuple[list[GenerationParams], object]:
    """A TEST DOUBLE for the model: streams each scripted reply in turn, word by word,
    stopping when the stop event is set (as the backends do)."""
    calls: list[GenerationParams] = []

    def generate(
        params: GenerationParams, on_token: OnToken | None, stop: threading.Event
    ) -> Completion:
        text = texts[len(calls)]
        calls.append(params)
        parts: list[str] = []
        for word in text.split(" "):
            if stop.is_set():
                return Completion("".join(parts), "cancelled", completion_tokens=len(parts))
            piece = word + " "
            parts.append(piece)
            if on_token is not None:
                on_token(piece)
        return Completion("".join(parts), "stop", completion_tokens=len(parts))

    return calls, generate


def test_a_repeated_sentence_stops_generation_and_is_cut() -> None:
    calls, generate = _replaying(LOOPING)
    streamed: list[str] = []
    c = generate_without_loops(generate, GenerationParams(), streamed.append, threading.Event())  # type: ignore[arg-type]
    assert c.repeat_stopped and c.stop_reason == "stop" and not c.resampled
    assert c.text.count("They agreed") == 1 and len(calls) == 1
    assert len(streamed) < len(LOOPING.split(" "))  # it did not run to the end


def test_a_degenerate_reply_is_resampled_once_then_trimmed_and_flagged() -> None:
    loop = "I like cats because cats purr and " * 6  # no sentence repeats: only the 4-grams
    calls, generate = _replaying(loop, "Cats are calm. They purr.")
    streamed: list[str] = []
    params = GenerationParams(temperature=0.0, repeat_penalty=1.1)
    c = generate_without_loops(generate, params, streamed.append, threading.Event(), 0.7)  # type: ignore[arg-type]
    assert c.resampled and not c.degenerate and c.text.strip() == "Cats are calm. They purr."
    assert [p.temperature for p in calls] == [0.0, 0.7] and calls[1].repeat_penalty >= 1.3
    assert RESAMPLE_NOTE in streamed
    calls, generate = _replaying(loop, loop)
    c = generate_without_loops(generate, params, None, threading.Event())  # type: ignore[arg-type]
    assert c.resampled and c.degenerate and not is_degenerate(c.text) and loop.startswith(c.text)
    assert len(calls) == 2


def test_a_cancel_by_the_user_stays_a_cancel() -> None:
    cancel = threading.Event()
    cancel.set()
    _calls, generate = _replaying(LOOPING)
    c = generate_without_loops(generate, GenerationParams(), None, cancel)  # type: ignore[arg-type]
    assert c.stop_reason == "cancelled" and not c.resampled


@pytest.mark.parametrize("text", ["", "   ", "...", "\n\n\n", "a" * 100_000, "word " * 20_000])
def test_odd_and_huge_inputs(text: str) -> None:
    trimmed = trim_degenerate(text)
    assert not is_degenerate(trimmed)
    guard = SentenceGuard()
    guard.feed(text)
    assert isinstance(guard.text, str)
