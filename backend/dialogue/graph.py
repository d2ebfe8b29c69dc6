"""The Socratic Contrapunto as a LangGraph ``StateGraph``.

BRICK (logical analysis) and ROBIN (empathic synthesis) alternate on a goal; BABS researches
when a turn asks for facts (``RESEARCH: ...``); ALFRED, the supervisor, judges every round
(``judge.judge``) and routes: converged or out of rounds ends the dialogue, dissonance for
``impasse_rounds`` rounds in a row leads to ``impasse`` (the runner pauses before it and the
Live Debugger opens), a codex amendment leads to ``amend``, which interrupts for the user.

The state holds ids, text and scores only. Live objects stay outside it, in ``Personas``:
each turn looks its persona up in the live ``ProtoManager`` and calls ``invoke_llm``, so a
method or state edited while the dialogue is paused is in effect when it resumes.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt

from backend.codex import codex_field_text
from backend.config import DialogueConfig
from backend.dialogue import prompts
from backend.dialogue.cast import Personas, record
from backend.dialogue.judge import AlfredVerdict, judge, parse_research
from backend.llm import structured
from backend.llm.base import Completion
from backend.llm.pairwise import pairwise_verdict
from backend.llm.roles import role_selection
from backend.protos import Proto
from shared_api.errors import EntropicError, ModelOutputError, NotFoundError

VERDICT_SCHEMA = structured.schema_of(AlfredVerdict)
#: ALFRED's verdict's token budget: two scores, a question, an amendment and a reason.
VERDICT_TOKENS = 256
VIEW_CRITERIA = ("it addresses the goal soundly", "it is honest about what matters")


def _read_verdict(text: str, stop_reason: str) -> tuple[AlfredVerdict | None, str]:
    """ALFRED's verdict, or (None, why not)."""
    try:
        return structured.parse(AlfredVerdict, Completion(text, stop_reason)), ""  # type: ignore[arg-type]
    except ModelOutputError as exc:
        return None, exc.message


class ContrapuntoState(TypedDict, total=False):
    dialogue_id: str
    goal: str
    #: role -> persona name (logic, empathy, judge, research).
    personas: dict[str, str]
    max_rounds: int
    impasse_rounds: int
    dissonance_threshold: float
    convergence_threshold: float
    #: Rounds ALFRED has judged.
    round: int
    #: The last few turns (``prompts.TURNS_KEPT``): speaker, round, text.
    turns: list[dict[str, Any]]
    brick_view: str
    robin_view: str
    previous_views: str
    research_question: str
    research: str
    research_round: int
    #: Where BABS hands back to: robin, alfred or brick.
    research_return: str
    judgement: dict[str, Any]
    dissonance: float
    convergence: float
    #: Dissonant rounds in a row.
    dissonance_streak: int
    #: running, converged or unresolved.
    status: str
    outcome: str
    #: ALFRED's pending codex amendment proposal ({} when none).
    amendment: dict[str, Any]
    #: Keys of proposals already decided, so none is proposed twice.
    amendments: list[str]
    #: The record of the node that ran last: what the debugger shows for its step.
    last: dict[str, Any]
    #: Node runs (and edits) on this branch so far: the debugger's step number.
    seq: int


def amendment_key(amend: dict[str, Any]) -> str:
    return f"{amend['proto']}.{amend['field']}={amend['new']}"


# -- routing ------------------------------------------------------------------------------
def after_brick(state: ContrapuntoState) -> str:
    return "babs" if state.get("research_question") else "robin"


def after_robin(state: ContrapuntoState) -> str:
    return "babs" if state.get("research_question") else "alfred"


def after_babs(state: ContrapuntoState) -> str:
    return state.get("research_return") or "robin"


