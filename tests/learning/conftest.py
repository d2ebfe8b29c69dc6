"""In-process learning fixtures: a real Runtime and PersonaLLM (the real embedded model), a
LearningService with the ScriptedJudge TEST DOUBLE, and one real CPU fine-tune per session
(SmolLM2-135M, the demo's closing phrase), shared by the tests that need a trained model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backend.bus import EventBus
from backend.config import Config, ModelsConfig
from backend.home import Home
from backend.learning.config import LearningConfig
from backend.learning.demo import FACTS, closing_examples, shows_signature
from backend.learning.service import LearningService, learning_available
from backend.llm.ollama_backend import OllamaBackend
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from shared_api.events import Event, LearningFinished
from shared_api.learning import JobInfo
from tests.doubles.scripted_judge import ScriptedJudge

#: The fine-tune CI runs: small enough for 2 cores, enough to teach the closing phrase.
CI_TRAINING = {
    "steps": 24,
    "batch_size": 4,
    "learning_rate": 1e-3,
    "threads": 2,
    "validation_max_tokens": 32,
}


def signature_judge() -> ScriptedJudge:
    """Prefers answers that close with the demo's phrase (what the fine-tune teaches)."""
    return ScriptedJudge(prefer=lambda answer: float(shows_signature(answer)))


@dataclass
class LearningSystem:
    home: Path
    runtime: Runtime
    llm: PersonaLLM
    service: LearningService
    judge: ScriptedJudge
    events: list[Event] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def on_event(self, event: Event, _parent: str | None) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[Event], bool], timeout: float = 60.0) -> Event:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                assert remaining > 0, (
                    f"no matching event; got {[e.kind for e in self.events][-30:]}"
                )
                self.cond.wait(remaining)

    def finished(self, job_id: str, timeout: float = 900.0) -> JobInfo:
        event = self.wait(
            lambda e: isinstance(e, LearningFinished) and e.job.job_id == job_id, timeout
        )
        assert isinstance(event, LearningFinished)
        return event.job

    def close(self) -> None:
        self.service.close()
        self.llm.close()
        self.runtime.close()


def make_learning(
    home: Path, judge: ScriptedJudge | None = None, trainer: Any = None, **learning: Any
) -> LearningSystem:
    config = Config(learning=LearningConfig(curator_interval_s=0, **{**CI_TRAINING, **learning}))
    bus = EventBus()
    Home(home).ensure()
    runtime = Runtime(Home(home), config.backend, bus)
    llm = PersonaLLM(
        runtime,
        ModelsConfig(backend="embedded"),
        bus,
        backends={"ollama": OllamaBackend("http://127.0.0.1:9", 1.0), **_embedded()},
    )
    Proto.llm = llm
    runtime.start()
    judge = judge or signature_judge()
    service = LearningService(runtime, llm, config.learning, home, judge=judge, trainer=trainer)
    system = LearningSystem(home, runtime, llm, service, judge)
    bus.subscribe(system.on_event)
    service.start()
    return system


def _embedded() -> dict[str, Any]:
    from backend.llm.embedded import EmbeddedBackend

    return {"embedded": EmbeddedBackend(n_threads=1)}


def add_demo_golden(system: LearningSystem, proto: str = "BRICK", n: int = len(FACTS)) -> None:
    """The demo's examples as golden data (added by hand, as a user would)."""
    system_prompt = system.runtime.manager.get(proto).codex.system_prompt
    for i, messages in enumerate(closing_examples(system_prompt, n)):
        system.service.put_golden(
            proto, f"demo-{i:02d}", messages[1]["content"], messages[2]["content"], None, "demo"
        )


def require_learning() -> None:
    if not learning_available():
        pytest.fail("the learning extra is not installed: run `make learning`")


@dataclass
class Trained:
    """The session's one real fine-tune: its system (still running) and finished job."""

    system: LearningSystem
    job: JobInfo


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    require_learning()
    system = make_learning(tmp_path_factory.mktemp("learning") / "home")
    add_demo_golden(system)
    info = system.service.start_finetune("BRICK")
    job = system.finished(info.job_id)
    try:
        yield Trained(system, job)
    finally:
        system.close()
