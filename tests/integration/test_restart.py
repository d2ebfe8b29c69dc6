"""Restarting after a crash with a long journal: the backend serves again, and saves the
image after ``autosave_records`` records so the journal never grows long.

Real ``main.py backend`` processes on one home, killed with SIGKILL.
"""

from __future__ import annotations

import time
from pathlib import Path

from shared_api.replies import StatusReply
from tests.integration.conftest import Spawn

#: More acknowledged records than the internal mailbox's high-water mark (1,000 messages):
#: before the fix, replay published one event per record into it and hung at ~1,500.
MANY = 2_500


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text)


def test_restart_after_crash_with_thousands_of_unsaved_records(home: Path, spawn: Spawn) -> None:
    write_config(home, "[backend]\nautosave_interval_s = 0\nautosave_records = 0\n")
    backend = spawn()
    with backend.client(timeout=30) as client:
        for i in range(MANY):
            client.call("set_state", {"proto": "BRICK", "path": f"bulk.k{i}", "value": i})
        before = client.call("status", {})
        assert isinstance(before, StatusReply)
        assert before.services["journal"]["seq"] - before.image.journal_seq >= MANY  # unsaved
    backend.kill()

    started = time.monotonic()
    again = spawn()  # raises if it does not serve within the launcher's 60 s
    took = time.monotonic() - started
    with again.client(timeout=30) as client:
        status = client.call("status", {})
        assert isinstance(status, StatusReply)
        assert status.image.replayed_records >= MANY, status.image
        bulk = client.call("get_state", {"proto": "BRICK", "path": "bulk"}).value  # type: ignore[attr-defined]
        assert bulk == {f"k{i}": i for i in range(MANY)}
        client.call("set_state", {"proto": "BRICK", "path": "after", "value": True})
    print(f"restart with {MANY} unsaved records served after {took:.1f}s")


def test_image_is_saved_after_autosave_records(home: Path, spawn: Spawn) -> None:
    write_config(home, "[backend]\nautosave_interval_s = 0\nautosave_records = 200\n")
    backend = spawn()
    with backend.client(timeout=30) as client:
        for i in range(250):
            client.call("set_state", {"proto": "ROBIN", "path": f"n.k{i}", "value": i})
        deadline = time.monotonic() + 30
        while True:
            status = client.call("status", {})
            assert isinstance(status, StatusReply)
            if status.image.journal_seq >= 200:
                break
            assert time.monotonic() < deadline, f"no image saved after 200 records: {status}"
            time.sleep(0.1)
        assert status.image.generation >= 2  # generation 1 is the first start's
    backend.kill()
    again = spawn()
    with again.client(timeout=30) as client:
        status = client.call("status", {})
        assert isinstance(status, StatusReply)
        assert status.image.replayed_records < 200, status.image  # not the whole journal
        n = client.call("get_state", {"proto": "ROBIN", "path": "n"}).value  # type: ignore[attr-defined]
        assert n == {f"k{i}": i for i in range(250)}
