"""A client home's CURVE files, attacked: a damaged server key in a copied connection file or a
damaged client keypair gives a typed error with what to do (never a zmq error or a traceback),
and a home tells its own backend's connection file from a remote backend's copy."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from shared_api.connection import ConnectionInfo
from shared_api.errors import UnavailableError
from shared_api.transport import Client, ensure_keypair, home_client_keys, is_foreign, keys_for


def info(home: Path, server_key: str = "") -> ConnectionInfo:
    return ConnectionInfo(
        request_endpoint="tcp://127.0.0.1:1",
        event_endpoint="tcp://127.0.0.1:2",
        key="00" * 32,
        pid=1,
        home=str(home),
        server_key=server_key,
    )


def test_a_damaged_server_key_or_client_keypair_is_a_clear_error(tmp_path: Path) -> None:
    keys = zmq.curve_keypair()
    for bad in ("not-a-key", "\x01" * 40, keys[0].decode()[:-5]):
        with pytest.raises(UnavailableError, match="not a CURVE public key"):
            Client(info(tmp_path, bad), curve_keys=keys)
    with pytest.raises(UnavailableError, match="has none"):
        Client(info(tmp_path, keys[0].decode()))  # no client keys at all
    assert home_client_keys(tmp_path) is None
    (tmp_path / "keys").mkdir(mode=0o700)
    secret = ensure_keypair(tmp_path / "keys", "client")
    assert home_client_keys(tmp_path) == zmq.auth.load_certificate(secret)
    assert keys_for(tmp_path, info(tmp_path)) is None  # no CURVE: no keys presented
    secret.write_text(secret.read_text().replace('secret-key = "', 'secret-key = "###'))
    with pytest.raises(UnavailableError, match="no valid CURVE keypair"):
        keys_for(tmp_path, info(tmp_path, keys[0].decode()))
    secret.write_text("garbage")
    with pytest.raises(UnavailableError, match=r"unreadable .* run `main\.py keys"):
        home_client_keys(tmp_path)


def test_a_home_tells_its_own_backend_from_a_remote_ones_copy(tmp_path: Path) -> None:
    home, other = tmp_path / "laptop", tmp_path / "server"
    assert not is_foreign(home, info(home))  # its own backend (ipc or plain tcp)
    assert is_foreign(home, info(other))  # a copy of another home's file
    remote_key = zmq.curve_keypair()[0].decode()
    assert is_foreign(home, info(home, remote_key))  # same path elsewhere, no server key here
    (home / "keys").mkdir(parents=True, mode=0o700)
    own = ensure_keypair(home / "keys", "server")
    own_key = zmq.auth.load_certificate(own)[0].decode()
    assert not is_foreign(home, info(home, own_key))  # its own backend on CURVE
    assert is_foreign(home, info(home, remote_key))
