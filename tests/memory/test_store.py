"""The store's guards: a schema version from the future, tables that disagree with the
manifest about their embedder, and a fresh memory's files."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from backend.memory.store import SCHEMA_VERSION, MemoryStore
from shared_api.errors import MemoryUnavailableError


class _Embedder:
    def __init__(self, identity: str, dim: int) -> None:
        self.identity, self.spec, self.dim = identity, "test", dim


def test_a_fresh_store_records_schema_and_embedder(tmp_path: Path) -> None:
    root = tmp_path / "memory"
    store = MemoryStore(root)
    store.create(_Embedder("test-a", 16))  # type: ignore[arg-type]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["embedder"] == "test-a"
    assert manifest["tables"] == {
        "chunks": "chunks_g1", "interactions": "interactions_g1", "documents": "documents_g1",
    }  # fmt: skip
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "manifest.json").stat().st_mode) == 0o600
    reopened = MemoryStore(root)
    assert reopened.manifest == store.manifest
    meta = reopened.tables["chunks"].schema.metadata
    assert meta[b"schema_version"] == str(SCHEMA_VERSION).encode() and meta[b"dim"] == b"16"


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "memory"
    MemoryStore(root).create(_Embedder("test-a", 16))  # type: ignore[arg-type]
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(MemoryUnavailableError, match="schema version 99, newer"):
        MemoryStore(root)


def test_tables_that_disagree_with_the_manifest_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "memory"
    MemoryStore(root).create(_Embedder("test-a", 16))  # type: ignore[arg-type]
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "embedder": "test-b"}))
    with pytest.raises(MemoryUnavailableError, match="must never mix"):
        MemoryStore(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(MemoryUnavailableError, match="unreadable"):
        MemoryStore(root)
