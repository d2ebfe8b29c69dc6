"""Pairwise judging: which of two answers is better, from the verdict token's probabilities.

The judge model is shown the question and both answers, in both presentation orders, with
its reply opened as "The better answer is". Nothing is sampled: one forward pass per order,
and the next-token probabilities of "A" and "B" (``GenerationParams.choices``). Summed over
the two orders they decide, so a model that favours whichever answer comes first cancels out;
it is a tie only when the margin is below ``TIE_MARGIN``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Literal

from backend.llm.base import ChatMessage, GenerationParams
from shared_api.errors import ModelOutputError
from shared_api.learning import JudgeOrder, PairwiseVerdict

if TYPE_CHECKING:
    from backend.llm.manager import ModelManager

#: Below this margin (|p(a) - p(b)| over both orders, 0..1) a pairwise verdict is a tie.
TIE_MARGIN = 0.1
CLIP = 1500
#: The reply is opened for the judge, so the very next token is its verdict. (Measured with
#: Qwen2.5-Coder-1.5B: asked to "reply with one letter", its first token leaned to whichever
#: answer came first and got 3 of 6 clear pairs wrong; with this opening, 6 of 6 right.)
VERDICT_OPENING = "The better answer is"


def _clip(text: str, limit: int = CLIP) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def pairwise_prompt(question: str, first: str, second: str, criteria: list[str]) -> str:
    judged_by = "".join(f"\n- {c}" for c in criteria)
    return (
        f"Question: {_clip(question)}\n\nAnswer A: {_clip(first)}\n\nAnswer B: {_clip(second)}"
        "\n\nOne of the two answers is wrong or worse."
        + (f" Judge them by:{judged_by}\n" if criteria else " ")
        + "Which answer is better, A or B?"
    )


def _normalised(logprobs: dict[str, float]) -> tuple[float, float, float]:
    """(p(A), p(B)) normalised over the two letters, and the mass they held together."""
    pa, pb = math.exp(logprobs.get("A", -math.inf)), math.exp(logprobs.get("B", -math.inf))
    total = pa + pb
    if total <= 0:
        raise ModelOutputError(
            "The judge gave neither A nor B any probability; it cannot compare these answers."
        )
    return pa / total, pb / total, min(1.0, total)


def decide(
    ab: dict[str, float], ba: dict[str, float], threshold: float = TIE_MARGIN
) -> tuple[Literal["a", "b", "tie"], float, float, list[JudgeOrder]]:
    """From the letters' log-probabilities with answer_a shown first (``ab``) and second
    (``ba``): the winner, the margin, p(a) over both orders and each order's probabilities."""
    a1, b1, mass1 = _normalised(ab)  # A = answer_a
    a2, b2, mass2 = _normalised(ba)  # A = answer_b
    p_a = (a1 + b2) / 2  # answer_a picked, summed over both orders (normalised by 2)
    margin = abs(2 * p_a - 1)
    winner: Literal["a", "b", "tie"] = "tie" if margin < threshold else "a" if p_a > 0.5 else "b"
    orders = [
        JudgeOrder(order="ab", p_a=round(a1, 4), p_b=round(b1, 4), mass=round(mass1, 4)),
        JudgeOrder(order="ba", p_a=round(b2, 4), p_b=round(a2, 4), mass=round(mass2, 4)),
    ]
    return winner, round(margin, 4), round(p_a, 4), orders


def pairwise_verdict(
    manager: ModelManager,
    backend: str,
    model: str,
    question: str,
    answer_a: str,
    answer_b: str,
    criteria: list[str],
    *,
    caller: str = "judge",
    judge: str = "",
    tie_margin: float = TIE_MARGIN,
) -> PairwiseVerdict:
    """Judge ``answer_a`` against ``answer_b`` in both orders through ``manager``."""
    started = time.perf_counter()
    logprobs = []
    for first, second in ((answer_a, answer_b), (answer_b, answer_a)):
        completion = manager.generate(
            backend=backend,
            model=model,
            messages=[ChatMessage("user", pairwise_prompt(question, first, second, criteria))],
            params=GenerationParams(max_tokens=1, choices=("A", "B"), prefill=VERDICT_OPENING),
            caller=caller,
        )
        logprobs.append(completion.choice_logprobs)
    winner, margin, p_a, orders = decide(logprobs[0], logprobs[1], tie_margin)
    return PairwiseVerdict(
        winner=winner,
        margin=margin,
        threshold=tie_margin,
        p_a=p_a,
        orders=orders,
        judge=judge or caller,
        backend=backend,
        model=model,
        seconds=round(time.perf_counter() - started, 3),
    )
