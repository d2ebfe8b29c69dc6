"""Find (or install) llama.cpp's ``convert_hf_to_gguf.py``, the one that matches the
llama-cpp-python in use: its sdist vendors llama.cpp, the wheel does not.

Looked for, in order: ``learning.llama_cpp_dir`` / ``$ENTROPIC_LLAMA_CPP_DIR`` (a checkout
the user chose); the repository's ``.tools/llama.cpp`` (``make learning`` fills it).
``python -m backend.learning.converter install`` copies the converter (with its
``conversion/`` and ``gguf-py/`` folders) into ``.tools`` from llama-cpp-python's source
archive, whose sha256 must match the one ``uv.lock`` pins for that version: the archive is
downloaded from the URL uv.lock names (or found in the download cache) and verified before
anything is read from it. Nothing unverified is used: not uv's unpacked cache, not a download
that does not match.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import shutil
import sys
import tarfile
import tempfile
import tomllib
import urllib.request
from pathlib import Path

from shared_api.errors import UnavailableError

SCRIPT = "convert_hf_to_gguf.py"
REPO = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO / ".tools" / "llama.cpp"
PARTS = (SCRIPT, "conversion", "gguf-py", "LICENSE")
LOCK = REPO / "uv.lock"
PACKAGE = "llama-cpp-python"


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return ""


def pinned_sdist(version: str, lock: Path = LOCK) -> tuple[str, str]:
    """``(url, "sha256:...")`` of llama-cpp-python ``version``'s source archive, as uv.lock
    pins it; ``UnavailableError`` when it pins none."""
    try:
        packages = tomllib.loads(lock.read_text(encoding="utf-8")).get("package", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UnavailableError(
            f"cannot read {lock} for the converter's pinned hash: {exc}"
        ) from exc
    for package in packages:
        if package.get("name") == PACKAGE and package.get("version") == version:
            sdist = package.get("sdist") or {}
            url, digest = sdist.get("url", ""), sdist.get("hash", "")
            if url.startswith("https://") and digest.startswith("sha256:"):
                return url, digest
    raise UnavailableError(
        f"{lock.name} pins no source archive (with a sha256) for {PACKAGE} {version}, so its "
        "converter cannot be verified. Install the version uv.lock names (`make learning`)."
    )


def download_cache() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/entropic-os/downloads``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "entropic-os" / "downloads"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` (https, PyPI's file host) into ``dest``."""
    if not url.startswith("https://"):
        raise UnavailableError(f"refusing to download the converter over a non-https URL: {url}")
    print(f"downloading {url}", file=sys.stderr, flush=True)
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:  # noqa: S310
        shutil.copyfileobj(response, out, 1 << 20)


def verified_sdist(version: str, cache: Path | None = None) -> Path:
    """llama-cpp-python ``version``'s source archive, its sha256 checked against uv.lock:
    from the download cache when the cached copy matches, else downloaded. A mismatch is
    deleted and refused with ``UnavailableError``; nothing of it is read."""
    url, digest = pinned_sdist(version)
    folder = cache or download_cache()
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / url.rsplit("/", 1)[-1]
    if archive.is_file() and sha256_of(archive) == digest:
        return archive
    part = archive.with_name(archive.name + ".part")
    try:
        _download(url, part)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise UnavailableError(f"cannot download {PACKAGE} {version}'s source: {exc}") from exc
    found = sha256_of(part)
    if found != digest:
        part.unlink(missing_ok=True)
        raise UnavailableError(
            f"{PACKAGE} {version}'s source archive does not match uv.lock (expected {digest}, "
            f"got {found}); it was deleted and not used. Retry; if it persists, the download "
            "is being tampered with."
        )
    part.replace(archive)
    return archive


def locate(configured: str = "") -> Path:
    """The converter script; ``UnavailableError`` says how to get it."""
    candidates = [configured, os.environ.get("ENTROPIC_LLAMA_CPP_DIR", "")]
    for folder in filter(None, candidates):
        script = Path(folder).expanduser() / SCRIPT
        if script.is_file():
            return script
    if (TOOLS_DIR / SCRIPT).is_file():
        return TOOLS_DIR / SCRIPT
    raise UnavailableError(
        f"llama.cpp's {SCRIPT} was not found. Run `make learning` (it installs it into "
        ".tools/llama.cpp), or set learning.llama_cpp_dir in config.toml to a llama.cpp "
        "checkout matching llama-cpp-python " + (llama_cpp_version() or "(not installed)") + "."
    )


def _copy_from(source_dir: Path, dest: Path) -> Path:
    tmp = dest.with_name(dest.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in PARTS:
        src = source_dir / part
        if src.is_dir():
            shutil.copytree(src, tmp / part, ignore=shutil.ignore_patterns("tests", "__pycache__"))
        elif src.is_file():
            shutil.copy2(src, tmp / part)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest / SCRIPT


def _from_archive(archive: Path, dest: Path) -> Path:
    prefix = f"{archive.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(tmp, members=members, filter="data")
        return _copy_from(Path(tmp) / prefix, dest)


def install(dest: Path = TOOLS_DIR, cache: Path | None = None) -> Path:
    """Copy the converter matching the installed llama-cpp-python into ``dest``, from its
    verified source archive (``cache``: where downloads are kept)."""
    version = llama_cpp_version()
    if not version:
        raise UnavailableError("llama-cpp-python is not installed; run `make run` first.")
    _, digest = pinned_sdist(version)
    stamp, expected = dest / "VERSION", f"{version} {digest}"
    if (dest / SCRIPT).is_file() and stamp.is_file() and stamp.read_text().strip() == expected:
        return dest / SCRIPT  # installed from the verified archive before
    script = _from_archive(verified_sdist(version, cache), dest)
    stamp.write_text(expected + "\n")
    return script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backend.learning.converter")
    parser.add_argument("action", choices=["install", "locate"])
    args = parser.parse_args(argv)
    try:
        path = install() if args.action == "install" else locate()
    except UnavailableError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