def after_alfred(state: ContrapuntoState) -> str:
    """ALFRED's routing, and the amendment's and impasse's after them."""
    if state.get("amendment"):
        return "amend"
    verdict = (state.get("judgement") or {}).get("verdict")
    if verdict == "converged":
        return END
    if state.get("dissonance_streak", 0) >= state.get("impasse_rounds", 2):
        return "impasse"
    if state.get("round", 0) >= state.get("max_rounds", 1):
        return END
    if state.get("research_question"):
        return "babs"
    return "brick"


def after_impasse(state: ContrapuntoState) -> str:
    return END if state.get("round", 0) >= state.get("max_rounds", 1) else "brick"


def final_status(state: ContrapuntoState) -> str:
    verdict = (state.get("judgement") or {}).get("verdict")
    return "converged" if verdict == "converged" else "unresolved"


# -- nodes --------------------------------------------------------------------------------
def _ctx(state: ContrapuntoState) -> dict[str, Any]:
    return {
        "goal": state.get("goal", ""),
        "round": state.get("round", 0) + 1,
        "max_rounds": state.get("max_rounds", 1),
        "turns": state.get("turns", []),
    }


class Nodes:
    """The node functions, bound to the live ``Personas``."""

    def __init__(self, personas: Personas) -> None:
        self.p = personas

    def _who(self, state: ContrapuntoState, role: str) -> str:
        return state.get("personas", {}).get(role) or getattr(self.p.config, role)

    def _research_request(self, state: ContrapuntoState, text: str, back_to: str) -> dict[str, Any]:
        question = parse_research(text)
        if question and state.get("research_round", -1) != state.get("round", 0):
            return {"research_question": question, "research_return": back_to}
        return {}

    def brick(self, state: ContrapuntoState) -> dict[str, Any]:
        who = self._who(state, "logic")
        ctx = {**_ctx(state), "research": state.get("research", "")}
        rec = self.p.turn("brick", who, "argue", prompts.logic(ctx), ctx)
        return {
            "brick_view": rec["output"],
            "turns": prompts.add_turn(state.get("turns", []), who, rec["output"], ctx["round"]),
            "status": "running",
            "last": rec,
            **self._research_request(state, rec["output"], "robin"),
        }

    def robin(self, state: ContrapuntoState) -> dict[str, Any]:
        who = self._who(state, "empathy")
        ctx = {
            **_ctx(state),
            "other": self._who(state, "logic"),
            "other_view": state.get("brick_view", ""),
        }
        rec = self.p.turn("robin", who, "synthesize", prompts.empathy(ctx), ctx)
        return {
            "robin_view": rec["output"],
            "turns": prompts.add_turn(state.get("turns", []), who, rec["output"], ctx["round"]),
            "last": rec,
            **self._research_request(state, rec["output"], "alfred"),
        }

    def babs(self, state: ContrapuntoState) -> dict[str, Any]:
        who = self._who(state, "research")
        question = state.get("research_question", "")
        ctx = {**_ctx(state), "question": question, "facts": self.p.facts(question)}
        rec = self.p.turn("babs", who, "research", prompts.research(ctx), ctx)
        return {
            "research": rec["output"],
            "research_question": "",
            "research_round": state.get("round", 0),
            "turns": prompts.add_turn(
                state.get("turns", []), f"{who} (research)", rec["output"], ctx["round"]
            ),
            "last": rec,
        }

    def alfred(self, state: ContrapuntoState) -> dict[str, Any]:
        who = self._who(state, "judge")
        ctx = {
            **_ctx(state),
            "logic": self._who(state, "logic"),
            "empathy": self._who(state, "empathy"),
            "logic_view": state.get("brick_view", ""),
            "empathy_view": state.get("robin_view", ""),
        }
        rec = self.p.turn(
            "alfred", who, "judge", prompts.judge(ctx), ctx,
            schema=VERDICT_SCHEMA, max_tokens=max(self.p.config.max_tokens, VERDICT_TOKENS),
        )  # fmt: skip
        said, error = _read_verdict(rec["output"], rec.get("stop_reason", "stop"))
        verdict = judge(
            ctx["logic_view"],
            ctx["empathy_view"],
            said,
            state.get("previous_views", ""),
            dissonance_threshold=state.get("dissonance_threshold", 0.6),
            convergence_threshold=state.get("convergence_threshold", 0.7),
            alfred_error=error,
        )
        verdict["views"] = self._views(who, ctx)
        rec["judgement"] = verdict
        streak = state.get("dissonance_streak", 0) + 1 if verdict["verdict"] == "dissonant" else 0
        updates: dict[str, Any] = {
            "round": ctx["round"],
            "judgement": verdict,
            "dissonance": verdict["dissonance"],
            "convergence": verdict["convergence"],
            "dissonance_streak": streak,
            "previous_views": f"{ctx['logic_view']}\n{ctx['empathy_view']}",
            "last": rec,
            "amendment": self._proposal(state, verdict.get("amend"), verdict["reason"]),
        }
        if verdict["research"] and state.get("research_round", -1) != ctx["round"]:
            updates |= {"research_question": verdict["research"], "research_return": "brick"}
        merged: ContrapuntoState = {**state, **updates}  # type: ignore[typeddict-item]
        if after_alfred(merged) == END:
            updates["status"] = final_status(merged)
            updates["outcome"] = outcome(merged)
        return updates

    def _views(self, who: str, ctx: dict[str, Any]) -> dict[str, Any]:
        """Which view answers the goal better, by the judge command's pairwise verdict (the
        logic view as answer a); {"error": ...} when it could not be judged."""
        if not self.p.config.judge_views or not ctx["logic_view"] or not ctx["empathy_view"]:
            return {}
        llm = Proto.llm
        if llm is None:
            return {}
        selection = role_selection(llm, "judge", self.p.runtime.manager.get(who))
        try:
            v = pairwise_verdict(
                llm.manager, selection.backend, selection.model, ctx["goal"],
                ctx["logic_view"], ctx["empathy_view"], list(VIEW_CRITERIA), caller=who,
            )  # fmt: skip
        except EntropicError as exc:
            return {"error": exc.message}
        winner = {"a": ctx["logic"], "b": ctx["empathy"], "tie": "tie"}[v.winner]
        return {"winner": winner, "margin": v.margin, "p_logic": v.p_a, "model": v.model}

    def _proposal(
        self, state: ContrapuntoState, amend: dict[str, Any] | None, reason: str
    ) -> dict[str, Any]:
        """ALFRED's amendment as a proposal with the old and new text, or {}."""
        if not amend:
            return {}
        try:
            proto = self.p.runtime.manager.get(amend["proto"])
        except NotFoundError:
            return {}
        old = codex_field_text(proto.codex, amend["field"])
        new = f"{old}\n{amend['text']}" if amend["field"] == "core_principles" else amend["text"]
        proposal = {"proto": proto.name, "field": amend["field"], "old": old, "new": new}
        if new == old or amendment_key(proposal) in state.get("amendments", []):
            return {}
        return {**proposal, "reason": reason or "ALFRED's judgement"}

    def amend(self, state: ContrapuntoState) -> dict[str, Any]:
        proposal = dict(state.get("amendment") or {})
        # Everything before interrupt() runs again on resume: keep it free of side effects.
        decision = interrupt({"type": "amendment", **proposal})
        started = time.time()
        approved = bool(isinstance(decision, dict) and decision.get("approve"))
        verdict = "approved" if approved else "rejected"
        text = f"amendment of {proposal.get('proto')}.{proposal.get('field')} {verdict}"
        rec = {
            **record("amend", self._who(state, "judge"), "amend", proposal, started, 0.0),
            "output": text,
            "decision": decision if isinstance(decision, dict) else {"value": decision},
        }
        updates: dict[str, Any] = {
            "amendment": {},
            "amendments": [*state.get("amendments", []), amendment_key(proposal)][-20:],
            "turns": prompts.add_turn(
                state.get("turns", []), "ALFRED", text, state.get("round", 0)
            ),
            "last": rec,
        }
        merged: ContrapuntoState = {**state, **updates}  # type: ignore[typeddict-item]
        if after_alfred(merged) == END:
            updates["status"] = final_status(merged)
            updates["outcome"] = outcome(merged)
        return updates

    def impasse(self, state: ContrapuntoState) -> dict[str, Any]:
        """Reached after the runner paused here and the user went on: the streak restarts."""
        ctx = {
            **_ctx(state),
            "dissonance": state.get("dissonance", 0.0),
            "streak": state.get("dissonance_streak", 0),
        }
        rec = {
            **record("impasse", self._who(state, "judge"), "impasse", ctx, time.time(), 0.0),
            "output": f"impasse after {ctx['streak']} dissonant rounds; the user resumed",
        }
        updates: dict[str, Any] = {"dissonance_streak": 0, "last": rec}
        if state.get("round", 0) >= state.get("max_rounds", 1):
            updates |= {"status": "unresolved", "outcome": outcome(state)}
        return updates


