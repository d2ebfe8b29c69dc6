"""The curator: judges recorded interactions, promotes the best to golden examples, and
tells the motivator what it sees.

A pass reads each persona's history for interactions that have no score yet, has the judge
score them (a journaled ``learning_scores`` op per persona), and turns those at or above
``golden_threshold`` into golden ChatML examples (``learning_golden_put``). Then the hooks:
several low scores among the latest judged interactions publish ``curiosity_deficit``;
enough new golden examples publish ``finetune_proposed`` (the body of the ``start_finetune``
that would use them, for the user or the motivator's goal queue to approve).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.learning import image_ops
from backend.learning.config import LearningConfig
from backend.learning.judge import Judge, failed_score
from backend.protos import Proto
from shared_api.events import CuriosityDeficit, FinetuneProposed, InteractionsScored
from shared_api.learning import ChatTurn, GoldenExample, JudgeScore

if TYPE_CHECKING:
    from backend.runtime import Runtime

log = logging.getLogger(__name__)

JUDGEABLE = ("stop", "length")


@dataclass
class PassResult:
    scored: list[JudgeScore] = field(default_factory=list)
    promoted: list[str] = field(default_factory=list)
    deficits: list[str] = field(default_factory=list)
    proposals: list[str] = field(default_factory=list)


def golden_from(proto: Proto, interaction: dict[str, Any], score: JudgeScore) -> GoldenExample:
    now = time.time()
    return GoldenExample(
        id=f"g-{interaction['id']}"[:64],
        proto=proto.name,
        messages=[
            ChatTurn(role="system", content=proto.codex.system_prompt),
            ChatTurn(role="user", content=str(interaction.get("prompt", ""))),
            ChatTurn(role="assistant", content=str(interaction.get("reply", ""))),
        ],
        source="curator",
        interaction_id=str(interaction["id"]),
        score=score.overall,
        created=now,
        updated=now,
    )


def unscored(proto: Proto, limit: int) -> list[dict[str, Any]]:
    """The oldest interactions of ``proto`` that have no score yet and can be judged."""
    scores = proto.learning.get("scores", {})
    todo = []
    for interaction in list(proto.history):
        previous = scores.get(interaction.get("id"))
        failed = isinstance(previous, dict) and previous.get("error")
        fresh = interaction.get("id") and (interaction["id"] not in scores or failed)
        if (
            fresh
            and interaction.get("stop_reason") in JUDGEABLE
            and str(interaction.get("reply", "")).strip()
        ):
            todo.append(interaction)
            if len(todo) >= limit:
                break
    return todo


class Curator:
    def __init__(self, runtime: Runtime, judge: Judge, config: LearningConfig) -> None:
        self.runtime = runtime
        self.judge = judge
        self.config = config
        self.bus = runtime.bus
        self._deficit_seen: dict[str, tuple[str, ...]] = {}
        self._proposed: dict[str, int] = {}

    def run_pass(self, only: str | None = None, limit: int | None = None) -> PassResult:
        result = PassResult()
        names = [only] if only else self.runtime.manager.names()
        for name in names:
            proto = self.runtime.manager.get(name)
            self._curate(proto, limit or self.config.curator_batch, result)
            if self._deficit(proto):
                result.deficits.append(name)
            if self._propose(proto):
                result.proposals.append(name)
        return result

    def _curate(self, proto: Proto, limit: int, result: PassResult) -> None:
        todo = unscored(proto, limit)
        if not todo:
            return
        scores = []
        for interaction in todo:
            try:
                score = self.judge.score(
                    proto.codex, str(interaction.get("prompt", "")), str(interaction["reply"]),
                    str(interaction["id"]),
                )  # fmt: skip
            except Exception as exc:  # recorded as a failed judgement; the next pass retries it
                log.warning("judging %s of %s failed: %s", interaction["id"], proto.name, exc)
                score = failed_score(proto.name, str(interaction["id"]), self.judge.name, exc)
            scores.append(score)
        if not scores:
            return
        self.runtime.commit(
            {
                "op": "learning_scores",
                "proto": proto.name,
                "scores": [s.model_dump(mode="json") for s in scores],
            }
        )
        golden = proto.learning.get("golden", {})
        promoted = []
        by_id = {str(i["id"]): i for i in todo}
        for score in scores:
            if score.error is not None or score.overall is None:
                continue
            if score.overall < self.config.golden_threshold:
                continue
            example = golden_from(proto, by_id[score.interaction_id], score)
            if example.id in golden:
                continue
            self.runtime.commit(
                {
                    "op": "learning_golden_put",
                    "proto": proto.name,
                    "example": example.model_dump(mode="json"),
                }
            )
            promoted.append(example.id)
        result.scored += scores
        result.promoted += promoted
        self.bus.publish(InteractionsScored(proto=proto.name, scores=scores, promoted=promoted))

    # -- motivator hooks -----------------------------------------------------------------------
    def _deficit(self, proto: Proto) -> bool:
        """Publish ``curiosity_deficit`` when the latest judged interactions score low."""
        judged = sorted(
            (
                s
                for s in image_ops.scores_of(proto).values()
                if s.overall is not None and s.error is None
            ),
            key=lambda s: s.ts,
        )[-self.config.deficit_window :]
        low = [s for s in judged if (s.overall or 0.0) < self.config.low_score]
        if len(low) < self.config.deficit_count:
            return False
        key = tuple(s.interaction_id for s in low)
        if self._deficit_seen.get(proto.name) == key:
            return False  # already told about these
        self._deficit_seen[proto.name] = key
        prompts = {str(i.get("id")): str(i.get("prompt", ""))[:200] for i in proto.history}
        self.bus.publish(
            CuriosityDeficit(
                proto=proto.name,
                score=round(len(low) / max(1, len(judged)), 4),
                gaps=[prompts.get(s.interaction_id, s.interaction_id) for s in low][:10],
                detail={
                    "source": "judge",
                    "judge": self.judge.name,
                    "low_score": self.config.low_score,
                    "scores": {s.interaction_id: s.overall for s in low},
                    "weakest": _weakest(low),
                },
            )
        )
        return True

    def _propose(self, proto: Proto) -> bool:
        """Publish ``finetune_proposed`` once enough golden examples are new since the last
        fine-tune (the newest candidate's example count)."""
        active = [g for g in image_ops.golden_of(proto) if not g.excluded]
        models = list(image_ops.candidates_of(proto).values())
        current = image_ops.model_of(proto)
        if current is not None:
            models.append(current)
        trained_on = max((m.examples for m in models), default=0)
        new = len(active) - trained_on
        if new < self.config.propose_finetune_at or self._proposed.get(proto.name) == len(active):
            return False
        self._proposed[proto.name] = len(active)
        self.bus.publish(
            FinetuneProposed(
                proto=proto.name,
                golden=len(active),
                new_examples=new,
                reason=f"{new} new golden examples since the last fine-tune of {proto.name}",
                body={"proto": proto.name},
            )
        )
        return True


def _weakest(scores: list[JudgeScore]) -> str:
    """The criterion with the lowest mean among ``scores``."""
    totals: dict[str, list[float]] = {}
    for score in scores:
        for name, value in score.scores.items():
            totals.setdefault(name, []).append(value)
    if not totals:
        return ""
    return min(totals, key=lambda k: sum(totals[k]) / len(totals[k]))
