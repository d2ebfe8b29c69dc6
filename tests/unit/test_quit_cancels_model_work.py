"""On quit the backend cancels background model work (a judge, a dialogue turn) before it
saves: ``ModelManager.cancel_all`` stops the generating call at its next token, cancels the
queued ones and refuses new ones; the final unload still runs."""

from __future__ import annotations

import threading
import time

from backend.llm.base import ChatMessage, Completion
from backend.llm.manager import ModelManager
from shared_api.errors import CancelledError
from tests.doubles.scripted_model import ScriptedModel

HELLO = [ChatMessage("user", "hello")]


class EndlessBackend(ScriptedModel):
    """TEST DOUBLE: generates until cancelled (a long answer on a slow CPU)."""

    def __init__(self) -> None:
        super().__init__(name="endless", model_id="a")
        self.generating = threading.Event()

    def answer(self, messages: list[ChatMessage], cancel: threading.Event) -> Completion:
        self.generating.set()
        while not cancel.wait(0.01):
            pass
        return Completion(text="part", stop_reason="cancelled", completion_tokens=1)


def test_cancel_all_stops_the_running_and_queued_calls_and_refuses_new_ones() -> None:
    backend = EndlessBackend()
    manager = ModelManager({"e": backend})
    results: dict[str, object] = {}

    def call(caller: str) -> None:
        try:
            results[caller] = manager.generate(
                backend="e", model="a", messages=HELLO, caller=caller
            ).stop_reason
        except CancelledError as exc:
            results[caller] = exc

    running = threading.Thread(target=call, args=("ALFRED",))
    running.start()
    assert backend.generating.wait(5)
    queued = threading.Thread(target=call, args=("BRICK",))
    queued.start()
    time.sleep(0.1)
    started = time.monotonic()
    manager.cancel_all()
    running.join(5)
    queued.join(5)
    assert time.monotonic() - started < 1.0
    assert results["ALFRED"] == "cancelled"
    assert isinstance(results["BRICK"], CancelledError)
    call("ROBIN")  # a call after the quit began ends at once, cancelled
    assert results["ROBIN"] == "cancelled" or isinstance(results["ROBIN"], CancelledError)
    manager.unload()  # the shutdown's last step still runs
    assert backend.unloads == 1
