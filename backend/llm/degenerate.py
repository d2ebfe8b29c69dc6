"""Replies without degenerate loops: a small model tends to say one sentence over and over.

Two guards, both cheap and model-independent:

- ``SentenceGuard`` watches a reply as it streams and trips as soon as a finished sentence
  repeats one already written (the generation is then stopped and the repeat cut off);
- ``degenerate_ngram`` judges a finished reply: one in which any 4-word sequence occurs more
  than 3 times is degenerate (it is re-sampled once, else ``trim_degenerate`` cuts it at the
  point where the loop starts and the reply is flagged).
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

from backend.llm.base import Completion, GenerationParams, OnToken

NGRAM = 4
MAX_REPEATS = 3
#: The repeat penalty of the one re-sample of a degenerate reply (at least).
RESAMPLE_PENALTY = 1.3
RESAMPLE_NOTE = "\n[the reply looped; re-sampling]\n"
#: A sentence shorter than this (in words) may repeat ("Yes." "I see.") without tripping.
MIN_SENTENCE_WORDS = 4

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_STREAMED_END = re.compile(r"[.!?](?=\s)|\n")  # while streaming: "3." may become "3.14"


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def degenerate_ngram(text: str, n: int = NGRAM, limit: int = MAX_REPEATS) -> str | None:
    """The most repeated ``n``-word sequence if it occurs more than ``limit`` times, else None."""
    tokens = words(text)
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    if not counts:
        return None
    gram, count = counts.most_common(1)[0]
    return " ".join(gram) if count > limit else None


def is_degenerate(text: str) -> bool:
    return degenerate_ngram(text) is not None


def _word_spans(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]


def trim_degenerate(text: str, n: int = NGRAM, limit: int = MAX_REPEATS) -> str:
    """``text`` cut just before the loop: before the first sentence that repeats an earlier
    one, else before the ``limit + 1``-th occurrence of the repeated ``n``-gram (at the last
    sentence end before it, when there is one). A reply that is not degenerate is returned
    as it is."""
    if not is_degenerate(text):
        return text
    cut = first_repeated_sentence(text)
    if cut is None:
        spans = _word_spans(text)
        seen: Counter[tuple[str, ...]] = Counter()
        for i in range(len(spans) - n + 1):
            gram = tuple(s[2] for s in spans[i : i + n])
            seen[gram] += 1
            if seen[gram] > limit:
                cut = spans[i][0]
                break
    if cut is None:
        return text
    head = text[:cut]
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends and ends[-1] > 0:
        head = head[: ends[-1]]
    trimmed = head.rstrip()
    return trim_degenerate(trimmed, n, limit) if is_degenerate(trimmed) else trimmed


def _normal(sentence: str) -> str:
    return " ".join(words(sentence))


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each finished sentence in ``text`` (the unfinished tail is left out)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    return spans


def first_repeated_sentence(text: str) -> int | None:
    """Where the first finished sentence that repeats an earlier one starts, if any."""
    seen: set[str] = set()
    for start, end in sentences(text):
        key = _normal(text[start:end])
        if len(key.split()) < MIN_SENTENCE_WORDS:
            continue
        if key in seen:
            return start + (len(text[start:end]) - len(text[start:end].lstrip()))
        seen.add(key)
    return None


class SentenceGuard:
    """Fed a reply piece by piece; ``tripped`` once a finished sentence repeats an earlier one.
    ``text`` is then the reply without the repeat."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._start = 0  # where the sentence being written starts
        self._buffer = ""
        self.cut: int | None = None

    @property
    def tripped(self) -> bool:
        return self.cut is not None

    def feed(self, piece: str) -> bool:
        """Add ``piece``; True once the reply repeats a sentence (stop generating)."""
        if self.cut is not None:
            return True
        self._buffer += piece
        for m in _STREAMED_END.finditer(self._buffer, self._start):
            sentence = self._buffer[self._start : m.end()]
            key = _normal(sentence)
            if len(key.split()) >= MIN_SENTENCE_WORDS:
                if key in self._seen:
                    self.cut = self._start + len(sentence) - len(sentence.lstrip())
                    return True
                self._seen.add(key)
            self._start = m.end()
        return False

    @property
    def text(self) -> str:
        if self.cut is None:
            return self._buffer
        return self._buffer[: self.cut].rstrip()


class _GuardStop(threading.Event):
    """The caller's cancel event, which the guard can also set without cancelling the
    request: generation stops either way, and the caller's cancel still reads as its own."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self.cancel = cancel

    def is_set(self) -> bool:
        return super().is_set() or self.cancel.is_set()


Generate = Callable[[GenerationParams, OnToken | None, threading.Event], Completion]


def _guarded(
    generate: Generate, params: GenerationParams, on_token: OnToken | None,
    cancel: threading.Event,
) -> Completion:  # fmt: skip
    guard, stop = SentenceGuard(), _GuardStop(cancel)

    def feed(piece: str) -> None:
        if guard.feed(piece):
            stop.set()
        if on_token is not None:
            on_token(piece)

    completion = generate(params, feed, stop)
    if guard.tripped:
        completion.text = guard.text
        completion.repeat_stopped = True
        if completion.stop_reason == "cancelled" and not cancel.is_set():
            completion.stop_reason = "stop"
    return completion


def generate_without_loops(
    generate: Generate, params: GenerationParams, on_token: OnToken | None,
    cancel: threading.Event, resample_temperature: float = 0.7,
) -> Completion:  # fmt: skip
    """Generate a reply that stops at a repeated sentence; a reply that is still degenerate
    is re-sampled once (warmer, with a stronger repeat penalty), and if that one loops too it
    is trimmed where the loop begins and flagged ``degenerate``."""
    first = _guarded(generate, params, on_token, cancel)
    if first.stop_reason in ("cancelled", "error") or not is_degenerate(first.text):
        return first
    if on_token is not None:
        on_token(RESAMPLE_NOTE)
    warmer = replace(
        params,
        temperature=max(params.temperature, resample_temperature),
        repeat_penalty=max(params.repeat_penalty, RESAMPLE_PENALTY),
    )
    second = _guarded(generate, warmer, on_token, cancel)
    second.resampled = True
    second.ttft_ms = first.ttft_ms  # what the user waited for the first token
    second.load_ms += first.load_ms
    second.completion_tokens += first.completion_tokens
    second.generation_ms += first.generation_ms
    if second.stop_reason != "cancelled" and is_degenerate(second.text):
        second.text = trim_degenerate(second.text)
        second.degenerate = True
    return second
