"""The live state always equals the state a journal replay rebuilds, whatever runs at once.

A method edits its Proto's state in place and the runtime journals the result when it
returns; a method that cannot be journaled (a non-JSON value in its state) is undone. Undoing
it must not undo what other clients wrote and were acknowledged for meanwhile. Real backend
processes: the live state is read, the backend is killed with SIGKILL, and the restarted one
(image + journal replay) must hold exactly the same state and version.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from backend.launcher import BackendProcess
from shared_api.errors import ErrorCode, ErrorReply
from shared_api.replies import InvokeResult, ProtoDescription, StateReply
from shared_api.transport import Client
from tests.integration.conftest import Spawn

FAIL_LATE = """
def fail_late(self):
    import time
    self.state["mine"] = 1
    deadline = time.monotonic() + 30
    while "theirs" not in self.state and time.monotonic() < deadline:
        time.sleep(0.01)
    self.state["junk"] = object()  # not JSON: the method fails and its edits are undone
"""

#: The randomized workload's methods: one that succeeds, one that fails and is undone, one
#: that raises after editing (its edits are kept and journaled).
BUMP = """
def bump(self, key, pause):
    import time
    value = self.state.get(key, 0)
    time.sleep(pause)
    self.state[key] = (value if isinstance(value, int) else 0) + 1
    return self.state[key]
"""
SPOIL = """
def spoil(self, key, pause):
    import time
    self.state[key] = "spoiled"
    time.sleep(pause)
    self.state["junk"] = {1, 2}
"""
RAISE = """
def raise_after(self, key, pause):
    import time
    self.state[key] = "raised"
    time.sleep(pause)
    raise ValueError("on purpose")
"""
KEYS = [f"k{i}" for i in range(6)]


def describe(client: Client, proto: str) -> ProtoDescription:
    reply = client.call("describe_proto", {"proto": proto})
    assert isinstance(reply, ProtoDescription)
    return reply


def replayed(spawn: Spawn, backend: BackendProcess, proto: str) -> ProtoDescription:
    """Kill ``backend`` with SIGKILL, start it again, and describe ``proto`` as replayed."""
    backend.kill()
    with spawn().client(timeout=30) as client:
        return describe(client, proto)


def test_set_state_during_a_failing_method_survives_its_rollback(spawn: Spawn) -> None:
    backend = spawn()
    with backend.client(timeout=30) as client:
        client.call("define_method", {"proto": "BRICK", "name": "fail_late", "source": FAIL_LATE})
    outcome: list[Any] = []

    def run_method() -> None:
        with backend.client(timeout=60) as own:
            outcome.append(own.call_raw("invoke", {"proto": "BRICK", "method": "fail_late"}))

    runner = threading.Thread(target=run_method)
    runner.start()
    with backend.client(timeout=30) as client:
        deadline = time.monotonic() + 30
        while "mine" not in describe(client, "BRICK").state:  # the method is running
            assert time.monotonic() < deadline, "the method never started"
            time.sleep(0.01)
        client.call("set_state", {"proto": "BRICK", "path": "theirs", "value": 42})
        runner.join(timeout=60)
        assert len(outcome) == 1
        reply = outcome[0]
        assert isinstance(reply, ErrorReply) and reply.code == ErrorCode.METHOD_FAILED, reply
        assert "rolled back" in reply.message
        got = client.call("get_state", {"proto": "BRICK", "path": "theirs"})
        assert isinstance(got, StateReply) and got.value == 42  # acknowledged: never lost
        live = describe(client, "BRICK")
    assert "mine" not in live.state and "junk" not in live.state  # its own edits: undone
    again = replayed(spawn, backend, "BRICK")
    assert (again.state, again.version) == (live.state, live.version)


def test_live_state_equals_replay_after_a_random_concurrent_workload(spawn: Spawn) -> None:
    seed = random.randrange(2**32)
    backend = spawn()
    with backend.client(timeout=30) as client:
        for name, source in (("bump", BUMP), ("spoil", SPOIL), ("raise_after", RAISE)):
            client.call("define_method", {"proto": "BRICK", "name": name, "source": source})
    counts: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        rng = random.Random(seed + n)
        with backend.client(timeout=60) as own:
            for _ in range(40):
                action = rng.choice(["set", "set", "bump", "spoil", "raise_after"])
                key = rng.choice(KEYS)
                if action == "set":
                    body: dict[str, Any] = {"proto": "BRICK", "path": key, "value": rng.random()}
                    reply = own.call_raw("set_state", body)
                    ok = reply.kind == "proto_updated"
                else:
                    args = {"key": key, "pause": rng.choice([0.0, 0.005, 0.02])}
                    reply = own.call_raw(
                        "invoke", {"proto": "BRICK", "method": action, "args": args}
                    )
                    # Any method can fail (a spoil beside it left a set in the state), and a
                    # spoil can succeed (another's rollback discarded its set first): only
                    # a typed method failure or a result is right, never an internal error.
                    failed = isinstance(reply, ErrorReply) and reply.code == "method_failed"
                    ok = failed or isinstance(reply, InvokeResult)
                with lock:
                    counts[action] = counts.get(action, 0) + 1
                    if not ok:
                        errors.append(f"{action}: {reply}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, f"seed {seed}: {errors[:5]}"
    with backend.client(timeout=30) as client:
        live = describe(client, "BRICK")
    assert "junk" not in live.state  # a value that cannot be journaled never stays live
    again = replayed(spawn, backend, "BRICK")
    assert again.state == live.state, f"seed {seed}: live and replayed state differ ({counts})"
    assert again.version == live.version, f"seed {seed}"
