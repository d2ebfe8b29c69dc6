"""One forge with the real embedded model (the capable default, Qwen2.5-Coder-1.5B on CPU)
writing the code and a real sandbox (bubblewrap) testing it against the given example. It
must attach a tool that is right on a call it never saw (the record goes to
artifacts/forge-smoke.json)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from backend.bus import EventBus
from backend.config import BackendConfig, ForgeConfig, ModelsConfig
from backend.forge import ToolForge
from backend.home import Home
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from backend.sandbox import SecureCodeExecutor
from shared_api.replies import InvokeResult
from tests.mind.conftest import MODEL_SHA256, capable_model, capable_model_path

__all__ = ["capable_model", "capable_model_path"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_embedded_model_forges_a_working_tool(
    tmp_path: Path, bubblewrap: SecureCodeExecutor, capable_model: Path
) -> None:
    bus = EventBus()
    runtime = Runtime(Home(tmp_path).ensure(), BackendConfig(autosave_interval_s=0), bus)
    models = ModelsConfig(
        backend="embedded", embedded_model=str(capable_model), embedded_sha256=MODEL_SHA256
    )
    llm = PersonaLLM(runtime, models, bus)
    config = ForgeConfig(max_attempts=2, max_tokens=160, candidates=1)
    forge = ToolForge(runtime, llm, bus, config, bubblewrap)
    Proto.llm, Proto.tool_runner = llm, forge
    runtime.start()
    try:
        finished = forge.forge(
            "BRICK", "add_numbers", "return the sum of a and b", ["add_numbers(a=2, b=3) == 5"],
            2, "smoke", threading.Event(),
        )  # fmt: skip
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "forge-smoke.json").write_text(finished.model_dump_json(indent=2))
        assert finished.outcome == "attached", [a.feedback for a in finished.attempts]
        assert finished.tool is not None and finished.tool.provenance.examples_source == "given"
        for attempt in finished.attempts:
            assert attempt.passed or attempt.feedback  # every failure says why
        reply = runtime.invoke("BRICK", "add_numbers", {"a": 40, "b": -2})
        assert isinstance(reply, InvokeResult) and reply.result == 38
        print("forge smoke: attached;", json.dumps(reply.result), finished.tool.source)
    finally:
        forge.close()
        llm.close()
        runtime.close(save=False)
        Proto.llm = Proto.tool_runner = None
