"""``main.py models`` and ``--model``, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from backend.launcher import MAIN
from backend.llm.catalog import MODEL_ENV


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MAIN), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != MODEL_ENV} | (env or {}),
    )


def test_list_names_the_default_and_why(tmp_path: Path) -> None:
    cache = {"ENTROPIC_MODELS_DIR": str(tmp_path / "models")}
    listed = run("models", "list", env=cache)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    qwen, tiny = rows["qwen2.5-coder-1.5b"], rows["smollm2-135m"]
    assert qwen["default"] and qwen["default_because"] == "built in" and not qwen["ready"]
    assert qwen["path"] == str(tmp_path / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf")
    assert "declare no licence" in qwen["licence"] and tiny["ready"] and "tiny" in tiny["aliases"]
    chosen = run("--model", "tiny", "models", "list", env=cache)
    rows = {r["name"]: r for r in json.loads(chosen.stdout)}
    assert rows["smollm2-135m"]["default"] and not rows["qwen2.5-coder-1.5b"]["default"]
    assert "--model" in rows["smollm2-135m"]["default_because"]


def test_fetching_an_unknown_model_says_what_is_known() -> None:
    done = run("models", "fetch", "gpt-17")
    assert done.returncode == 1
    assert "No model called 'gpt-17'" in done.stderr and "qwen2.5-coder-1.5b" in done.stderr
