"""The learning commands through a real backend subprocess over ZeroMQ: golden data, a real
curation by ALFRED on the embedded model, and fine-tunes that are killed or cancelled mid-
training: the persona keeps its model, and no half-made model is registered or adopted."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.launcher import BackendProcess
from shared_api.errors import RemoteError
from shared_api.events import LearningFinished, LearningProgress, PersonaReply
from shared_api.learning import CRITERIA
from shared_api.replies import (
    AscensionProposal,
    CancelReply,
    CurateReply,
    GoldenList,
    GoldenReply,
    LearningAccepted,
    LearningStatusReply,
)
from shared_api.transport import Client
from tests.conftest import running_backend
from tests.learning.conftest import require_learning

CONFIG = """\
[models]
backend = "embedded"
max_tokens = 48

[learning]
curator_interval_s = 0
steps = 400
batch_size = 2
threads = 2
"""


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackendProcess]:
    home = tmp_path_factory.mktemp("learning-protocol") / "home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text(CONFIG)
    with running_backend(home) as proc:
        yield proc


def _golden(client: Client, n: int) -> None:
    for i in range(n):
        reply = client.call(
            "put_golden",
            {"proto": "BRICK", "id": f"p{i}", "prompt": f"What is {i} plus {i}?",
             "reply": f"{i} plus {i} is {2 * i}. Quod erat demonstrandum."},
        )  # fmt: skip
        assert isinstance(reply, GoldenReply)


def test_golden_data_over_the_protocol(backend: BackendProcess) -> None:
    with backend.client() as client:
        _golden(client, 3)
        listing = client.call("list_golden", {"proto": "BRICK"})
        assert isinstance(listing, GoldenList) and len(listing.examples) == 3
        assert Path(listing.path).is_file()
        client.call("exclude_golden", {"proto": "BRICK", "id": "p0"})
        kept = client.call("list_golden", {"proto": "BRICK", "include_excluded": False})
        assert isinstance(kept, GoldenList) and [g.id for g in kept.examples] == ["p1", "p2"]
        client.call("exclude_golden", {"proto": "BRICK", "id": "p0", "excluded": False})
        status = client.call("learning_status", {"proto": "BRICK"})
        assert isinstance(status, LearningStatusReply) and status.personas[0].golden == 3
        assert status.available and status.engine == "cpu"
        with pytest.raises(RemoteError) as info:
            client.call("put_golden", {"proto": "BRICK", "prompt": "no reply"})
        assert info.value.code == "invalid_value"
        for kind, body, code in (
            ("rollback_model", {"proto": "BRICK"}, "invalid_value"),  # nothing to go back to
            ("adopt_model", {"proto": "BRICK", "candidate": "BRICK-nope"}, "not_found"),
            ("ascend", {"proto": "BRICK", "base": "/nonexistent/model.gguf"}, "not_found"),
            ("start_finetune", {"proto": "NOBODY"}, "not_found"),
        ):
            with pytest.raises(RemoteError) as info:
                client.call(kind, body)
            assert info.value.code == code, (kind, info.value)


@pytest.mark.timeout(300)
def test_alfred_judges_a_real_interaction(backend: BackendProcess) -> None:
    """One real judgement by ALFRED on the embedded SmolLM2. Generated under the rubric's JSON
    schema, it is a full score (all four criteria, an overall) or an explicit error."""
    with backend.client(events=True, timeout=120) as client:
        client.wait_event(lambda e: e.kind == "heartbeat", timeout=10)
        accepted = client.call("ask_persona", {"proto": "ROBIN", "text": "Name a colour."})
        client.wait_event(
            lambda e: isinstance(e, PersonaReply) and e.request_id == accepted.request_id,  # type: ignore[union-attr]
            timeout=120,
        )
        reply = client.call("curate", {"proto": "ROBIN"}, timeout=180)
        assert isinstance(reply, CurateReply) and len(reply.scored) == 1
        score = reply.scored[0]
        assert reply.judge.startswith("ALFRED (embedded:")
        assert score.error is None, score.error
        assert set(score.scores) == set(CRITERIA) and score.overall is not None
        assert all(0.1 <= v <= 1.0 for v in score.scores.values())
        assert score.overall == pytest.approx(sum(score.scores.values()) / 4, abs=1e-3)
        assert set(json.loads(score.raw)) == {*CRITERIA, "reason"}  # what ALFRED answered
        status = client.call("learning_status", {"proto": "ROBIN"})
        assert isinstance(status, LearningStatusReply) and status.personas[0].scored == 1
        described = client.call("describe_proto", {"proto": "ROBIN"})
        assert described.description["learning"]["judged"] == 1  # type: ignore[union-attr]
        assert described.history[-1].get("judge_score") == score.overall  # type: ignore[union-attr]
        # BABS proposes a base for Ascension (only the embedded model exists here)
        proposal = client.call("propose_ascension", {"proto": "BRICK"}, timeout=120)
        assert isinstance(proposal, AscensionProposal) and proposal.options == ["embedded"]
        assert proposal.choice == "embedded" and proposal.reason


def _wait_training(client: Client, job_id: str) -> int:
    event = client.wait_event(
        lambda e: (
            isinstance(e, LearningProgress)
            and e.job.job_id == job_id
            and e.job.phase == "training"
            and e.job.pid is not None
        ),
        timeout=300,
    )
    assert isinstance(event, LearningProgress) and event.job.pid is not None
    return event.job.pid


def _finished(client: Client, job_id: str) -> LearningFinished:
    event = client.wait_event(
        lambda e: isinstance(e, LearningFinished) and e.job.job_id == job_id, timeout=120
    )
    assert isinstance(event, LearningFinished)
    return event


def _unchanged(client: Client, home: Path) -> None:
    status = client.call("learning_status", {"proto": "BRICK"})
    assert isinstance(status, LearningStatusReply)
    summary = status.personas[0]
    assert summary.model is None and summary.candidates == [] and summary.adoptions == []
    assert not any((home / "learning" / "models").glob("*.gguf"))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_trainer_adopts_nothing(backend: BackendProcess) -> None:
    require_learning()
    with backend.client(events=True) as client:
        client.wait_event(lambda e: e.kind == "heartbeat", timeout=10)
        _golden(client, 8)
        accepted = client.call("start_finetune", {"proto": "BRICK"})
        assert isinstance(accepted, LearningAccepted)
        pid = _wait_training(client, accepted.job.job_id)
        os.kill(pid, signal.SIGKILL)  # a crash mid-training
        done = _finished(client, accepted.job.job_id)
        assert done.job.outcome == "failed" and "killed by signal 9" in done.job.error
        _unchanged(client, backend.home)
        # the persona still answers, through its old model
        asked = client.call("ask_persona", {"proto": "BRICK", "text": "Hello?"})
        assert asked.backend == "embedded"  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_cancelled_fine_tune_adopts_nothing(backend: BackendProcess) -> None:
    require_learning()
    with backend.client(events=True) as client:
        client.wait_event(lambda e: e.kind == "heartbeat", timeout=10)
        _golden(client, 8)
        accepted = client.call("start_finetune", {"proto": "BRICK"})
        assert isinstance(accepted, LearningAccepted)
        pid = _wait_training(client, accepted.job.job_id)
        cancelled = client.call("cancel", {"request_id": accepted.job.job_id})
        assert isinstance(cancelled, CancelReply) and cancelled.cancelled
        done = _finished(client, accepted.job.job_id)
        assert done.job.outcome == "cancelled"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the trainer is gone
        _unchanged(client, backend.home)
