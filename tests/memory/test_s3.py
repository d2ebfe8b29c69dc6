"""The memory on S3-compatible object storage: a real SeaweedFS (``tests/servers.py``), a real
LanceDB and MiniLM. The guarantees of local disk hold there too: ingestion is idempotent and
crash-safe, and a restart (even on another machine: another home) finds everything.
Credentials come only from the AWS_* environment."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from backend.memory.config import MemoryConfig
from backend.memory.location import S3Location
from backend.memory.store import MemoryStore
from tests.memory.conftest import OpenMemory
from tests.memory.test_crash import book
from tests.servers import S3

ROOT = Path(__file__).resolve().parents[2]

KILLED_INGEST = """
import json, os, signal, sys
from pathlib import Path
from backend.bus import EventBus
from backend.memory.config import MemoryConfig
from backend.memory.service import MemoryService
from backend.memory.store import MemoryStore

root, config, path = sys.argv[1:]
# chunks written, commit marker not yet: the worst moment for a crash
MemoryStore._commit_document = lambda self, doc: os.kill(os.getpid(), signal.SIGKILL)
svc = MemoryService(Path(root), MemoryConfig(**json.loads(config)), EventBus())
svc.start()
assert svc.wait_ready(90), svc.error
svc.ingest(path, "BRICK")
"""


@pytest.fixture
def s3_config(s3_server: S3, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh bucket; the credentials in the environment only."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return {
        "uri": f"{s3_server.fresh_prefix()}/team/memory",
        "storage_options": {
            "aws_endpoint": s3_server.endpoint,
            "allow_http": "true",
            "aws_region": "us-east-1",
        },
    }


def test_ingest_is_idempotent_and_a_restart_elsewhere_finds_everything(
    open_memory: OpenMemory,
    docs: dict[str, Path],
    s3_config: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    first = open_memory(tmp_path / "home-a" / "memory", **s3_config).service
    assert first.where == f"{s3_config['uri']} at {s3_config['storage_options']['aws_endpoint']}"
    outcome = first.ingest(str(docs["falcon.md"]), "BRICK")
    assert outcome.status == "ingested" and outcome.chunks >= 2
    assert first.ingest(str(docs["falcon.md"]), "ROBIN").status == "duplicate"
    first.ingest(str(docs["garden.txt"]), "ROBIN")
    rows = first.stats().rows
    assert rows["documents"] == 2
    first.close()
    assert not (tmp_path / "home-a" / "memory" / "lance").exists()  # nothing local
    # another home (another machine) pointed at the same URI
    second = open_memory(tmp_path / "home-b" / "memory", **s3_config).service
    assert second.stats().rows == rows
    hit = second.search("When does Falcon launch?", 1).hits[0]
    assert hit.name == "falcon.md" and "14th of March" in hit.text
    assert second.ingest(str(docs["garden.txt"]), "BABS").status == "duplicate"
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert secret not in caplog.text and secret not in json.dumps(second.stats().model_dump())


def test_a_kill_mid_ingest_is_repaired(
    open_memory: OpenMemory, s3_config: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "home" / "memory"
    path = book(tmp_path, "alpha", 30)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_INGEST, str(root), json.dumps(s3_config), str(path)],
        cwd=ROOT,
        capture_output=True,
        timeout=180,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    location = S3Location(s3_config["uri"], s3_config["storage_options"])
    raw = MemoryStore(root, location)  # read raw, before any repair
    assert raw.tables["documents"].count_rows() == 0 and raw.tables["chunks"].count_rows() > 0
    landed = raw.tables["chunks"].count_rows()
    svc = open_memory(root, **s3_config).service  # opening repairs
    assert svc.stats().rows["chunks"] == 0
    again = svc.ingest(str(path), "BRICK")
    assert again.status == "ingested" and again.chunks == landed
    assert svc.search("clerk number 5 catalogued", 1).hits[0].name == "alpha.txt"


def test_credentials_never_go_in_the_config() -> None:
    with pytest.raises(ValidationError, match="AWS_SECRET_ACCESS_KEY"):
        MemoryConfig(uri="s3://b/p", storage_options={"aws_secret_access_key": "x"})
    with pytest.raises(ValidationError):
        MemoryConfig(uri="https://example.com/bucket")
