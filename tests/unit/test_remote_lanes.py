"""The ModelManager's lanes: a remote backend skips the one-local-model rule and the VRAM
budget, runs up to its ``concurrency`` calls at once, and serves callers round-robin.
The backends are TEST DOUBLES that block until released, to force the interleavings."""

from __future__ import annotations

import threading
import time

from backend.llm.base import ChatMessage, Completion
from backend.llm.manager import GIB, ModelManager
from tests.doubles.scripted_model import ScriptedModel


class Gate(ScriptedModel):
    """A backend double: each generate waits until the test opens the gate for it."""

    def __init__(self, name: str, remote: bool, concurrency: int = 1, size: int = 0) -> None:
        super().__init__(name=name, size=size, model_id="m")
        self.remote = remote
        self.concurrency = concurrency
        self.running: list[str] = []
        self.order: list[str] = []
        self.peak = 0
        self.release = threading.Semaphore(0)
        self.lock = threading.Lock()

    def answer(self, messages: list[ChatMessage], cancel: threading.Event) -> Completion:
        with self.lock:
            self.running.append(messages[-1].content)
            self.order.append(messages[-1].content)
            self.peak = max(self.peak, len(self.running))
        self.release.acquire(timeout=10)
        with self.lock:
            self.running.remove(messages[-1].content)
        return Completion(text="ok", stop_reason="stop", completion_tokens=1)


def call(manager: ModelManager, backend: str, caller: str, text: str) -> threading.Thread:
    thread = threading.Thread(
        target=manager.generate,
        kwargs={
            "backend": backend,
            "model": "m",
            "messages": [ChatMessage("user", text)],
            "caller": caller,
        },
        daemon=True,
    )
    thread.start()
    return thread


def wait_until(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_remote_calls_run_concurrently_beside_a_busy_local_model() -> None:
    local = Gate("embedded", remote=False)
    remote = Gate("openai:gpu", remote=True, concurrency=3, size=40 * GIB)  # over budget
    manager = ModelManager({"embedded": local, "openai:gpu": remote}, vram_budget_bytes=GIB)
    threads = [call(manager, "embedded", "BRICK", "local")]
    wait_until(lambda: local.running == ["local"])
    threads += [call(manager, "openai:gpu", f"P{i}", f"r{i}") for i in range(5)]
    wait_until(lambda: len(remote.running) == 3)  # the local call still holds its slot
    time.sleep(0.1)
    assert remote.peak == 3 and len(manager.queue()) == 2  # the limit holds
    for _ in range(5):
        remote.release.release()
    local.release.release()
    for thread in threads:
        thread.join(5)
    assert remote.peak == 3 and manager.resident == ("embedded", "m")


def test_a_remote_lane_is_fair_between_callers() -> None:
    remote = Gate("openai:gpu", remote=True, concurrency=1)
    manager = ModelManager({"openai:gpu": remote})
    threads = [call(manager, "openai:gpu", "BRICK", "b0")]
    wait_until(lambda: remote.running == ["b0"])
    for queued, text in enumerate(("b1", "b2", "b3"), start=1):  # a chatty persona queues 3
        threads.append(call(manager, "openai:gpu", "BRICK", text))
        wait_until(lambda n=queued: len(manager.queue()) == n)
    threads.append(call(manager, "openai:gpu", "ROBIN", "r0"))
    wait_until(lambda: len(manager.queue()) == 4)
    for _ in range(5):
        remote.release.release()
    for thread in threads:
        thread.join(5)
    assert remote.order == ["b0", "r0", "b1", "b2", "b3"]  # ROBIN is not starved
