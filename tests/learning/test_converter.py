"""llama.cpp's converter comes only from llama-cpp-python's source archive whose sha256
matches uv.lock: a tampered archive (cached or downloaded) is refused and nothing of it is
installed. The download itself is replaced by a TEST DOUBLE that serves a given archive (no
77 MB fetch from PyPI in the suite); the hash check and the extraction are the real ones."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from backend.learning import converter
from shared_api.errors import UnavailableError

VERSION = "0.3.36"


def _archive(path: Path, script: str) -> Path:
    root = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in ((converter.SCRIPT, script), ("conversion/__init__.py", "")):
            data = text.encode()
            info = tarfile.TarInfo(root + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The TEST DOUBLE download: copies tmp_path/served.tar.gz; records each URL asked for."""
    asked: list[str] = []

    def fake_download(url: str, dest: Path) -> None:
        asked.append(url)
        dest.write_bytes((tmp_path / "served.tar.gz").read_bytes())

    monkeypatch.setattr(converter, "_download", fake_download)
    monkeypatch.setattr(converter, "llama_cpp_version", lambda: VERSION)
    return asked


def test_the_pinned_hash_is_uv_locks() -> None:
    url, digest = converter.pinned_sdist(VERSION)
    assert url.startswith("https://files.pythonhosted.org/") and url.endswith(f"-{VERSION}.tar.gz")
    assert digest == "sha256:832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
    with pytest.raises(UnavailableError, match="pins no source archive"):
        converter.pinned_sdist("0.0.1")


def test_a_tampered_download_is_refused_and_nothing_installed(
    served: list[str], tmp_path: Path
) -> None:
    _archive(tmp_path / "served.tar.gz", "raise SystemExit('tampered converter ran')\n")
    dest, cache = tmp_path / "tools", tmp_path / "cache"
    with pytest.raises(UnavailableError, match=r"does not match uv\.lock") as caught:
        converter.install(dest, cache)
    assert "sha256:832db0699007" in caught.value.message
    assert served == [converter.pinned_sdist(VERSION)[0]]
    assert not dest.exists() and list(cache.iterdir()) == []  # deleted, never extracted


def test_a_tampered_cached_archive_is_not_used(served: list[str], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    name = converter.pinned_sdist(VERSION)[0].rsplit("/", 1)[-1]
    _archive(cache / name, "raise SystemExit('poisoned cache')\n")  # planted in the cache
    _archive(tmp_path / "served.tar.gz", "raise SystemExit('tampered too')\n")
    with pytest.raises(UnavailableError, match="does not match"):
        converter.install(tmp_path / "tools", cache)
    assert served  # the cached copy did not match, so it was fetched again (and refused)
    assert not (tmp_path / "tools").exists()


def test_a_matching_archive_installs_and_is_reverified_from_the_cache(
    served: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _archive(tmp_path / "served.tar.gz", "print('the real converter')\n")
    url = converter.pinned_sdist(VERSION)[0]
    # Pin this archive's own hash, as uv.lock pins the real one.
    monkeypatch.setattr(converter, "pinned_sdist", lambda v: (url, converter.sha256_of(good)))
    dest, cache = tmp_path / "tools", tmp_path / "cache"
    script = converter.install(dest, cache)
    assert script.read_text() == "print('the real converter')\n"
    assert (dest / "conversion").is_dir() and len(served) == 1
    assert (dest / "VERSION").read_text().split() == [VERSION, converter.sha256_of(good)]
    assert converter.install(dest, cache) == script and len(served) == 1  # already installed
    # a later install (another version stamp) uses the cached archive only after checking it
    (dest / "VERSION").write_text("old\n")
    assert converter.install(dest, cache) == script and len(served) == 1
