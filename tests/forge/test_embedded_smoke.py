"""One forge with the real embedded model (the capable default, Qwen2.5-Coder-1.5B on CPU)
writing the code and a real sandbox (bubblewrap) testing it against the given example. It
must attach a tool that is right on a call it never saw (the record goes to
artifacts/forge-smoke.json)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from backend.config import ForgeConfig
from backend.sandbox import SecureCodeExecutor
from shared_api.replies import InvokeResult
from tests.conftest import capable_forge

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_embedded_model_forges_a_working_tool(
    tmp_path: Path, bubblewrap: SecureCodeExecutor, capable_model: Path
) -> None:
    config = ForgeConfig(max_attempts=2, max_tokens=160, candidates=1, retry_candidates=0)
    with capable_forge(tmp_path, capable_model, bubblewrap, config) as (runtime, forge):
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
