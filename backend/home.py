"""The home directory: image, journal, keys, config and the running backend's files.

Everything in it is private to the user (directories 0700, secrets 0600).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import IO

from shared_api.connection import write_private
from shared_api.errors import ImageError, UnavailableError

log = logging.getLogger(__name__)


def default_home() -> Path:
    """``$ENTROPIC_HOME``, else ``~/.local/share/entropic``."""
    env = os.environ.get("ENTROPIC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "entropic"


class Home:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.image_dir = self.root / "image"
        self.journal_dir = self.root / "journal"
        self.keys_dir = self.root / "keys"
        #: The episodic memory (LanceDB tables + manifest.json), created when it first opens.
        self.memory_dir = self.root / "memory"
        self.config_path = self.root / "config.toml"
        self.lock_path = self.root / "backend.lock"
        self._lock_file: IO[str] | None = None

    def ensure(self) -> Home:
        for d in (self.root, self.image_dir, self.journal_dir, self.keys_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        return self

    def acquire_lock(self) -> None:
        """Only one backend per home. Raises ``UnavailableError`` naming the running one."""
        f = open(self.lock_path, "a+")  # noqa: SIM115 - held open for the process lifetime
        os.chmod(self.lock_path, 0o600)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise UnavailableError(
                f"Another backend (pid {owner}) is already running for home {self.root}. "
                "Attach to it with `main.py call` or stop it first.",
                pid=owner,
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f

    def release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def image_key(self) -> bytes:
        """The user-private key that signs images and the journal; created on first use.

        If images exist but the key is gone, they cannot be verified: refuse rather than
        silently start an empty world over them.
        """
        path = self.keys_dir / "image.key"
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                log.warning("%s was readable by others (mode %o); restricting to 0600", path, mode)
                os.chmod(path, 0o600)
            key = path.read_bytes()
            if len(key) < 32:
                raise ImageError(f"Image key {path} is truncated. Restore it from a backup.")
            return key
        if any(self.image_dir.glob("*.image")):
            raise ImageError(
                f"Image key {path} is missing, so the images in {self.image_dir} cannot be "
                "verified. Restore the key, or move the image/ and journal/ folders aside to "
                "start a fresh world."
            )
        key = secrets.token_bytes(32)
        write_private(path, key)
        return key
