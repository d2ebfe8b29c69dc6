"""The mind at work with the capable model, for real: a forge from examples, the ``judge``
command on clear-cut pairs, and a dialogue round. Few, short generations: slow-marked, they
still run in CI (a few minutes on a quiet 2-core machine)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.config import ForgeConfig
from backend.launcher import MAIN, BackendProcess
from backend.sandbox import SecureCodeExecutor
from shared_api import commands as c
from shared_api.replies import DebugHistoryReply, InvokeResult
from tests.conftest import capable_env, capable_forge, capable_models_toml, dialogue_to_the_end
from tests.mind.conftest import degenerate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

#: (name, description, the one example given, unseen calls with their right results)
TOOLS = [
    ("count_vowels", "count the vowels (a, e, i, o, u) in the lower-case text",
     "count_vowels(text='banana') == 3",
     [({"text": "education"}, 5), ({"text": "rhythm"}, 0), ({"text": ""}, 0)]),
    ("reverse_words", "reverse the order of the words in text (words are separated by spaces)",
     "reverse_words(text='a b c') == 'c b a'",
     [({"text": "hello big world"}, "world big hello"), ({"text": "one"}, "one")]),
]  # fmt: skip


def test_forges_two_tools_from_examples_right_on_unseen_inputs(
    tmp_path: Path, capable_model: Path, bubblewrap: SecureCodeExecutor
) -> None:
    config = ForgeConfig(max_attempts=2, max_tokens=160)
    with capable_forge(tmp_path, capable_model, bubblewrap, config) as (runtime, forge):
        for name, description, example, unseen in TOOLS:
            finished = forge.forge(
                "ROBIN", name, description, [example], 2, f"t-{name}", threading.Event()
            )
            assert finished.outcome == "attached", [a.feedback for a in finished.attempts]
            tool = finished.tool
            assert tool is not None and tool.provenance.examples == [example]
            # greedy first: the sampled candidates are written only when the greedy one misses
            assert tool.provenance.winner is not None and tool.provenance.candidates_tried >= 1
            assert tool.provenance.probes, "the author proposed checks of its own"
            print(f"{name} (attempt, candidate) {tool.provenance.winner}:\n{tool.source}")
            for args, expected in unseen:  # attached and callable, in the sandbox
                reply = runtime.invoke("ROBIN", name, args)
                assert isinstance(reply, InvokeResult) and reply.result == expected, (args, reply)


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory, capable_model_path: Path
) -> Iterator[BackendProcess]:
    home = tmp_path_factory.mktemp("mind") / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        capable_models_toml(capable_model_path)
        + "\n[dialogue]\nmax_rounds = 1\nmax_tokens = 80\n\n[memory]\nenabled = false\n"
        + "\n[learning]\ncurator = false\n"
    )
    proc = BackendProcess(home)
    with capable_env():
        proc.start()
    yield proc
    proc.kill()


PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France.",
     "The capital of France is Berlin."),
    ("How many bits are in a byte?", "A byte has 8 bits.", "A byte has 10 bits."),
]  # fmt: skip


@pytest.mark.parametrize(("question", "good", "bad"), PAIRS)
def test_judge_command_picks_the_right_answer_in_both_orders(
    backend: BackendProcess, question: str, good: str, bad: str
) -> None:
    body = {"question": question, "answer_a": bad, "answer_b": good}
    done = subprocess.run(
        [sys.executable, str(MAIN), "call", "--home", str(backend.home), "--timeout", "600",
         "judge", json.dumps(body)],
        capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    verdict = reply["verdict"]
    print(json.dumps(verdict))
    assert reply["kind"] == "judge_reply" and verdict["winner"] == "b"
    assert verdict["margin"] >= verdict["threshold"] and verdict["backend"] == "embedded"
    assert "qwen2.5-coder-1.5b" in verdict["model"]
    # right in both orders: shown first or second, the better answer had the higher probability
    assert [o["order"] for o in verdict["orders"]] == ["ab", "ba"]
    assert all(o["p_b"] > o["p_a"] for o in verdict["orders"])


def test_a_dialogue_round_is_not_degenerate_and_alfred_is_read(backend: BackendProcess) -> None:
    with backend.client(timeout=600) as client:
        status = dialogue_to_the_end(client, "Should a small team write tests first?", 900)
        did = status.dialogue.dialogue_id
        history = client.request(c.DebugHistory(dialogue_id=did))
        assert isinstance(history, DebugHistoryReply)
    assert status.dialogue.status == "finished", status.dialogue
    ran = {s.node: s.record for s in history.steps if s.record}
    for node in ("brick", "robin"):
        text = str(ran[node]["output"])
        print(f"{node}: {text}")
        assert len(text.split()) >= 8 and not degenerate(text), text
    judgement = ran["alfred"]["judgement"]
    print(json.dumps(judgement, default=str)[:1500])
    assert judgement["alfred_parsed"] and not judgement["alfred_error"]  # type: ignore[index]
    assert judgement["criteria"]["alfred_dissonance"] is not None  # type: ignore[index]
    assert judgement["views"].get("winner") in ("BRICK", "ROBIN", "tie")  # type: ignore[index, union-attr]
