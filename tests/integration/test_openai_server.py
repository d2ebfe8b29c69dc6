"""The OpenAI-compatible backend against a real server: llama.cpp's ``llama_cpp.server``
serving the packaged SmolLM2 GGUF on 127.0.0.1 with an API key (``tests/servers.py``).
Streaming and whole answers, cancel, a wrong key, an unknown model, a refused connection, a
timeout, the server killed mid-answer, and a persona answering through it in a real backend."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.launcher import BackendProcess
from backend.llm.base import ChatMessage, GenerationParams
from backend.llm.endpoints import OpenAIEndpoint
from backend.llm.manager import ModelManager
from backend.llm.openai_backend import OpenAIBackend
from shared_api import commands as c
from shared_api.errors import (
    ModelFailedError,
    ModelMissingError,
    ModelUnauthorizedError,
    ModelUnreachableError,
    RequestTimeout,
)
from shared_api.events import PersonaReply
from tests.servers import LlamaServer, free_port, start_llama_server

KEY_ENV = "ENTROPIC_TEST_OPENAI_KEY"
QUESTION = [ChatMessage("user", "Why is the sky blue?")]


def manager_for(server_url: str, **endpoint: object) -> ModelManager:
    ep = OpenAIEndpoint(base_url=server_url, api_key_env=KEY_ENV, **endpoint)  # type: ignore[arg-type]
    return ModelManager({"openai:local": OpenAIBackend("local", ep)})


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch, llama_server: LlamaServer) -> str:
    monkeypatch.setenv(KEY_ENV, llama_server.key)
    return llama_server.key


def ask(manager: ModelManager, model: str = "smollm2", **kwargs: object) -> object:
    params = GenerationParams(max_tokens=int(kwargs.pop("max_tokens", 12)))  # type: ignore[call-overload]
    return manager.generate(
        backend="openai:local",
        model=model,
        messages=QUESTION,
        params=params,
        **kwargs,  # type: ignore[arg-type]
    )


def test_streamed_and_whole_answers(llama_server: LlamaServer, key: str) -> None:
    manager = manager_for(llama_server.base_url)
    pieces: list[str] = []
    streamed = manager.generate(
        backend="openai:local",
        model="smollm2",
        messages=QUESTION,
        system="Answer in one sentence.",
        params=GenerationParams(max_tokens=12),
        caller="BRICK",
        on_token=pieces.append,
    )
    assert len(pieces) >= 6 and "".join(pieces) == streamed.text
    assert streamed.stop_reason == "length" and streamed.completion_tokens == 12
    assert "blue" in streamed.text.lower() or "sky" in streamed.text.lower()
    assert manager.last_metrics is not None
    assert manager.last_metrics.backend == "openai:local" and manager.last_metrics.tokens_per_s > 0
    whole = manager.generate(
        backend="openai:local",
        model="smollm2",
        messages=QUESTION,
        system="Answer in one sentence.",
        params=GenerationParams(max_tokens=12),
    )
    assert whole.text == streamed.text  # greedy: the same answer either way
    assert whole.prompt_tokens > 10 and whole.completion_tokens == 12  # the server's usage
    assert manager.resident is None  # a remote server is never "resident" here


def test_cancel_mid_stream(llama_server: LlamaServer, key: str) -> None:
    manager = manager_for(llama_server.base_url)
    cancel = threading.Event()
    pieces: list[str] = []

    def on_token(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()

    done = ask(manager, max_tokens=200, on_token=on_token, cancel=cancel)
    assert done.stop_reason == "cancelled"  # type: ignore[attr-defined]
    assert done.text == "".join(pieces) and len(pieces) == 3  # type: ignore[attr-defined]
    again = ask(manager, max_tokens=4)  # the lane is free, the server still serves
    assert again.stop_reason == "length"  # type: ignore[attr-defined]


def test_wrong_key_unknown_model_and_refused_connection(
    llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    with pytest.raises(ModelUnauthorizedError, match=f"set \\${KEY_ENV}"):
        ask(manager_for(llama_server.base_url))
    monkeypatch.setenv(KEY_ENV, llama_server.key)  # read again on the next request
    with pytest.raises(ModelMissingError, match="it serves: smollm2"):
        ask(manager_for(llama_server.base_url), model="qwen2.5:7b")
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelUnreachableError, match="Start the server"):
        ask(manager_for(closed))


@dataclass(frozen=True)
class SchemaParams(GenerationParams):
    """GenerationParams with the JSON schema field (added to GenerationParams by issue 12)."""

    json_schema: dict[str, Any] | None = None


def test_a_json_schema_binds_the_answer(llama_server: LlamaServer, key: str) -> None:
    schema = {
        "type": "object",
        "properties": {"verdict": {"type": "string", "enum": ["A", "B"]}},
        "required": ["verdict"],
    }
    manager = manager_for(llama_server.base_url, structured="json_object")
    done = manager.generate(
        backend="openai:local",
        model="smollm2",
        messages=[ChatMessage("user", "Which is better, A or B? Answer in JSON.")],
        params=SchemaParams(max_tokens=24, json_schema=schema),
    )
    assert json.loads(done.text)["verdict"] in ("A", "B")


def test_timeout(llama_server: LlamaServer, key: str) -> None:
    manager = manager_for(llama_server.base_url, timeout_s=0.05)
    manager.backends["openai:local"].load("smollm2")  # the model list is cached: no timeout
    with pytest.raises(RequestTimeout, match=r"raise models\.openai\.local\.timeout_s"):
        ask(manager, max_tokens=48)


def test_server_killed_mid_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = start_llama_server(tmp_path)
    try:
        monkeypatch.setenv(KEY_ENV, server.key)
        manager = manager_for(server.base_url)
        pieces: list[str] = []

        def on_token(piece: str) -> None:
            pieces.append(piece)
            if len(pieces) == 2:
                server.stop()  # SIGKILL, mid-answer

        with pytest.raises(ModelFailedError, match=r"closed the stream .* after 2 pieces"):
            ask(manager, max_tokens=200, on_token=on_token)
        with pytest.raises(ModelUnreachableError):
            ask(manager_for(server.base_url))
    finally:
        server.stop()


def test_a_persona_answers_through_the_server(
    llama_server: LlamaServer, key: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        "[memory]\nenabled = false\n"
        f'[models.openai.local]\nbase_url = "{llama_server.base_url}"\n'
        f'api_key_env = "{KEY_ENV}"\nconcurrency = 2\n'
        '[models.personas.BRICK]\nmodel = "openai:local/smollm2"\n'
    )
    proc = BackendProcess(home)
    proc.start()
    try:
        with proc.client(events=True) as client:
            accepted = client.request(c.AskPersona(proto="BRICK", text="Hi!", max_tokens=8))
            assert accepted.backend == "openai:local" and accepted.model == "smollm2"  # type: ignore[union-attr]
            reply = client.wait_event(lambda e: e.kind == "persona_reply", timeout=60)
            assert isinstance(reply, PersonaReply) and reply.error is None
            assert reply.backend == "openai:local" and reply.text and reply.stop_reason == "length"
            status = client.call("status", {})
        engines = status.services["engines"]  # type: ignore[union-attr]
        assert engines["models"]["BRICK"] == {
            "backend": "openai:local",
            "model": "smollm2",
            "where": llama_server.base_url,
        }
        assert engines["checkpoints"] == f"sqlite:{home.resolve()}/dialogue/checkpoints.sqlite"
        assert engines["memory"] == f"local:{home.resolve()}/memory" and "sandbox" in engines
        assert key not in str(status)
        assert key not in (home / "backend.log").read_text()
    finally:
        proc.stop()
