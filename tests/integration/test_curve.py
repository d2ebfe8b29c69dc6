"""A backend on tcp with ZeroMQ CURVE (the setup for a backend on another machine), tested
over 127.0.0.1: only authorized client keys get replies and events, and the connection file
carries the server's public key, never its secret."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from backend.launcher import MAIN
from shared_api.errors import UnavailableError
from shared_api.events import Heartbeat
from shared_api.replies import Pong, ProtoUpdated
from shared_api.transport import Client, ensure_keypair, load_keypair
from tests.integration.conftest import Spawn

CURVE_CONFIG = '[backend]\ntransport = "tcp"\nip = "127.0.0.1"\ncurve = true\n'


def keys(home: Path, *authorize: Path) -> dict[str, str]:
    argv = [sys.executable, str(MAIN), "keys", "--home", str(home)]
    if authorize:
        argv += ["--authorize", *map(str, authorize)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(done.stdout))


@pytest.fixture
def curve_home(home: Path) -> Path:
    home.mkdir(parents=True)
    (home / "config.toml").write_text(CURVE_CONFIG)
    return home


def silent(sock: zmq.Socket[bytes], seconds: float) -> bool:
    return not sock.poll(int(seconds * 1000))


def test_authorized_keys_get_commands_and_events(curve_home: Path, spawn: Spawn) -> None:
    made = keys(curve_home)  # the home's own client key is authorized
    # a client on another "machine": its own home and key, authorized on the backend's side
    # (the backend reads its authorized keys when it starts)
    remote = curve_home.parent / "remote"
    remote_keys = keys(remote)
    keys(curve_home, Path(remote_keys["client_public_key_file"]))
    backend = spawn()
    assert backend.info is not None and backend.info.request_endpoint.startswith("tcp://")
    text = (curve_home / "connection.json").read_text()
    server_public, server_secret = load_keypair(curve_home / "keys" / "server.key_secret")
    assert backend.info.server_key == server_public.decode()
    assert server_secret.decode() not in text  # the connection file holds no secret
    assert Path(made["server_public_key_file"]).exists()
    for home in (curve_home, remote):  # the secrets are the owner's only
        for secret in (home / "keys").glob("*.key_secret"):
            assert secret.stat().st_mode & 0o777 == 0o600, secret
        assert (home / "keys" / "client.key_secret").exists()
    with backend.client(events=True) as client:
        assert isinstance(client.wait_event(lambda e: isinstance(e, Heartbeat)), Heartbeat)
        assert isinstance(client.call("ping", {}), Pong)
        reply = client.call("set_state", {"proto": "BRICK", "path": "curve", "value": 1})
        assert isinstance(reply, ProtoUpdated)
        changed = client.wait_event(lambda e: getattr(e, "proto", None) == "BRICK")
        assert changed.kind == "proto_changed"
    (remote / "connection.json").write_text(text)  # copied over to the client machine
    done = subprocess.run(
        [sys.executable, str(MAIN), "call", "--home", str(remote), "ping"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["kind"] == "pong", done


def test_unknown_key_and_no_key_get_nothing(curve_home: Path, spawn: Spawn) -> None:
    keys(curve_home)
    backend = spawn()
    info = backend.info
    assert info is not None
    stranger = ensure_keypair(curve_home.parent, "stranger")  # never authorized
    with (
        Client(info, timeout=20.0, events=True, curve_keys=load_keypair(stranger)) as client,
        pytest.raises(UnavailableError, match="refused this home's CURVE key") as refused,
    ):
        client.call("ping", {})  # told at once, not after the 20 s deadline
    assert "--authorize" in refused.value.message
    wrong = info.model_copy(update={"server_key": zmq.curve_keypair()[0].decode()})
    with (
        Client(wrong, timeout=20.0, curve_keys=load_keypair(stranger)) as client,
        pytest.raises(UnavailableError, match="holds another server key"),
    ):
        client.call("ping", {})  # a stale connection file: its server key is another's
    outsider = curve_home.parent / "outsider"  # `call` from a home with an unknown key
    keys(outsider)
    (outsider / "connection.json").write_text((curve_home / "connection.json").read_text())
    done = subprocess.run(
        [sys.executable, str(MAIN), "call", "--home", str(outsider), "--timeout", "60", "ping"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3 and "refused this home's CURVE key" in done.stderr, done
    assert "Traceback" not in done.stderr
    context = zmq.Context.instance()
    plain = context.socket(zmq.SUB)  # no CURVE at all
    plain.setsockopt(zmq.LINGER, 0)
    plain.setsockopt(zmq.SUBSCRIBE, b"")
    plain.connect(info.event_endpoint)
    unknown = context.socket(zmq.SUB)  # CURVE with a key the backend does not know
    unknown.setsockopt(zmq.LINGER, 0)
    public, secret = load_keypair(stranger)
    unknown.setsockopt(zmq.CURVE_SERVERKEY, info.server_key.encode())
    unknown.setsockopt(zmq.CURVE_PUBLICKEY, public)
    unknown.setsockopt(zmq.CURVE_SECRETKEY, secret)
    unknown.setsockopt(zmq.SUBSCRIBE, b"")
    unknown.connect(info.event_endpoint)
    try:
        with backend.client(events=True) as own:  # heartbeats are flowing meanwhile
            own.wait_event(lambda e: isinstance(e, Heartbeat))
            started = time.monotonic()
            own.wait_event(lambda e: isinstance(e, Heartbeat))
        assert silent(plain, 2.5 - (time.monotonic() - started)) and silent(unknown, 0.1)
    finally:
        plain.close(0)
        unknown.close(0)
