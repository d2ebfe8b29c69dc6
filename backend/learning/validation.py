"""Candidate vs current model on held-out examples, judged blind A/B.

Both models answer every held-out prompt (the persona's system prompt, greedy), all of one
model's answers first so each model loads once. The judge then sees each pair in both
orders, never told which is which, and decides from the verdict probabilities summed over
the two orders (position bias cancels out): a win when it prefers the candidate by more than
its tie margin, a loss likewise; anything else is a tie. The one-sided
sign test on wins vs losses gives the p-value; adoption needs p <= alpha.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from backend.learning.judge import Judge, persona_criteria
from backend.llm.base import ChatMessage, GenerationParams
from backend.protos import Proto
from shared_api.learning import GoldenExample, PairVerdict, ValidationReport
from shared_api.replies import ModelSelection

if TYPE_CHECKING:
    from backend.llm.service import PersonaLLM


def sign_test(wins: int, losses: int) -> float:
    """P(at least ``wins`` successes in ``wins + losses`` fair coin flips)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return float(sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n)


def answer_all(
    llm: PersonaLLM, proto: Proto, selection: ModelSelection, prompts: list[str], max_tokens: int
) -> list[str]:
    """The answers of ``selection`` to ``prompts`` as ``proto`` (not recorded in history)."""
    answers = []
    for prompt in prompts:
        completion = llm.manager.generate(
            backend=selection.backend,
            model=selection.model,
            messages=[ChatMessage("user", prompt)],
            system=proto.codex.system_prompt,
            params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
            caller=proto.name,
        )
        answers.append(completion.text.strip())
    return answers


def judge_pairs(
    judge: Judge, proto: Proto, prompts: list[str], candidate: list[str], current: list[str]
) -> list[PairVerdict]:
    """One pairwise judgement per prompt (the judge asks both orders itself and decides from
    the verdict probabilities summed over them): candidate better is a win, worse a loss."""
    pairs = []
    criteria = persona_criteria(proto.codex)
    for prompt, new, old in zip(prompts, candidate, current, strict=True):
        verdict = judge.pairwise(prompt, new, old, criteria)  # candidate is answer_a
        verdicts = [
            "candidate" if order.p_a > order.p_b else "current" if order.p_b > order.p_a else "tie"
            for order in verdict.orders
        ]
        outcome = {"a": "win", "b": "loss", "tie": "tie"}[verdict.winner]
        pairs.append(
            PairVerdict.model_validate(
                {
                    "prompt": prompt,
                    "candidate": new,
                    "current": old,
                    "verdicts": verdicts,
                    "outcome": outcome,
                    "judgement": verdict.model_dump(),
                }
            )
        )
    return pairs


def validate(
    llm: PersonaLLM,
    judge: Judge,
    proto: Proto,
    candidate: ModelSelection,
    current: ModelSelection,
    holdout: list[GoldenExample],
    *,
    max_tokens: int = 96,
    alpha: float = 0.05,
) -> ValidationReport:
    started = time.perf_counter()
    prompts = [g.prompt for g in holdout]
    new = answer_all(llm, proto, candidate, prompts, max_tokens)
    old = answer_all(llm, proto, current, prompts, max_tokens)
    pairs = judge_pairs(judge, proto, prompts, new, old)
    wins = sum(p.outcome == "win" for p in pairs)
    losses = sum(p.outcome == "loss" for p in pairs)
    p_value = sign_test(wins, losses)
    return ValidationReport(
        proto=proto.name,
        candidate=f"{candidate.backend}:{candidate.model}",
        current=f"{current.backend}:{current.model}",
        wins=wins,
        losses=losses,
        ties=len(pairs) - wins - losses,
        p_value=round(p_value, 6),
        alpha=alpha,
        significant=wins > losses and p_value <= alpha,
        judge=judge.name,
        pairs=pairs,
        seconds=round(time.perf_counter() - started, 3),
    )
