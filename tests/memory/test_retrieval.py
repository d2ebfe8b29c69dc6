"""Memories into prompts: numbered, best first, within the token budget, with sources."""

from __future__ import annotations

from backend.memory.retrieval import (
    HEADER,
    build_recall,
    context_budget,
    estimate_tokens,
)
from shared_api.replies import MemoryHit


def hit(score: float, text: str, origin: str = "document", **kw: str) -> MemoryHit:
    return MemoryHit(
        origin=origin,  # type: ignore[arg-type]
        id=kw.get("id", f"id-{score}"),
        score=score,
        source=kw.get("source", "/docs/notes.md"),
        name=kw.get("name", "notes.md"),
        proto=kw.get("proto", "BRICK"),
        heading=kw.get("heading", "Setup"),
        text=text,
        ts=1_700_000_000.0,
    )


def test_hits_are_numbered_best_first_with_their_sources() -> None:
    hits = [hit(0.5, "Second fact."), hit(0.9, "First fact.", heading="Intro"),
            hit(0.7, "Talked about cats.", origin="conversation", proto="ROBIN",
                source="conversation with ROBIN")]  # fmt: skip
    recall = build_recall("What do you know?", hits, 400, min_score=0.3)
    assert recall is not None
    assert recall.prompt.startswith(HEADER) and recall.prompt.endswith("What do you know?")
    assert "[1] notes.md, Intro\nFirst fact." in recall.prompt
    assert (
        "[2] conversation with ROBIN, " in recall.prompt and "[3] notes.md, Setup" in recall.prompt
    )
    assert [(c.n, c.score) for c in recall.citations] == [(1, 0.9), (2, 0.7), (3, 0.5)]
    assert recall.citations[1].origin == "conversation" and recall.citations[1].proto == "ROBIN"


def test_low_scores_and_the_question_itself_are_left_out() -> None:
    document = "Chapter one. The whole document was pasted into the question."
    hits = [hit(0.95, document), hit(0.2, "Barely related.")]
    assert build_recall(f"Document: x\n\n{document}", hits, 400, min_score=0.3) is None


def test_the_budget_is_respected_and_long_memories_clipped() -> None:
    hits = [hit(0.9 - i / 100, "word " * 400, id=str(i)) for i in range(5)]
    recall = build_recall("Q?", hits, 150, min_score=0.0)
    assert recall is not None and recall.tokens <= 150
    assert estimate_tokens(recall.prompt) <= 150 + estimate_tokens("Q?") + 5
    assert recall.citations[0].excerpt.endswith("...") and len(recall.citations) <= 2


def test_the_context_window_limits_the_budget() -> None:
    assert (
        context_budget(400, n_ctx=2048, system="s" * 400, question="q" * 400, max_tokens=256) == 400
    )
    squeezed = context_budget(400, n_ctx=2048, system="", question="q" * 6000, max_tokens=256)
    assert squeezed == 2048 - 1500 - 256 - 64
    assert context_budget(400, n_ctx=1024, system="", question="q" * 8000, max_tokens=256) == 0
