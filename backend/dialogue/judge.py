"""ALFRED's judgement of a round: his scored answer plus explicit, measurable criteria.

ALFRED is asked for ``CONVERGENCE``, ``DISSONANCE`` (0-10), an optional ``RESEARCH`` question
and an optional ``AMEND`` proposal. Small models often ignore the format, so his scores are
one criterion among several computed from the two views themselves; every criterion, its
weight and the combined scores are kept in the judgement for the debugger to show.
"""

from __future__ import annotations

import re
from typing import Any

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
_SCORE = r"[:=\-]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(10|100|1))?"
_FIELDS = "|".join(AMENDABLE_FIELDS)
_AMEND = re.compile(
    rf"^\W*amend\w*\W*[:=]\s*([A-Za-z][A-Za-z0-9_\-]*)\s*\.?\s*({_FIELDS})\s*[:=]\s*(.+)$",
    re.IGNORECASE | re.MULTILINE,
)
_RESEARCH = re.compile(r"^\W*research\W*[:=]\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_REASON = re.compile(r"^\W*reason\W*[:=]\s*(.+)$", re.IGNORECASE | re.MULTILINE)
_NONE = frozenset({"none", "no", "n/a", "na", "nothing", "-", "nil", "null"})


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def jaccard(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


def _scaled(match: re.Match[str] | None) -> float | None:
    if match is None:
        return None
    number = match.group(1)
    value = float(number)
    if match.group(2):
        scale = float(match.group(2))
    else:  # asked for 0-10; "0.8" is a fraction
        scale = 1.0 if "." in number and value <= 1 else 10.0
    return max(0.0, min(1.0, value / scale))


def parse_research(text: str) -> str:
    """The question of a ``RESEARCH: ...`` line, or "" (none asked)."""
    match = _RESEARCH.search(text)
    if match is None:
        return ""
    question = match.group(1).strip().strip("*").strip()
    return "" if question.lower().rstrip(".") in _NONE else question[:500]


def parse_alfred(text: str) -> dict[str, Any]:
    """ALFRED's own scores, research question, amendment proposal and reason, as given."""
    amend = None
    match = _AMEND.search(text)
    if match and match.group(3).strip().lower().rstrip(".") not in _NONE:
        amend = {
            "proto": match.group(1).upper() if match.group(1).isalpha() else match.group(1),
            "field": match.group(2).lower(),
            "text": match.group(3).strip()[:2000],
        }
    reason = _REASON.search(text)
    return {
        "convergence": _scaled(re.search(r"converg\w*\W*" + _SCORE, text, re.IGNORECASE)),
        "dissonance": _scaled(re.search(r"disson\w*\W*" + _SCORE, text, re.IGNORECASE)),
        "research": parse_research(text),
        "amend": amend,
        "reason": reason.group(1).strip()[:500] if reason else "",
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
    alfred_text: str,
    previous_views: str = "",
    *,
    dissonance_threshold: float = 0.6,
    convergence_threshold: float = 0.7,
) -> dict[str, Any]:
    """The judgement of one round as plain data (it goes into the graph state)."""
    said = parse_alfred(alfred_text)
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
        "alfred_parsed": said["convergence"] is not None or said["dissonance"] is not None,
    }
