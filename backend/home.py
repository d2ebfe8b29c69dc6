"""The home directory: image, journal, keys, config and the running backend's files.

Everything in it is private to the user (directories 0700, secrets 0600).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import IO

from shared_api.connection import write_private
from shared_api.errors import ConfigInvalidError, ImageError, UnavailableError

log = logging.getLogger(__name__)

#: The longest ipc socket path we bind (a Unix socket path has room for 107 bytes).
MAX_SOCKET_PATH = 100


def default_home() -> Path:
    """``$ENTROPIC_HOME``, else ``~/.local/share/entropic``."""
    env = os.environ.get("ENTROPIC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".local" / "share" / "entropic"


def _private_dir(path: Path) -> None:
    """Make ``path`` a directory only this user can use; refuse one it must not take over."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o700)  # whatever the umask
        return
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory (or is a symlink)"
    elif info.st_uid != os.getuid():
        problem = f"belongs to uid {info.st_uid}, not to you (uid {os.getuid()})"
    elif info.st_mode & stat.S_IWOTH:
        problem = f"is writable by every user (mode {stat.S_IMODE(info.st_mode):o})"
    else:
        os.chmod(path, 0o700)
        return
    raise ConfigInvalidError(
        f"{path} {problem}, so it cannot hold a private Entropic home. Use a new "
        "directory of your own, e.g. --home ~/.local/share/entropic.",
        path=str(path),
    )


class Home:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.image_dir = self.root / "image"
        self.journal_dir = self.root / "journal"
        self.keys_dir = self.root / "keys"
        #: The running backend's ipc sockets: only this user can reach them (0700).
        self.run_dir = self.root / "run"
        #: The episodic memory (LanceDB tables + manifest.json), created when it first opens.
        self.memory_dir = self.root / "memory"
        self.config_path = self.root / "config.toml"
        self.lock_path = self.root / "backend.lock"
        self._lock_file: IO[str] | None = None

    def ensure(self) -> Home:
        """Create the home and its folders (0700), or check the existing ones: a folder of
        another user, or a world-writable one (e.g. a shared 1777 directory), is refused
        with ``ConfigInvalidError``, never chmodded into a home."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.image_dir, self.journal_dir, self.keys_dir, self.run_dir):
            _private_dir(d)
        return self

    def socket_dir(self) -> tuple[Path, str]:
        """Where the ipc sockets go, and a prefix for their names: ``run/`` in the home, or,
        when that path is too long for a Unix socket, a private per-user directory under
        ``$XDG_RUNTIME_DIR`` (else the temp dir) with a prefix unique to this home."""
        if len(str(self.run_dir / "requests.sock")) <= MAX_SOCKET_PATH:
            return self.run_dir, ""
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        private = base / f"entropic-{os.getuid()}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(private, 0o700)
        info = os.lstat(private)
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.getuid()
            or stat.S_IMODE(info.st_mode) & 0o077
        ):
            raise UnavailableError(
                f"{private} is not a private directory of this user (a symlink, someone "
                "else's, or open to others), so the backend's sockets cannot go there. "
                "Remove it, or use a home with a shorter path.",
                path=str(private),
            )
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return private, f"{digest}-"

    @property
    def authorized_dir(self) -> Path:
        """Public CURVE keys of the clients a tcp backend with ``curve = true`` lets in."""
        return self.keys_dir / "authorized"

    def curve_keys(self) -> tuple[Path, Path]:
        """The secret files of this home's CURVE keypairs (server, client), created if
        missing (0600); the home's own client key is authorized, so local calls work."""
        from shared_api.transport import authorize, ensure_keypair

        _private_dir(self.authorized_dir)
        server = ensure_keypair(self.keys_dir, "server")
        client = ensure_keypair(self.keys_dir, "client")
        own = self.keys_dir / "client.key"
        if not any(p.read_bytes() == own.read_bytes() for p in self.authorized_dir.glob("*.key")):
            authorize(own, self.authorized_dir)
        return server, client

    def client_keys(self) -> tuple[bytes, bytes] | None:
        """This home's CURVE client keypair, if it has one (``main.py keys``)."""
        from shared_api.transport import home_client_keys

        return home_client_keys(self.root)

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