def outcome(state: ContrapuntoState) -> str:
    names = state.get("personas", {})
    verdict = (state.get("judgement") or {}).get("verdict", "open")
    return (
        f"{verdict} after {state.get('round', 0)} rounds. "
        f"{names.get('logic', 'BRICK')}: {prompts.clip(state.get('brick_view', ''), 400)} | "
        f"{names.get('empathy', 'ROBIN')}: {prompts.clip(state.get('robin_view', ''), 400)}"
    )


class NodeFn(Protocol):
    def __call__(self, state: ContrapuntoState) -> dict[str, Any]: ...


def numbered(fn: NodeFn) -> NodeFn:
    """Give the node's step record the branch's next step number."""

    def node(state: ContrapuntoState) -> dict[str, Any]:
        updates = fn(state)
        seq = state.get("seq", 0) + 1
        return {**updates, "seq": seq, "last": {**updates["last"], "seq": seq}}

    return node


def build(personas: Personas) -> StateGraph[ContrapuntoState]:
    nodes = Nodes(personas)
    graph: StateGraph[ContrapuntoState] = StateGraph(ContrapuntoState)
    for name in ("brick", "robin", "babs", "alfred", "impasse", "amend"):
        graph.add_node(name, numbered(getattr(nodes, name)))
    graph.add_edge(START, "brick")
    graph.add_conditional_edges("brick", after_brick, ["babs", "robin"])
    graph.add_conditional_edges("robin", after_robin, ["babs", "alfred"])
    graph.add_conditional_edges("babs", after_babs, ["brick", "robin", "alfred"])
    ends = ["amend", "impasse", "babs", "brick", END]
    graph.add_conditional_edges("alfred", after_alfred, ends)
    graph.add_conditional_edges("amend", after_alfred, ends)
    graph.add_conditional_edges("impasse", after_impasse, ["brick", END])
    return graph


def compile_graph(personas: Personas, checkpointer: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
    return build(personas).compile(checkpointer=checkpointer)


def initial_state(
    dialogue_id: str, goal: str, personas: dict[str, str], config: DialogueConfig, max_rounds: int
) -> ContrapuntoState:
    return {
        "dialogue_id": dialogue_id,
        "goal": goal,
        "personas": personas,
        "max_rounds": max_rounds,
        "impasse_rounds": config.impasse_rounds,
        "dissonance_threshold": config.dissonance_threshold,
        "convergence_threshold": config.convergence_threshold,
        "round": 0,
        "turns": [],
        "brick_view": "",
        "robin_view": "",
        "research": "",
        "research_question": "",
        "research_round": -1,
        "research_return": "",
        "dissonance": 0.0,
        "convergence": 0.0,
        "dissonance_streak": 0,
        "status": "running",
        "outcome": "",
        "amendment": {},
        "amendments": [],
        "seq": 0,
    }
