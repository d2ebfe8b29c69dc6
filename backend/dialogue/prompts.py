"""The default prompts of the Contrapunto's turns (a persona's ``dialogue_prompt`` method,
defined live, replaces them), and the transcript they quote."""

from __future__ import annotations

from typing import Any

TURNS_KEPT = 8  # the transcript in the graph state is a window, so checkpoints stay small
QUOTE_CHARS = 700


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def add_turn(
    turns: list[dict[str, Any]], speaker: str, text: str, rnd: int
) -> list[dict[str, Any]]:
    """The transcript window with one more turn (a new list: graph state is replaced)."""
    return [*turns, {"speaker": speaker, "round": rnd, "text": clip(text, 2000)}][-TURNS_KEPT:]


def transcript(turns: list[dict[str, Any]], last: int = 4) -> str:
    lines = [f"{t['speaker']}: {clip(str(t['text']))}" for t in turns[-last:]]
    return "\n".join(lines) if lines else "(nobody has spoken yet)"


def _header(ctx: dict[str, Any]) -> str:
    return f"Goal: {ctx['goal']}\nRound {ctx['round']} of {ctx['max_rounds']}.\n"


def logic(ctx: dict[str, Any]) -> str:
    """BRICK's turn: logical analysis."""
    research = f"Research so far: {clip(ctx['research'])}\n" if ctx.get("research") else ""
    return (
        f"{_header(ctx)}{research}Dialogue so far:\n{transcript(ctx['turns'])}\n\n"
        "Give your logical analysis of the goal in at most four sentences: premises, "
        "inference, conclusion. If you need facts you do not have, add one line "
        "'RESEARCH: <question>'."
    )


def empathy(ctx: dict[str, Any]) -> str:
    """ROBIN's turn: empathic synthesis of BRICK's analysis."""
    return (
        f"{_header(ctx)}{ctx['other']} argued: {clip(ctx['other_view'])}\n"
        f"Dialogue so far:\n{transcript(ctx['turns'])}\n\n"
        "Answer with an empathic synthesis in at most four sentences: what matters to the "
        "people involved, where you agree and where you disagree. If you need facts, add "
        "one line 'RESEARCH: <question>'."
    )


def research(ctx: dict[str, Any]) -> str:
    """BABS's turn: facts for a question, from what the team's memory found."""
    found = "\n".join(f"- {clip(f, 300)}" for f in ctx["facts"]) or "- (nothing found)"
    return (
        f"Goal: {ctx['goal']}\nQuestion: {ctx['question']}\nWhat memory found:\n{found}\n\n"
        "Answer the question with facts only, in at most three sentences. Say plainly what "
        "is not known."
    )


def judge(ctx: dict[str, Any]) -> str:
    """ALFRED's turn: a scored judgement in a fixed format."""
    return (
        f"{_header(ctx)}{ctx['logic']}'s view: {clip(ctx['logic_view'])}\n"
        f"{ctx['empathy']}'s view: {clip(ctx['empathy_view'])}\n\n"
        "Judge whether the two views converge. Answer in JSON: convergence and dissonance "
        "(0-10 each), research (a question for BABS, or an empty string), amend (null, or "
        "only with evidence an object with proto, field (role, system_prompt, "
        "core_principles or description) and text: the new text), and reason (one sentence)."
    )
