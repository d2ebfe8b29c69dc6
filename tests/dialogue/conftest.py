"""In-process dialogue fixtures: a real Runtime, PersonaLLM, LangGraph and SQLite checkpoints,
with the model replaced by the scripted TEST DOUBLE (``doubles.ScriptedModel``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backend.bus import EventBus
from backend.config import Config, DialogueConfig, ModelsConfig, MotivatorConfig
from backend.dialogue.service import DialogueService
from backend.home import Home
from backend.launcher import BackendProcess
from backend.llm.ollama_backend import OllamaBackend
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from shared_api.events import Event
from tests.dialogue.doubles import Scenario, ScriptedModel


@dataclass
class System:
    home: Path
    runtime: Runtime
    llm: PersonaLLM
    service: DialogueService
    scenario: Scenario
    events: list[Event] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(
        self, predicate: Callable[[Event], bool], timeout: float = 20.0, after: int = 0
    ) -> Event:
        """The first event (from index ``after``) that matches, waiting for it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no matching event; got {[e.kind for e in self.events]}"
                self.cond.wait(remaining)

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def kinds(self, kind: str) -> list[Any]:
        with self.cond:
            return [e for e in self.events if e.kind == kind]


def make_system(home: Path, scenario: Scenario, **dialogue: Any) -> System:
    config = Config(
        dialogue=DialogueConfig(**dialogue),
        motivator=MotivatorConfig(curiosity_interval_s=0, cooldown_s=0),
    )
    bus = EventBus()
    Home(home).ensure()
    runtime = Runtime(Home(home), config.backend, bus)
    llm = PersonaLLM(
        runtime,
        ModelsConfig(backend="embedded"),
        bus,
        backends={
            "ollama": OllamaBackend("http://127.0.0.1:9", 1.0),
            "embedded": ScriptedModel(scenario),
        },
    )
    Proto.llm = llm
    runtime.start()
    service = DialogueService(runtime, config, bus, home)
    system = System(home, runtime, llm, service, scenario)

    def sink(event: Event, _parent: str | None) -> None:
        with system.cond:
            system.events.append(event)
            system.cond.notify_all()

    bus.subscribe(sink)
    service.start()
    return system


def close_system(system: System) -> None:
    system.service.close()
    system.llm.close()
    system.runtime.close()


@pytest.fixture
def scenario() -> Scenario:
    return Scenario()


@pytest.fixture
def system(tmp_path: Path, scenario: Scenario) -> Iterator[System]:
    previous = Proto.llm
    made = make_system(tmp_path / "home", scenario, max_rounds=4, impasse_rounds=2)
    try:
        yield made
    finally:
        close_system(made)
        Proto.llm = previous


# -- a real backend subprocess, its model the ScriptedOllama TEST DOUBLE ----------------------
class EventLog:
    """Every event of a backend, collected by a thread with its own subscriber."""

    def __init__(self, backend: BackendProcess) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()
        self._stop = threading.Event()
        self._client = backend.client(events=True)
        self._client.wait_event(lambda e: e.kind == "heartbeat", timeout=15)  # subscribed
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._client.next_event(0.2)
            except Exception:
                return
            if event is not None and event.kind != "heartbeat":
                with self.cond:
                    self.events.append(event)
                    self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.events)

    def wait(self, predicate: Callable[[Any], bool], timeout: float = 30.0, after: int = 0) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no matching event; got {[e.kind for e in self.events]}"
                self.cond.wait(remaining)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._client.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Spawn = Callable[[], BackendProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """``spawn()`` starts a backend on the test's home; all are killed at teardown."""
    home = tmp_path / "home"
    started: list[BackendProcess] = []

    def start() -> BackendProcess:
        assert not any(p.alive for p in started), "stop or kill the previous backend first"
        proc = BackendProcess(home)
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and hasattr(item, "funcargs") and "spawn" in item.funcargs:
        log = Path(item.funcargs["tmp_path"]) / "home" / "backend.log"
        if log.exists():
            tail = log.read_text(errors="replace").splitlines()[-80:]
            report.sections.append(("backend log (all restarts)", "\n".join(tail)))
