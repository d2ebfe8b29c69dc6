"""ALFRED's judgement of a round: his scored answer plus explicit, measurable criteria.

ALFRED answers under a JSON schema (``AlfredVerdict``): convergence and dissonance (0-10), a
research question ("" for none) and an optional codex amendment. His scores are one criterion
among several computed from the two views themselves; every criterion, its weight and the
combined scores are kept in the judgement for the debugger to show. A verdict that could not
be produced leaves his criteria out and says why (``alfred_error``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel

from backend.codex import AMENDABLE_FIELDS

#: criterion -> weight in the dissonance score (a criterion that is unknown is left out).
DISSONANCE_WEIGHTS = {
    "alfred_dissonance": 0.5,
    "divergence": 0.15,
    "conflict": 0.25,
    "stagnation": 0.1,
}
#: criterion -> weight in the convergence score.
CONVERGENCE_WEIGHTS = {"alfred_convergence": 0.5, "overlap": 0.2, "agreement": 0.3}

CONTRADICTION = re.compile(
    r"\b(disagree\w*|not true|wrong|incorrect|on the contrary|contradict\w*|refuse\w*|"
    r"cannot accept|reject\w*|no,|nonsense|mistaken|however)\b",
    re.IGNORECASE,
)
AGREEMENT = re.compile(
    r"\b(agree[sd]?|agreement|consensus|common ground|you are right|you're right|"
    r"both right|concede\w*|aligned|we share|same conclusion)\b",
    re.IGNORECASE,
)
_NEGATED_AGREEMENT = re.compile(r"\b(not|don't|do not|never|dis)\s*agree", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z']{3,}")
_STOP_WORDS = (
    "that this with from have what which their there about would could should these those "
    "they them then than into your very more most also been being were will just like "
    "some such only other over each when where while because does doing"
)
_STOP = frozenset(_STOP_WORDS.split())
_RESEARCH = re.compile(r"^\W*research\W*[:=]\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_NONE = frozenset({"none", "no", "n/a", "na", "nothing", "-", "nil", "null"})


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def jaccard(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


Eleven = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
Field_ = Literal["role", "system_prompt", "core_principles", "description"]
#: The codex fields an amendment may name (the same as ``backend.codex.AMENDABLE_FIELDS``).
AMEND_FIELDS: tuple[str, ...] = AMENDABLE_FIELDS


def _clipped(limit: int) -> AfterValidator:
    return AfterValidator(lambda text: str(text).strip()[:limit])


class Amendment(BaseModel):
    proto: Annotated[str, _clipped(64)]
    field: Field_
    text: Annotated[str, _clipped(2000)]


class AlfredVerdict(BaseModel):
    """The schema ALFRED's judgement of a round is generated under."""

    convergence: Eleven
    dissonance: Eleven
    #: A question for BABS, or "" for none.
    research: Annotated[str, _clipped(500)]
    #: A codex amendment he proposes (only with evidence), or null.
    amend: Amendment | None
    reason: Annotated[str, _clipped(500)]


def parse_research(text: str) -> str:
    """The question of a ``RESEARCH: ...`` line, or "" (none asked)."""
    match = _RESEARCH.search(text)
    if match is None:
        return ""
    question = match.group(1).strip().strip("*").strip()
    return "" if question.lower().rstrip(".") in _NONE else question[:500]


def alfred_said(verdict: AlfredVerdict | None) -> dict[str, Any]:
    """ALFRED's scores (0..1), research question, amendment and reason, as plain data."""
    if verdict is None:
        return {"convergence": None, "dissonance": None, "research": "", "amend": None,
                "reason": ""}  # fmt: skip
    research = verdict.research.strip()
    amend = None
    if verdict.amend is not None and verdict.amend.text.lower().rstrip(".") not in _NONE:
        name = verdict.amend.proto.strip()
        amend = {
            "proto": name.upper() if name.isalpha() else name,
            "field": verdict.amend.field,
            "text": verdict.amend.text,
        }
    return {
        "convergence": verdict.convergence / 10,
        "dissonance": verdict.dissonance / 10,
        # a research request is a question; a statement in that field asks BABS nothing
        "research": research
        if "?" in research and research.lower().rstrip(".?") not in _NONE
        else "",
        "amend": amend,
        "reason": verdict.reason,
    }


def _stance(text: str) -> tuple[int, int]:
    """(contradiction markers, agreement markers) in ``text``; "disagree" is not agreement."""
    negated = len(_NEGATED_AGREEMENT.findall(text))
    return len(CONTRADICTION.findall(text)), max(0, len(AGREEMENT.findall(text)) - negated)


def _weighted(criteria: dict[str, float | None], weights: dict[str, float]) -> float:
    known = {k: w for k, w in weights.items() if criteria.get(k) is not None}
    total = sum(known.values())
    score = sum((criteria[k] or 0.0) * w for k, w in known.items()) / total if total else 0.0
    return round(max(0.0, min(1.0, score)), 4)


def judge(
    logic_view: str,
    empathy_view: str,
    alfred: AlfredVerdict | None,
    previous_views: str = "",
    *,
    dissonance_threshold: float = 0.6,
    convergence_threshold: float = 0.7,
    alfred_error: str = "",
) -> dict[str, Any]:
    """The judgement of one round as plain data (it goes into the graph state)."""
    said = alfred_said(alfred)
    contradictions, agreements = _stance(f"{logic_view}\n{empathy_view}")
    agreement = min(1.0, agreements / 2)
    contradiction = min(1.0, contradictions / 2)
    overlap = jaccard(logic_view, empathy_view)
    current = f"{logic_view}\n{empathy_view}"
    criteria: dict[str, float | None] = {
        "alfred_convergence": said["convergence"],
        "alfred_dissonance": said["dissonance"],
        "overlap": round(overlap, 4),
        "divergence": round(1.0 - overlap, 4),
        "agreement": round(agreement, 4),
        "conflict": round(max(0.0, min(1.0, 0.5 + 0.5 * contradiction - 0.5 * agreement)), 4),
        "stagnation": round(jaccard(current, previous_views), 4) if previous_views else None,
    }
    dissonance = _weighted(criteria, DISSONANCE_WEIGHTS)
    convergence = _weighted(criteria, CONVERGENCE_WEIGHTS)
    if convergence >= convergence_threshold and dissonance < dissonance_threshold:
        verdict = "converged"
    elif dissonance >= dissonance_threshold:
        verdict = "dissonant"
    else:
        verdict = "open"
    return {
        "verdict": verdict,
        "dissonance": dissonance,
        "convergence": convergence,
        "criteria": criteria,
        "weights": {"dissonance": DISSONANCE_WEIGHTS, "convergence": CONVERGENCE_WEIGHTS},
        "thresholds": {"dissonance": dissonance_threshold, "convergence": convergence_threshold},
        "reason": said["reason"],
        "research": said["research"],
        "amend": said["amend"],
        "alfred_parsed": alfred is not None,
        "alfred_error": alfred_error,
    }
