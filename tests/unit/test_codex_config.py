from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.codex import PERSONAS_DIR, load_codex, load_personas
from backend.config import BackendConfig, load_config
from shared_api.errors import CodexInvalidError, ConfigInvalidError


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
        ("[backend]\nip = '0.0.0.0'\n", "loopback"),
        ("[backend]\nworkers = 0\n", "backend.workers"),
        ("[backend]\nbogus = 1\n", "backend.bogus"),
        ("[backend\n", "not valid TOML"),
    ]:
        cfg.write_text(text)
        with pytest.raises(ConfigInvalidError, match=match):
            load_config(cfg)
    cfg.write_text("[backend]\nip = '0.0.0.0'\nallow_remote = true\n")
    assert load_config(cfg).backend.ip == "0.0.0.0"
