"""ScriptedJudge: a TEST DOUBLE for ALFRED's judgement (``backend.learning.judge.Judge``).

A 135M judge is close to random, so tests that need a verdict they can predict use this
double: it scores an interaction with ``score_of(prompt, reply)`` (every criterion alike) and,
comparing two answers, prefers the one ``prefer`` rates higher (a tie when equal), the same in
both orders. It records what it was asked (``compared``: one entry per order shown). Tests of the real judge use the embedded model and assert robust facts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from backend.codex import Codex
from shared_api.learning import CRITERIA, JudgeOrder, JudgeScore, PairwiseVerdict


class ScriptedJudge:
    def __init__(
        self,
        score_of: Callable[[str, str], float] = lambda _p, _r: 0.8,
        prefer: Callable[[str], float] = lambda _a: 0.0,
    ) -> None:
        self.score_of = score_of
        self.prefer = prefer
        self.scored: list[tuple[str, str]] = []
        self.compared: list[tuple[str, str, str]] = []
        #: Called at each comparison (tests check what holds while validation runs).
        self.on_compare: Callable[[], None] = lambda: None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "scripted-judge (test double)"

    def score(self, codex: Codex, prompt: str, reply: str, interaction_id: str = "") -> JudgeScore:
        with self._lock:
            self.scored.append((prompt, reply))
        value = self.score_of(prompt, reply)
        return JudgeScore(
            interaction_id=interaction_id,
            proto=codex.name,
            scores=dict.fromkeys(CRITERIA, value),
            overall=value,
            judge=self.name,
            raw=f"scripted {value}",
            ts=time.time(),
        )

    def pairwise(
        self, question: str, answer_a: str, answer_b: str, criteria: list[str] | None = None
    ) -> PairwiseVerdict:
        with self._lock:
            self.compared.append((question, answer_a, answer_b))
            self.compared.append((question, answer_b, answer_a))
        self.on_compare()
        a, b = self.prefer(answer_a), self.prefer(answer_b)
        p_a = 1.0 if a > b else 0.0 if b > a else 0.5
        winner = "a" if a > b else "b" if b > a else "tie"
        return PairwiseVerdict(
            winner=winner,
            margin=abs(2 * p_a - 1),
            threshold=0.1,
            p_a=p_a,
            orders=[
                JudgeOrder(order="ab", p_a=p_a, p_b=1 - p_a),
                JudgeOrder(order="ba", p_a=p_a, p_b=1 - p_a),
            ],
            judge=self.name,
        )
