"""One dialogue round with the capable default model (Qwen2.5-Coder-1.5B) through a real
backend subprocess: slow, so one round of short turns. BRICK's and ROBIN's turns must be
sensible and must not loop (SmolLM2's turns repeat one sentence until the token limit)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from backend.llm.catalog import QWEN_CODER_1_5B
from backend.llm.degenerate import is_degenerate
from shared_api import commands as c
from shared_api.replies import DebugHistoryReply, ProtoDescription
from tests.conftest import dialogue_to_the_end
from tests.dialogue.conftest import Spawn

GOAL = "Is it better to walk or to cycle to work?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three turns of a 1.5B model on 2 shared cores
def test_a_dialogue_round_with_the_capable_model_does_not_loop(
    capable_model: Path, spawn: Spawn, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'[models]\nollama_host = "http://127.0.0.1:{free_port()}"\n'  # nobody: embedded
        "[dialogue]\nmax_rounds = 1\nmax_tokens = 96\n"
        "[memory]\nenabled = false\n"
    )
    backend = spawn()
    with backend.client(timeout=60) as client:
        status = dialogue_to_the_end(client, GOAL, 1100)
        did = status.dialogue.dialogue_id
        assert status.dialogue.status == "finished", status.dialogue
        history = client.request(c.DebugHistory(dialogue_id=did))
        assert isinstance(history, DebugHistoryReply)
        described = {
            name: client.call("describe_proto", {"proto": name}) for name in ("BRICK", "ROBIN")
        }
    ran = {s.node: s.record for s in history.steps if s.record}
    for node in ("brick", "robin"):
        record = ran[node]
        output = str(record["output"])
        assert record["model"] == f"embedded:{QWEN_CODER_1_5B.model_id}"
        assert not is_degenerate(output), output
        assert len(output.split()) >= 10, output
        words = output.lower()
        assert "walk" in words or "cycl" in words or "bik" in words, output
    for name, description in described.items():
        assert isinstance(description, ProtoDescription)
        turns = [i for i in description.history if "walk or to cycle" in str(i.get("prompt"))]
        assert turns, name
        for interaction in turns:  # the raw turn did not loop either: nothing was trimmed
            assert not interaction.get("loop_guard", {}).get("degenerate"), interaction
