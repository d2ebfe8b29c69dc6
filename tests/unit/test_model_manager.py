"""ModelManager scheduling and the Ollama backend, against FakeOllama (a TEST DOUBLE: no
Ollama server can run on these machines) and a scripted in-process backend double."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from backend.llm.manager import GIB, ModelManager
from backend.llm.ollama_backend import OllamaBackend
from shared_api.errors import (
    CancelledError,
    ModelMissingError,
    ModelTooLargeError,
    ModelUnreachableError,
)
from tests.doubles.fake_ollama import GB, FakeOllama

HELLO = [ChatMessage("system", "be brief"), ChatMessage("user", "hello")]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama({"phi3:mini": 2 * GB, "llama3.1:8b": 5 * GB, "huge:70b": 40 * GB}) as f:
        yield f


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_lists_models_and_sizes(fake: FakeOllama) -> None:
    ollama = OllamaBackend(fake.host)
    assert {m.name: m.size_bytes for m in ollama.list_models()} == fake.state.models
    assert ollama.model_size("llama3.1:8b") == 5 * GB


def test_missing_model_names_the_pull_command(fake: FakeOllama) -> None:
    with pytest.raises(ModelMissingError) as err:
        OllamaBackend(fake.host).model_size("mistral:7b")
    assert "ollama pull mistral:7b" in err.value.message
    assert fake.host in err.value.message


def test_unreachable_server_names_the_host() -> None:
    host = f"http://127.0.0.1:{free_port()}"
    manager = ModelManager({"ollama": OllamaBackend(host)})
    with pytest.raises(ModelUnreachableError) as err:
        manager.generate(backend="ollama", model="phi3:mini", messages=HELLO)
    assert host in err.value.message


def test_host_defaults_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:1")
    assert OllamaBackend().host == "http://127.0.0.1:1"


def test_streamed_generation_sends_keep_alive_zero(fake: FakeOllama) -> None:
    metrics = []
    manager = ModelManager({"ollama": OllamaBackend(fake.host)}, on_metrics=metrics.append)
    pieces: list[str] = []
    c = manager.generate(
        backend="ollama",
        model="phi3:mini",
        messages=HELLO,
        on_token=pieces.append,
        params=GenerationParams(max_tokens=3),
        caller="BRICK",
    )
    assert c.text == "the quick brown " and pieces == ["the ", "quick ", "brown "]
    assert c.stop_reason == "length" and c.completion_tokens == 3 and c.prompt_tokens == 12
    (req,) = fake.chat_requests()
    assert req["keep_alive"] == 0 and req["stream"] is True
    assert req["messages"][0] == {"role": "system", "content": "be brief"}
    assert metrics[0].proto == "BRICK" and metrics[0].resident == "ollama:phi3:mini"
    assert fake.state.resident == set()  # keep_alive 0: unloaded after the reply


def test_non_streamed_generation_and_system_prompt(fake: FakeOllama) -> None:
    manager = ModelManager({"ollama": OllamaBackend(fake.host)})
    c = manager.generate(
        backend="ollama",
        model="llama3.1:8b",
        system="You are ROBIN.",
        messages=[ChatMessage("user", "hi")],
        params=GenerationParams(max_tokens=2),
    )
    assert c.text == "the quick" and c.stop_reason == "length" and c.completion_tokens == 2
    (req,) = fake.chat_requests()
    assert req["stream"] is False and req["keep_alive"] == 0
    assert req["messages"] == [
        {"role": "system", "content": "You are ROBIN."},
        {"role": "user", "content": "hi"},
    ]


def test_four_concurrent_personas_never_two_models(fake: FakeOllama) -> None:
    fake.state.load_delay_s = 0.02
    manager = ModelManager({"ollama": OllamaBackend(fake.host)})
    errors: list[BaseException] = []

    def persona(name: str, model: str) -> None:
        try:
            for _ in range(3):
                manager.generate(backend="ollama", model=model, messages=HELLO, caller=name)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=persona, args=(n, m))
        for n, m in [
            ("BRICK", "phi3:mini"),
            ("ROBIN", "llama3.1:8b"),
            ("BABS", "phi3:mini"),
            ("ALFRED", "llama3.1:8b"),
        ]
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(fake.chat_requests()) == 12
    assert all(r["keep_alive"] == 0 for r in fake.chat_requests())
    assert fake.state.max_resident == 1


def test_too_large_model_is_refused_before_loading(fake: FakeOllama) -> None:
    manager = ModelManager({"ollama": OllamaBackend(fake.host)}, vram_budget_bytes=8 * GIB)
    with pytest.raises(ModelTooLargeError, match="VRAM budget"):
        manager.generate(backend="ollama", model="huge:70b", messages=HELLO)
    assert fake.chat_requests() == []


def test_cancel_mid_stream_returns_partial_text(fake: FakeOllama) -> None:
    fake.state.reply_words = [f"w{i}" for i in range(200)]
    fake.state.token_delay_s = 0.01
    manager = ModelManager({"ollama": OllamaBackend(fake.host)})
    cancel = threading.Event()
    pieces: list[str] = []

    def on_token(p: str) -> None:
        pieces.append(p)
        if len(pieces) == 5:
            cancel.set()

    c = manager.generate(
        backend="ollama",
        model="phi3:mini",
        messages=HELLO,
        on_token=on_token,
        cancel=cancel,
        params=GenerationParams(max_tokens=200),
    )
    assert c.stop_reason == "cancelled"
    assert 5 <= len(pieces) < 200


class ScriptedBackend:
    """TEST DOUBLE: an instant in-process backend that records load/unload/generate order."""

    name = "scripted"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.loaded: str | None = None
        self.log: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("a", self.name, 1), ModelInfo("b", self.name, 1)]

    def model_size(self, model: str) -> int:
        return 1

    def load(self, model: str) -> float:
        assert self.loaded is None, "two models resident at once"
        self.loaded = model
        self.log.append(("load", model))
        return 1.0

    def unload(self) -> None:
        self.log.append(("unload", self.loaded or ""))
        self.loaded = None

    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        self.gate.wait()
        time.sleep(self.delay_s)
        self.log.append(("generate", messages[-1].content))
        return Completion(text="ok", stop_reason="stop", completion_tokens=1, generation_ms=1)


def test_switching_models_unloads_first() -> None:
    b = ScriptedBackend()
    m = ModelManager({"s": b})
    for model in ["a", "a", "b", "a"]:
        m.generate(backend="s", model=model, messages=[ChatMessage("user", model)])
    assert [e for e in b.log if e[0] != "generate"] == [
        ("load", "a"),
        ("unload", "a"),
        ("load", "b"),
        ("unload", "b"),
        ("load", "a"),
    ]
    assert m.resident == ("s", "a")


def test_round_robin_between_callers() -> None:
    b = ScriptedBackend()
    m = ModelManager({"s": b})
    b.gate.clear()  # hold the first call so the others queue behind it
    threads = []

    def call(caller: str, text: str) -> None:
        m.generate(backend="s", model="a", messages=[ChatMessage("user", text)], caller=caller)

    def start(caller: str, text: str) -> None:
        t = threading.Thread(target=call, args=(caller, text))
        t.start()
        threads.append(t)
        time.sleep(0.02)  # fix the arrival order

    start("BRICK", "b0")
    for i in range(1, 4):
        start("BRICK", f"b{i}")
    start("ROBIN", "r0")
    assert m.queue() == ["BRICK", "BRICK", "BRICK", "ROBIN"]
    b.gate.set()
    for t in threads:
        t.join()
    order = [text for kind, text in b.log if kind == "generate"]
    assert order == ["b0", "r0", "b1", "b2", "b3"]  # ROBIN is not starved by BRICK's queue


def test_cancel_while_queued() -> None:
    b = ScriptedBackend()
    m = ModelManager({"s": b})
    b.gate.clear()
    first = threading.Thread(
        target=m.generate, kwargs={"backend": "s", "model": "a", "messages": HELLO}
    )
    first.start()
    time.sleep(0.05)
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def queued() -> None:
        try:
            m.generate(backend="s", model="a", messages=HELLO, cancel=cancel)
        except BaseException as exc:
            outcome.append(exc)

    second = threading.Thread(target=queued)
    second.start()
    time.sleep(0.05)
    cancel.set()
    second.join(timeout=5)
    b.gate.set()
    first.join()
    assert len(outcome) == 1 and isinstance(outcome[0], CancelledError)
    assert m.queue() == []
