"""The motivator: an observer on the backend's event bus that gives the personas goals.

It subscribes to ``cognitive_dissonance`` (a dialogue's impasse, a message a persona did not
understand) and ``curiosity_deficit``. A periodic curiosity check scans recent
interactions for knowledge gaps ("I don't know", failed calls) and repeated failures (the same
unknown message twice) and publishes ``curiosity_deficit``. ALFRED's supervisor observer turns
each event into a goal (his live ``formulate_goal`` method when he has one, else a template);
a message the Tool Forge could teach becomes a goal that forges the tool when approved.

Goals queue visibly (``goal_queued``/``goal_updated``, ``list_goals``) and wait for the user,
who approves (its dialogue starts), pauses or cancels them. ``auto_approve`` starts them at
once. The rate limit (``max_goals_per_hour``, a cooldown per source and subject) bounds it all.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from backend.bus import EventBus
from backend.config import DialogueConfig, MotivatorConfig
from backend.dialogue.store import DialogueStore
from backend.runtime import Runtime
from shared_api.dialogue import DialogueSummary, GoalInfo
from shared_api.errors import InvalidValueError
from shared_api.events import CognitiveDissonance, CuriosityDeficit, Event, GoalQueued, GoalUpdated
from shared_api.replies import InvokeResult

log = logging.getLogger(__name__)

FORMULATE_METHOD = "formulate_goal"
GAP = re.compile(
    r"\b(i don't know|i do not know|i'm not sure|i am not sure|not sure|no information|"
    r"i cannot|i can't|unable to|i have no idea|unclear|i lack)\b",
    re.IGNORECASE,
)
RECENT = 20  # interactions per persona a curiosity check reads
DNU_WINDOW_S = 3600.0


class Dialogues(Protocol):
    """What the motivator needs of the dialogue service: where goals and dialogues are kept,
    the live personas, and starting and steering a goal's dialogue."""

    runtime: Runtime
    bus: EventBus
    store: DialogueStore
    config: DialogueConfig

    def start_dialogue(self, goal: str) -> DialogueSummary: ...

    def continue_(self, dialogue_id: str) -> DialogueSummary: ...

    def pause(self, dialogue_id: str) -> DialogueSummary: ...

    def cancel(self, dialogue_id: str) -> DialogueSummary: ...


