"""Which model serves which role, and why: the rules of backend/llm/roles.py, and model
references as config.toml writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import ModelsConfig, load_config
from backend.llm.catalog import MODEL_ENV, QWEN_CODER_1_5B, parse_ref
from backend.llm.roles import ROLES, choose
from shared_api.errors import ConfigInvalidError, NotFoundError

HOST = "http://127.0.0.1:11434"


def unreachable() -> tuple[set[str], str | None]:
    return set(), "connection refused"


def installed(*names: str):  # type: ignore[no-untyped-def]
    return lambda: (set(names), None)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models cache holding a file where the capable model goes (only its presence counts
    for choosing; loading checks its sha256)."""
    monkeypatch.setenv("ENTROPIC_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv(MODEL_ENV, raising=False)
    (tmp_path / QWEN_CODER_1_5B.file).write_bytes(b"GGUF")
    return tmp_path


def config(text: str, tmp_path: Path) -> ModelsConfig:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path).models


def test_by_default_every_role_uses_the_capable_model(cache: Path) -> None:
    for role in ROLES:
        chosen, ref, rule = choose(ModelsConfig(), "BRICK", "phi3:mini", role, unreachable, HOST)
        assert (chosen.backend, chosen.model, rule) == (
            "embedded",
            QWEN_CODER_1_5B.model_id,
            "default",
        )
        assert ref is not None and ref.path == cache / QWEN_CODER_1_5B.file
        assert (
            chosen.reason.startswith(f"{role}: ")
            and "the default model (built in)" in chosen.reason
        )
        assert f"Ollama unreachable at {HOST}" in chosen.reason


def test_until_it_is_downloaded_the_tiny_model_stands_in(cache: Path) -> None:
    (cache / QWEN_CODER_1_5B.file).unlink()
    chosen, _, _ = choose(ModelsConfig(), "BRICK", "phi3:mini", "chat", unreachable, HOST)
    assert chosen.model == "smollm2-135m-instruct"
    assert "not downloaded yet (run `main.py models fetch`)" in chosen.reason


def test_the_run_default_beats_config_default(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelsConfig(default="qwen2.5-coder-1.5b")
    monkeypatch.setenv(MODEL_ENV, "tiny")
    chosen, _, _ = choose(cfg, "ROBIN", "llama3.1:8b", "chat", unreachable, HOST)
    assert chosen.model == "smollm2-135m-instruct" and f"${MODEL_ENV}" in chosen.reason


def test_roles_and_persona_overrides(cache: Path, tmp_path: Path) -> None:
    cfg = config(
        '[models]\ndefault = "tiny"\n'
        '[models.roles]\ncode = "qwen2.5-coder-1.5b"\njudge = "ollama:qwen2.5:7b"\n'
        '[models.personas.ALFRED]\njudge = "~/models/judge.gguf"\n'
        '[models.personas.ROBIN]\nmodel = "llama3.1:8b"\n',
        tmp_path,
    )

    def pick(persona: str, role: str) -> tuple[str, str, str]:
        c, _, _ = choose(cfg, persona, "phi3:mini", role, unreachable, HOST)  # type: ignore[arg-type]
        return c.backend, c.model, c.reason

    assert pick("BRICK", "chat")[:2] == ("embedded", "smollm2-135m-instruct")
    assert pick("BRICK", "code")[:2] == ("embedded", "qwen2.5-coder-1.5b-instruct")
    assert pick("BRICK", "judge") == (
        "ollama",
        "qwen2.5:7b",
        "judge: [models.roles] judge = ollama:qwen2.5:7b",
    )
    backend, model, reason = pick("ALFRED", "judge")
    assert (backend, model) == ("embedded", "judge") and "[models.personas.ALFRED] judge" in reason
    assert pick("ALFRED", "chat")[:2] == ("embedded", "smollm2-135m-instruct")
    for role in ROLES:  # a persona's own model serves all its roles
        assert pick("ROBIN", role)[:2] == ("ollama", "llama3.1:8b")


def test_the_codex_model_on_ollama_when_installed_unless_forced_embedded(cache: Path) -> None:
    chosen, ref, rule = choose(ModelsConfig(), "BRICK", "phi3:mini", "chat", installed("phi3:mini"), HOST)  # fmt: skip
    assert (chosen.backend, chosen.model, ref, rule) == ("ollama", "phi3:mini", None, "codex")
    missing, _, _ = choose(ModelsConfig(), "BRICK", "phi3:mini", "chat", installed("other"), HOST)
    assert missing.backend == "embedded" and "ollama pull phi3:mini" in missing.reason
    forced = ModelsConfig(backend="embedded", roles={"chat": "ollama:phi3:mini"})  # type: ignore[arg-type]
    chosen, _, _ = choose(forced, "BRICK", "phi3:mini", "chat", installed("phi3:mini"), HOST)
    assert chosen.backend == "embedded" and "skipped (backend = embedded)" in chosen.reason
    always = ModelsConfig(backend="ollama")
    chosen, _, _ = choose(always, "BRICK", "phi3:mini", "code", unreachable, HOST)
    assert (chosen.backend, chosen.model) == ("ollama", "phi3:mini")


def test_model_references() -> None:
    assert parse_ref("tiny").model == parse_ref("SmolLM2-135M").model == "smollm2-135m-instruct"
    assert (
        parse_ref("ollama:qwen2.5:7b").kind == "ollama" and parse_ref("qwen2.5:7b").kind == "ollama"
    )
    remote = parse_ref("openai:gpt-4o-mini")
    assert (remote.kind, remote.model, remote.path) == ("openai", "gpt-4o-mini", None)
    path = parse_ref("/opt/m/My-Model.Q4.gguf", "a" * 64)
    assert (path.kind, path.model, path.sha256) == ("embedded", "my-model.q4", "a" * 64)
    for bad in ("", "ollama:", "openai:  "):
        with pytest.raises(NotFoundError):
            parse_ref(bad)


def test_config_refuses_a_persona_entry_that_names_no_model(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalidError, match="names no model"):
        config("[models.personas.BRICK]\n", tmp_path)
    with pytest.raises(ConfigInvalidError, match=r"roles\.review"):
        config('[models.roles]\nreview = "tiny"\n', tmp_path)
    assert config("[models]\nn_threads = 0\n", tmp_path).n_threads == 0


def test_a_role_on_an_openai_endpoint_must_name_a_declared_server(
    cache: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigInvalidError, match=r"roles\.code.*not declare"):
        config('[models.roles]\ncode = "openai:gpu/qwen"\n', tmp_path)
    with pytest.raises(ConfigInvalidError, match=r"personas\.BRICK\.judge"):
        config('[models.personas.BRICK]\njudge = "openai:nowhere"\n', tmp_path)
    models = config(
        '[models.roles]\ncode = "openai:gpu/qwen-coder"\n'
        '[models.openai.gpu]\nbase_url = "http://127.0.0.1:9/v1"\n',
        tmp_path,
    )
    _chosen, ref, rule = choose(models, "BRICK", "phi3:mini", "code", unreachable, HOST)
    assert ref is not None and ref.kind == "openai" and rule == "config"
    assert ref.text == "openai:gpu/qwen-coder"
