"""One forge with the real embedded model (SmolLM2-135M on CPU) writing the code and a real
sandbox (bubblewrap) testing it. Whether a 135M model writes a passing tool is recorded, not
asserted (artifacts/forge-smoke.json); the loop itself must run through and say why."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from backend.bus import EventBus
from backend.config import BackendConfig, ForgeConfig, ModelsConfig
from backend.forge import ToolForge
from backend.home import Home
from backend.llm.service import PersonaLLM
from backend.protos import Proto
from backend.runtime import Runtime
from backend.sandbox import SecureCodeExecutor
from shared_api.replies import InvokeResult

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def test_embedded_model_forges_through_the_loop(
    tmp_path: Path, bubblewrap: SecureCodeExecutor
) -> None:
    bus = EventBus()
    runtime = Runtime(Home(tmp_path).ensure(), BackendConfig(autosave_interval_s=0), bus)
    llm = PersonaLLM(runtime, ModelsConfig(backend="embedded"), bus)
    forge = ToolForge(runtime, llm, bus, ForgeConfig(max_attempts=2, max_tokens=200), bubblewrap)
    Proto.llm, Proto.tool_runner = llm, forge
    runtime.start()
    try:
        finished = forge.forge(
            "BRICK", "add_numbers", "return the sum of a and b", ["add_numbers(a=2, b=3) == 5"],
            2, "smoke", threading.Event(),
        )  # fmt: skip
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "forge-smoke.json").write_text(finished.model_dump_json(indent=2))
        assert finished.outcome in ("attached", "gave_up"), finished.error
        assert 1 <= len(finished.attempts) <= 2
        for attempt in finished.attempts:
            assert attempt.passed or attempt.feedback  # every failure says why
        brick = runtime.manager.get("BRICK")
        asked = [i["prompt"] for i in brick.history]
        assert len(asked) == len(finished.attempts) and "add_numbers" in asked[0]
        if len(asked) == 2:  # the second prompt carried the first attempt's failure
            assert finished.attempts[0].feedback[:40] in asked[1]
        if finished.outcome == "attached":
            reply = runtime.invoke("BRICK", "add_numbers", {"a": 2, "b": 3})
            assert isinstance(reply, InvokeResult)
            print("forge smoke: attached;", json.dumps(reply.result))
        else:
            print("forge smoke: gave up;", finished.attempts[-1].feedback[:200])
    finally:
        forge.close()
        llm.close()
        runtime.close(save=False)
        Proto.llm = Proto.tool_runner = None
