"""Find (or install) llama.cpp's ``convert_hf_to_gguf.py``, the one that matches the
llama-cpp-python in use: its sdist vendors llama.cpp, the wheel does not.

Looked for, in order: ``learning.llama_cpp_dir`` / ``$ENTROPIC_LLAMA_CPP_DIR``; the repository's
``.tools/llama.cpp`` (``make learning`` fills it); the llama-cpp-python sdist that uv unpacked
into its cache when it built the wheel. ``python -m backend.learning.converter install``
copies the converter (with its ``conversion/`` and ``gguf-py/`` folders) into ``.tools``,
from uv's cache or else from the sdist, downloaded with pip.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from shared_api.errors import UnavailableError

SCRIPT = "convert_hf_to_gguf.py"
REPO = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO / ".tools" / "llama.cpp"
PARTS = (SCRIPT, "conversion", "gguf-py", "LICENSE")


def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _uv_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("UV_CACHE_DIR"):
        dirs.append(Path(os.environ["UV_CACHE_DIR"]))
    xdg = os.environ.get("XDG_CACHE_HOME")
    dirs.append(Path(xdg) / "uv" if xdg else Path.home() / ".cache" / "uv")
    return [d for d in dirs if d.is_dir()]


def _in_uv_cache(version: str) -> Path | None:
    for cache in _uv_cache_dirs():
        pattern = f"sdists-v*/pypi/llama-cpp-python/{version}/*/src/vendor/llama.cpp/{SCRIPT}"
        for hit in sorted(cache.glob(pattern)):
            if (hit.parent / "conversion").is_dir():
                return hit
    return None


def locate(configured: str = "") -> Path:
    """The converter script; ``UnavailableError`` says how to get it."""
    candidates = [configured, os.environ.get("ENTROPIC_LLAMA_CPP_DIR", "")]
    for folder in filter(None, candidates):
        script = Path(folder).expanduser() / SCRIPT
        if script.is_file():
            return script
    if (TOOLS_DIR / SCRIPT).is_file():
        return TOOLS_DIR / SCRIPT
    cached = _in_uv_cache(llama_cpp_version())
    if cached is not None:
        return cached
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


def _pip() -> list[str]:
    """A pip to download with: this interpreter's, else the system's (uv venvs have none)."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    system = shutil.which("python3") or shutil.which("python")
    if system is None:
        raise UnavailableError("No pip to download llama-cpp-python's sdist with.")
    return [system, "-m", "pip"]


def _from_sdist(version: str, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(  # noqa: S603 - pip, the ordinary client, for the pinned sdist
            [*_pip(), "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", tmp],
            check=True,
        )  # fmt: skip
        archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        prefix = f"{archive.name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            tar.extractall(tmp, members=members, filter="data")
        return _copy_from(Path(tmp) / prefix, dest)


def install(dest: Path = TOOLS_DIR) -> Path:
    """Copy the converter matching the installed llama-cpp-python into ``dest``."""
    version = llama_cpp_version()
    if not version:
        raise UnavailableError("llama-cpp-python is not installed; run `make run` first.")
    stamp = dest / "VERSION"
    if (dest / SCRIPT).is_file() and stamp.is_file() and stamp.read_text().strip() == version:
        return dest / SCRIPT
    cached = _in_uv_cache(version)
    script = _copy_from(cached.parent, dest) if cached else _from_sdist(version, dest)
    stamp.write_text(version + "\n")
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
