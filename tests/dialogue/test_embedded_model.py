"""One end-to-end dialogue with the real embedded model (SmolLM2-135M on llama.cpp, CPU),
through a real backend subprocess: few, short turns. It asserts robust facts only (the small
model does not follow ALFRED's format reliably: the explicit criteria judge then)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from shared_api import commands as c
from shared_api.replies import DebugHistoryReply
from tests.conftest import dialogue_to_the_end
from tests.dialogue.conftest import Spawn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(240)  # real tokens on 2 shared cores
def test_a_short_dialogue_with_the_embedded_model(spawn: Spawn, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'[models]\nollama_host = "http://127.0.0.1:{free_port()}"\n'  # nobody: embedded
        "[dialogue]\nmax_rounds = 1\nmax_tokens = 24\n"
        "[memory]\nenabled = false\n"  # the dialogue is the subject; recall would add tokens
    )
    backend = spawn()
    with backend.client(timeout=60) as client:
        status = dialogue_to_the_end(
            client, "Is it better to walk or to cycle to work?", 200, poll_s=0.2
        )
        did = status.dialogue.dialogue_id
        assert status.dialogue.status == "finished", status.dialogue
        assert status.dialogue.reason in ("converged", "unresolved") and status.dialogue.round == 1
        history = client.request(c.DebugHistory(dialogue_id=did))
        assert isinstance(history, DebugHistoryReply)
    ran = {s.node: s.record for s in history.steps if s.record}
    assert {"brick", "robin", "alfred"} <= set(ran)
    for node in ("brick", "robin", "alfred"):
        record = ran[node]
        assert record["model"] == "embedded:smollm2-135m-instruct"
        assert "walk or to cycle" in record["prompt"] and record["output"]
        assert record["timings"]["tokens_per_s"] > 0 and record["usage"]["completion_tokens"] > 0  # type: ignore[index, operator]
    judgement = ran["alfred"]["judgement"]
    # ALFRED's verdict is schema-bound JSON: either read, or the reason why not, never silence
    assert judgement["alfred_parsed"] or judgement["alfred_error"]  # type: ignore[index]
    assert 0.0 <= judgement["dissonance"] <= 1.0 and set(judgement["criteria"]) >= {  # type: ignore[index, call-overload]
        "overlap",
        "conflict",
    }