class Motivator:
    def __init__(self, service: Dialogues, config: MotivatorConfig) -> None:
        self.service = service
        self.config = config
        self.bus = service.bus
        self.suppressed = 0
        self._inbox: queue.Queue[Event | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen: dict[str, float] = {}  # proto -> ts of the newest interaction checked
        self._dnu: deque[tuple[float, str, str]] = deque(maxlen=500)
        self._lock = threading.Lock()
        #: Starts a Tool Forge (``ToolForge.submit``): approving a goal that carries the
        #: forge's proposal (a message a persona did not understand) forges the tool.
        self.forge_submit: Callable[..., Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        if not self.config.enabled:
            return
        self.bus.subscribe(self._observe)
        workers = [("motivator", self._work)]
        if self.config.curiosity_interval_s > 0:
            workers.append(("curiosity", self._curiosity_loop))
        for name, target in workers:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    # -- observing ----------------------------------------------------------------------------
    def _observe(self, event: Event, _parent: str | None) -> None:
        """Bus sink: runs on the publisher's thread, so it only queues."""
        if isinstance(event, CognitiveDissonance | CuriosityDeficit) and not self._stop.is_set():
            self._inbox.put(event)

    def _work(self) -> None:
        while (event := self._inbox.get()) is not None:
            try:
                self.consider(event)
            except Exception:
                log.exception("motivator failed on %s", event.kind)

    def consider(self, event: Event) -> GoalInfo | None:
        """ALFRED's supervisor observer: maybe turn ``event`` into a queued goal."""
        if isinstance(event, CognitiveDissonance) and event.source == "does_not_understand":
            with self._lock:
                self._dnu.append((time.time(), event.proto, str(event.detail.get("message", ""))))
        if not isinstance(event, CognitiveDissonance | CuriosityDeficit):
            return None
        if event.score < self.config.min_score:
            return None
        dialogue = isinstance(event, CognitiveDissonance) and event.source == "dialogue"
        if dialogue and not event.detail.get("impasse"):
            return None  # a goal for an impasse, not for every dissonant round
        draft = self._formulate(event)
        if draft is None:
            return None
        text, key = draft
        if not self._allowed(key):
            self.suppressed += 1
            return None
        now = time.time()
        goal = GoalInfo(
            goal_id=f"g-{uuid.uuid4().hex[:10]}",
            text=text,
            source=event.kind if not isinstance(event, CognitiveDissonance) else event.source,
            proto=event.proto,
            score=event.score,
            created=now,
            updated=now,
            detail={"event": event.model_dump(mode="json")},
        )
        self.service.store.add_goal(goal, key)
        self.bus.publish(GoalQueued(goal=goal))
        if self.config.auto_approve:
            return self.act(goal.goal_id, "approve")
        return goal

    def _formulate(self, event: CognitiveDissonance | CuriosityDeficit) -> tuple[str, str] | None:
        """(goal text, rate-limit key), from ALFRED's ``formulate_goal`` or a template."""
        judge = self.service.config.judge
        runtime = self.service.runtime
        if judge in runtime.manager.names() and runtime.manager.get(judge).has_method(
            FORMULATE_METHOD
        ):
            result = runtime.invoke(
                judge, FORMULATE_METHOD, {"event": event.model_dump(mode="json")}
            )
            if isinstance(result, InvokeResult):
                if not result.result:
                    return None  # ALFRED decided this is not worth a goal
                return str(result.result)[:4000], f"{FORMULATE_METHOD}:{result.result}"
        if isinstance(event, CuriosityDeficit):
            gap = event.gaps[0] if event.gaps else "what it failed at recently"
            return f"Research for {event.proto}: {gap}", f"curiosity:{event.proto}"
        if event.source == "dialogue":
            goal = str(event.detail.get("goal", ""))
            sides = " and ".join(event.protos or [event.proto])
            return (
                f"Resolve the impasse between {sides} on: {goal}",
                f"dialogue:{event.detail.get('dialogue_id', '')}",
            )
        message = str(event.detail.get("message", "")) or "an unknown message"
        if isinstance(event.detail.get("proposal"), dict):
            return (
                f"Forge a tool {message!r} for {event.proto} (it was sent {message!r} and "
                "did not understand it)",
                f"dnu:{event.proto}:{message}",
            )
        return (
            f"Teach {event.proto} to understand {message!r}",
            f"dnu:{event.proto}:{message}",
        )

    def _allowed(self, key: str) -> bool:
        now = time.time()
        store = self.service.store
        if len(store.recent_goal_times(now - 3600)) >= self.config.max_goals_per_hour:
            return False
        return not store.recent_goal_times(now - self.config.cooldown_s, key)

    # -- curiosity ----------------------------------------------------------------------------
    def _curiosity_loop(self) -> None:
        while not self._stop.wait(self.config.curiosity_interval_s):
            try:
                self.curiosity_check()
            except Exception:
                log.exception("curiosity check failed")

    def curiosity_check(self) -> list[CuriosityDeficit]:
        """Scan interactions since the last check; publish a deficit per persona with gaps."""
        found = []
        with self._lock:
            repeated = Counter(
                (proto, message)
                for ts, proto, message in self._dnu
                if ts > time.time() - DNU_WINDOW_S
            )
        for proto in self.service.runtime.manager.list():
            since = self._seen.get(proto.name, 0.0)
            fresh = [i for i in proto.history[-RECENT:] if float(i.get("ts", 0)) > since]
            if fresh:
                self._seen[proto.name] = max(float(i.get("ts", 0)) for i in fresh)
            gaps = [
                str(i.get("prompt", ""))[:200]
                for i in fresh
                if i.get("stop_reason") == "error" or GAP.search(str(i.get("reply", "")))
            ]
            failures = [
                f"{message} (asked {n} times, not understood)"
                for (name, message), n in repeated.items()
                if name == proto.name and n >= 2
            ]
            if not gaps and not failures:
                continue
            considered = max(1, len(fresh)) + len(failures)
            deficit = CuriosityDeficit(
                proto=proto.name,
                score=min(1.0, (len(gaps) + 2 * len(failures)) / considered),
                gaps=(failures + gaps)[:10],
                detail={"interactions_checked": len(fresh), "repeated_failures": len(failures)},
            )
            self.bus.publish(deficit)
            found.append(deficit)
        return found

    # -- the queue ----------------------------------------------------------------------------
    def goals(self) -> list[GoalInfo]:
        return self.service.store.goals()

    def act(self, goal_id: str, action: str) -> GoalInfo:
        """approve (start its dialogue), pause, resume or cancel a goal."""
        store = self.service.store
        goal = store.goal(goal_id)
        allowed = {
            "approve": ("proposed", "paused"),
            "pause": ("proposed", "approved"),
            "resume": ("paused",),
            "cancel": ("proposed", "approved", "paused"),
        }[action]
        if goal.status not in allowed:
            raise InvalidValueError(
                f"Goal {goal_id} is {goal.status}; it cannot be {action}d (only when "
                f"{' or '.join(allowed)}).",
                goal_id=goal_id,
            )
        running = goal.dialogue_id and goal.status == "approved"
        proposal = _forge_proposal(goal)
        if action == "approve" and proposal is not None and self.forge_submit is not None:
            self.forge_submit(proposal["proto"], proposal["name"], proposal["description"])
            goal = store.update_goal(goal_id, status="approved")
        elif action == "approve" or (action == "resume" and goal.dialogue_id):
            if goal.dialogue_id:
                self.service.continue_(goal.dialogue_id)
            else:
                summary = self.service.start_dialogue(goal.text)
                goal = store.update_goal(goal_id, dialogue_id=summary.dialogue_id)
            goal = store.update_goal(goal_id, status="approved")
        elif action == "resume":
            goal = store.update_goal(goal_id, status="proposed")
        elif action == "pause":
            if running:
                self.service.pause(goal.dialogue_id)
            goal = store.update_goal(goal_id, status="paused")
        else:
            if goal.dialogue_id:
                self.service.cancel(goal.dialogue_id)
            goal = store.update_goal(goal_id, status="cancelled")
        self.bus.publish(GoalUpdated(goal=goal))
        return goal

    def dialogue_ended(self, dialogue_id: str, status: str) -> None:
        """A goal's dialogue finished (done) or was cancelled."""
        goal = self.service.store.goal_for_dialogue(dialogue_id)
        if goal is None or goal.status in ("done", "cancelled"):
            return
        goal = self.service.store.update_goal(goal.goal_id, status=status)
        self.bus.publish(GoalUpdated(goal=goal))

    def stats(self) -> dict[str, Any]:
        return {"suppressed": self.suppressed, "enabled": self.config.enabled}


def _forge_proposal(goal: GoalInfo) -> dict[str, Any] | None:
    """The ``forge_tool`` body a does-not-understand goal carries, if any."""
    event = goal.detail.get("event")
    detail = event.get("detail") if isinstance(event, dict) else None
    proposal = detail.get("proposal") if isinstance(detail, dict) else None
    if isinstance(proposal, dict) and {"proto", "name", "description"} <= set(proposal):
        return proposal
    return None
