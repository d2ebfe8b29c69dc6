"""Memories into a persona's prompt: the best hits, numbered, within a token budget.

The context goes in front of the user's text, each memory numbered ``[n]`` with its source,
so the model can cite it and the reply event can carry the same numbers as citations.
Tokens are estimated at four characters each (the persona's model is not loaded when the
prompt is built, and a conservative estimate only ever leaves a little room unused).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from shared_api.events import Citation
from shared_api.replies import MemoryHit

HEADER = "Relevant memories (cite them by number, e.g. [1], when you use them):\n\n"
FOOTER = "\n\n---\n\n"
#: Below this many tokens of room a memory is not worth including.
MIN_ENTRY_TOKENS = 24
#: Tokens kept free for the chat template and the model's own framing.
MARGIN_TOKENS = 64
CHARS_PER_TOKEN = 4
EXCERPT_CHARS = 200


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def context_budget(limit: int, *, n_ctx: int, system: str, question: str, max_tokens: int) -> int:
    """How many tokens of memories fit: ``limit``, or what the context window leaves."""
    left = n_ctx - estimate_tokens(system) - estimate_tokens(question) - max_tokens
    return max(0, min(limit, left - MARGIN_TOKENS))


@dataclass(frozen=True)
class Recall:
    """The prompt with memories in front of the question, and what was cited."""

    prompt: str
    citations: list[Citation]
    tokens: int


def label(hit: MemoryHit) -> str:
    if hit.origin == "conversation":
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(hit.ts)) if hit.ts else ""
        return f"conversation with {hit.proto}" + (f", {when}" if when else "")
    where = f", {hit.heading}" if hit.heading else ""
    return f"{hit.name or hit.source}{where}"


def build_recall(
    question: str, hits: Sequence[MemoryHit], budget_tokens: int, *, min_score: float
) -> Recall | None:
    """Number the hits (best first) that score at least ``min_score`` and fit the budget.
    A document chunk the question already contains (a dropped document is sent whole) is
    left out. None when nothing fits."""
    used = estimate_tokens(HEADER + FOOTER)
    entries: list[str] = []
    citations: list[Citation] = []
    for hit in sorted(hits, key=lambda h: h.score, reverse=True):
        if hit.score < min_score:
            break
        if hit.origin == "document" and hit.text[:300] in question:
            continue
        head = f"[{len(entries) + 1}] {label(hit)}\n"
        room = budget_tokens - used - estimate_tokens(head) - 1  # 1: the blank line between
        if room < MIN_ENTRY_TOKENS:
            break
        body = _clip(hit.text, room * CHARS_PER_TOKEN)
        entries.append(head + body)
        used += estimate_tokens(head + body) + 1
        citations.append(
            Citation(
                n=len(entries),
                origin=hit.origin,
                id=hit.id,
                source=hit.source,
                proto=hit.proto,
                heading=hit.heading,
                score=round(hit.score, 4),
                excerpt=_clip(" ".join(hit.text.split()), EXCERPT_CHARS),
            )
        )
    if not entries:
        return None
    prompt = HEADER + "\n\n".join(entries) + FOOTER + question
    return Recall(prompt=prompt, citations=citations, tokens=used)


def _clip(text: str, chars: int) -> str:
    if len(text) <= chars:
        return text
    cut = text[: max(0, chars - 3)]
    space = cut.rfind(" ")
    if space > chars // 2:
        cut = cut[:space]
    return cut + "..."
