from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from backend.codex import PERSONAS_DIR, load_codex, load_personas
from backend.config import BackendConfig, load_config
from shared_api.errors import CodexInvalidError, ConfigInvalidError, UnavailableError


def test_the_four_personas_load() -> None:
    codices = load_personas()
    assert set(codices) == {"BRICK", "ROBIN", "BABS", "ALFRED"}
    for codex in codices.values():
        assert codex.system_prompt and codex.core_principles and codex.default_model


def _write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_bad_codex_names_file_and_field(tmp_path: Path) -> None:
    good = json.loads((PERSONAS_DIR / "BRICK.json").read_text())
    del good["role"]
    path = _write(tmp_path, "BRICK", good)
    with pytest.raises(CodexInvalidError) as err:
        load_codex(path)
    assert str(path) in err.value.message and "`role`" in err.value.message
    assert err.value.detail["field"] == "role"


def test_codex_name_must_match_file(tmp_path: Path) -> None:
    good = json.loads((PERSONAS_DIR / "BRICK.json").read_text())
    with pytest.raises(CodexInvalidError, match="`name`"):
        load_codex(_write(tmp_path, "ROBIN", good))


def test_unreadable_codex(tmp_path: Path) -> None:
    with pytest.raises(CodexInvalidError, match="cannot read"):
        load_codex(_write(tmp_path, "BRICK", "{not json"))
    with pytest.raises(CodexInvalidError, match="No persona"):
        load_personas(tmp_path / "empty")


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    assert load_config(tmp_path / "missing.toml").backend == BackendConfig()
    cfg = tmp_path / "config.toml"
    cfg.write_text("[backend]\nautosave_interval_s = 5\ntransport = 'ipc'\n")
    backend = load_config(cfg).backend
    assert backend.autosave_interval_s == 5
    assert backend.endpoint_specs(tmp_path)[0] == f"ipc://{tmp_path / 'requests.sock'}"
    for text, match in [
        ("[backend]\ntransport = 'tcp'\nip = '0.0.0.0'\n", "loopback"),
        ("[backend]\nworkers = 0\n", "backend.workers"),
        ("[backend]\nbogus = 1\n", "backend.bogus"),
        ("[backend\n", "not valid TOML"),
    ]:
        cfg.write_text(text)
        with pytest.raises(ConfigInvalidError, match=match):
            load_config(cfg)
    cfg.write_text("[backend]\nip = '0.0.0.0'\nallow_remote = true\n")
    assert load_config(cfg).backend.ip == "0.0.0.0"


def test_long_home_puts_sockets_in_a_private_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Unix socket path holds 107 bytes: a deep home's sockets go to a private per-user
    directory instead, named for the home; a runtime dir that is not private is refused."""
    from backend.home import Home

    runtime = tmp_path / "xdg"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    deep = Home(tmp_path / ("d" * 60) / ("e" * 60)).ensure()
    where, prefix = deep.socket_dir()
    assert where == runtime / f"entropic-{os.getuid()}" and len(prefix) == 17
    assert stat.S_IMODE(where.stat().st_mode) == 0o700
    assert Home(tmp_path).ensure().socket_dir() == (tmp_path / "run", "")
    where.chmod(0o755)
    with pytest.raises(UnavailableError, match="not a private directory"):
        deep.socket_dir()


def test_binding_beyond_loopback_needs_curve(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[backend]\ntransport = 'tcp'\nip = '0.0.0.0'\nallow_remote = true\n")
    with pytest.raises(ConfigInvalidError, match="curve = true"):
        load_config(cfg)
    cfg.write_text(
        "[backend]\ntransport = 'tcp'\nip = '0.0.0.0'\nallow_remote = true\ncurve = true\n"
    )
    assert load_config(cfg).backend.curve
