"""The home directory is private: created 0700, and a shared or foreign directory is refused
instead of being chmodded into a home."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backend.home import Home
from shared_api.errors import ConfigInvalidError
from tests.conftest import require_root

MAIN = Path(__file__).resolve().parents[2] / "main.py"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_home_is_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        home = Home(tmp_path / "a" / "home").ensure()
    finally:
        os.umask(old)
    for d in (home.root, home.image_dir, home.journal_dir, home.keys_dir, home.run_dir):
        assert mode(d) == 0o700, d


def test_own_existing_directory_is_made_private(tmp_path: Path) -> None:
    existing = tmp_path / "mine"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    Home(existing).ensure()
    assert mode(existing) == 0o700


def test_world_writable_directory_is_refused_untouched(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone-elses-file").write_text("x")
    with pytest.raises(ConfigInvalidError, match="writable by every user"):
        Home(shared).ensure()
    assert mode(shared) == 0o1777 and sorted(os.listdir(shared)) == ["someone-elses-file"]


def test_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    require_root("giving a directory to the user nobody")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(ConfigInvalidError, match="belongs to uid 65534"):
        Home(theirs).ensure()
    assert mode(theirs) == 0o755 and not list(theirs.iterdir())


def test_backend_on_a_shared_directory_says_why_in_one_line(tmp_path: Path) -> None:
    shared = tmp_path / "tmpdir"
    shared.mkdir()
    shared.chmod(0o1777)
    done = subprocess.run(
        [sys.executable, str(MAIN), "backend", "--home", str(shared)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done
    assert "writable by every user" in done.stderr and "Traceback" not in done.stderr
    assert mode(shared) == 0o1777 and not list(shared.iterdir())
