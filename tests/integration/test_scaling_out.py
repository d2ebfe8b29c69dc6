"""The README's "Scaling out" on loopback, end to end through the CLI: a backend on tcp with
CURVE, its dialogue checkpoints on the session's real PostgreSQL (a password in the URL) and
its memory on the real S3 (SeaweedFS), and a "laptop" home that only holds the backend's
connection file and its own authorized client key. From there, ``main.py call status`` says
where every engine lives, without a password or a secret, and a dialogue started from there
checkpoints to PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backend.launcher import MAIN, BackendProcess
from tests.integration.test_curve import keys
from tests.servers import S3

SECRET = "hunter2-not-logged"


def call(home: Path, kind: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    argv = [sys.executable, str(MAIN), "call", "--home", str(home), "--timeout", "60", kind]
    done = subprocess.run(
        [*argv, json.dumps(body or {})], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def checkpoints_of(url: str, thread_id: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        try:
            row = conn.execute(
                "SELECT COUNT(*) FROM checkpoints WHERE thread_id = %s", (thread_id,)
            ).fetchone()
        except psycopg.errors.UndefinedTable:  # the store opens with the first dialogue
            return 0
    return int(row[0]) if row else 0


def test_status_from_a_laptop_says_where_each_engine_lives(
    tmp_path: Path, postgres_url: str, s3_server: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():  # the backend's environment only
        monkeypatch.setenv(name, value)
    server = tmp_path / "server"
    server.mkdir()
    user, rest = postgres_url.split("://", 1)[1].split("@", 1)
    checkpoints = f"postgresql://{user}:{SECRET}@{rest}"  # trust auth: the password is unused
    memory = f"{s3_server.fresh_prefix()}/eos"
    (server / "config.toml").write_text(
        '[backend]\ntransport = "tcp"\nip = "127.0.0.1"\ncurve = true\n\n'
        f'[dialogue]\ncheckpoints = "{checkpoints}"\n\n'
        f'[memory]\nuri = "{memory}"\n'
        f'storage_options = {{ aws_endpoint = "{s3_server.endpoint}", allow_http = "true", '
        'aws_region = "us-east-1" }\n'
    )
    keys(server)
    laptop = tmp_path / "laptop"
    keys(server, Path(keys(laptop)["client_public_key_file"]))
    backend = BackendProcess(server)
    backend.start()
    try:
        shutil.copyfile(server / "connection.json", laptop / "connection.json")
        engines = call(laptop, "status")["services"]["engines"]
        where = checkpoints.replace(SECRET, "***")
        assert engines["checkpoints"] == where
        assert engines["memory"] == f"{memory} at {s3_server.endpoint}"
        assert engines["roles"]["ALFRED"]["judge"] == engines["models"]["ALFRED"]
        assert set(engines["roles"]["BRICK"]) == {"chat", "code", "judge"}
        assert engines["models"]["BRICK"]["backend"] == "embedded"
        started = call(laptop, "start_dialogue", {"goal": "Speed or care?", "max_rounds": 1})
        did = started["dialogue"]["dialogue_id"]
        deadline = time.monotonic() + 60
        while checkpoints_of(postgres_url, did) == 0:  # they go to PostgreSQL
            assert time.monotonic() < deadline, "no checkpoint reached PostgreSQL"
            time.sleep(0.2)
    finally:
        backend.stop()
    log = (server / "backend.log").read_text()
    secrets = (SECRET, os.environ["AWS_SECRET_ACCESS_KEY"])
    assert not any(s in log or s in json.dumps(engines) for s in secrets)
