"""The capable default model (Qwen2.5-Coder-1.5B) answering as a persona, through a real
backend subprocess: slow (a 1.1 GB model on 2 shared cores), so one short reply; it asserts
robust facts about the answer, not its wording."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from backend.launcher import BackendProcess
from backend.llm.catalog import QWEN_CODER_1_5B
from backend.llm.degenerate import is_degenerate
from shared_api.commands import AskPersona, ModelStatus
from shared_api.events import PersonaReply
from shared_api.replies import AskAccepted, ModelStatusReply

QUESTION = (
    "In two sentences: why should backups not be kept on the same disk as the data they protect?"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.timeout(900)  # real tokens of a 1.5B model on 2 shared cores
def test_a_persona_reply_from_the_capable_model_makes_sense(
    capable_model: Path, home: Path
) -> None:
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'[models]\nollama_host = "http://127.0.0.1:{free_port()}"\nmax_tokens = 72\n'
        "[memory]\nenabled = false\n"  # the reply is the subject; recall would add tokens
    )
    proc = BackendProcess(home)
    proc.start()
    try:
        with proc.client(events=True, timeout=60) as client:
            client.wait_event(lambda e: e.kind == "heartbeat")
            accepted = client.request(AskPersona(proto="BRICK", text=QUESTION))
            assert isinstance(accepted, AskAccepted)
            assert (accepted.backend, accepted.model) == ("embedded", QWEN_CODER_1_5B.model_id)
            reply = client.wait_event(
                lambda e: e.kind == "persona_reply" and e.request_id == accepted.request_id,
                timeout=800,
            )
            assert isinstance(reply, PersonaReply) and reply.error is None, reply
            status = client.request(ModelStatus())
            assert isinstance(status, ModelStatusReply)
    finally:
        proc.stop()
    text = reply.text.lower()
    assert not reply.degenerate and not is_degenerate(reply.text), reply.text
    assert len(text.split()) >= 10 and "disk" in text, reply.text
    assert any(w in text for w in ("fail", "lost", "lose", "loss", "crash", "damage", "corrupt")), (
        reply.text
    )
    assert status.resident == f"embedded:{QWEN_CODER_1_5B.model_id}"
    assert all(
        sel.model == QWEN_CODER_1_5B.model_id for sel in status.roles["ALFRED"].values()
    )  # one model for every role: only one is ever resident
    assert "$ENTROPIC_MODEL" in status.roles["ALFRED"]["judge"].reason
