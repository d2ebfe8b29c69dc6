"""The Docker runtime's image, built here from Debian packages and pinned by its digest.

See ``build`` and ``load``; the digest of the image loaded last is recorded in the user's
cache, where ``DockerGvisorRuntime`` finds it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/entropic-os/sandbox-image`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "entropic-os" / "sandbox-image"


def recorded_image() -> str | None:
    """The digest of the image ``load`` loaded last, if any."""
    try:
        digest = (cache_dir() / "image-id").read_text().strip()
    except OSError:
        return None
    return digest if _DIGEST.match(digest) else None
