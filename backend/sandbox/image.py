"""The Docker runtime's image, built here from Debian packages and pinned by its digest.

``build`` downloads the Debian packages of python3 (and what it needs, less perl and dpkg)
with ``apt-get download``, unpacks them into a root file system and writes it as a
``docker load`` archive: one layer, every entry owned by root with a fixed time, and a fixed
image config, so the image id (the sha256 of that config) depends only on the packages'
contents. The archive is kept in a cache folder, keyed by the packages' versions, so a
second build with the same packages costs nothing.

``load`` builds (or finds) the archive, loads it into the Docker daemon, checks that the
daemon holds exactly that digest, and records it in the user's cache, where
``DockerGvisorRuntime`` finds it (``$ENTROPIC_SANDBOX_IMAGE`` overrides). The runtime runs it
only by that digest and never pulls (``--pull=never``).

``python -m backend.sandbox.image load [--cache DIR]`` prints the digest.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOTS = ("python3-minimal", "libpython3.11-stdlib")
"""What the image is for: the system's python3 with its standard library."""

LEFT_OUT = frozenset(
    {"dpkg", "perl", "perl-base", "perl-modules-5.36", "libperl5.36", "install-info", "tar",
     "mailcap", "mime-support", "libgdbm-compat4"}
)  # fmt: skip
"""Dependencies a python3 that only runs never uses (package maintenance, perl)."""

RECIPE = 1
"""Bumped whenever the way the image is made changes (it is part of the cache key)."""

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"]
_DIRS = ("scratch", "proc", "dev", "sys", "tmp", "etc")


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


@dataclass(frozen=True)
class Built:
    archive: Path
    digest: str
    """``sha256:<id>``: the image id Docker gives it once loaded."""


def packages() -> dict[str, str]:
    """The packages the image holds, with the versions apt would download now."""
    listed = _run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
         "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", *ROOTS]
    )  # fmt: skip
    names = sorted(
        {line.strip() for line in listed.splitlines() if line and not line.startswith((" ", "<"))}
        - LEFT_OUT
    )
    policy = _run(["apt-cache", "policy", *names])
    versions: dict[str, str] = {}
    current = ""
    for line in policy.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
        elif line.strip().startswith("Candidate:") and current:
            versions[current] = line.split(":", 1)[1].strip()
    missing = [name for name in names if versions.get(name, "(none)") == "(none)"]
    if missing:
        raise RuntimeError(f"apt knows no candidate for {missing}: run apt-get update")
    return versions


def build(cache: Path | None = None) -> Built:
    """The image archive for the packages apt offers now: from ``cache`` when already
    built, else made (downloading the packages) and kept there."""
    folder = cache or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    versions = packages()
    key = hashlib.sha256(json.dumps([RECIPE, versions], sort_keys=True).encode()).hexdigest()
    archive, id_file = folder / f"image-{key[:16]}.tar", folder / f"image-{key[:16]}.id"
    if archive.is_file() and id_file.is_file():
        digest = id_file.read_text().strip()
        if _DIGEST.match(digest) and _archive_digest(archive) == digest:
            return Built(archive, digest)
    with tempfile.TemporaryDirectory(prefix="sandbox-image-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _unpack(versions, Path(tmp) / "debs", rootfs)
        digest = _write_archive(rootfs, archive.with_suffix(".part"), versions)
    archive.with_suffix(".part").replace(archive)
    id_file.write_text(digest + "\n")
    return Built(archive, digest)


def load(cache: Path | None = None, docker: str = "docker") -> str:
    """Build (or find) the archive, load it into the daemon, check the daemon holds exactly
    its digest, record the digest for ``DockerGvisorRuntime`` and return it."""
    built = build(cache)
    if (
        subprocess.run(  # noqa: S603
            [docker, "image", "inspect", built.digest], capture_output=True, check=False
        ).returncode
        != 0
    ):
        _run([docker, "load", "--input", str(built.archive)])
    held = _run([docker, "image", "inspect", "--format", "{{.Id}}", built.digest]).strip()
    if held != built.digest:
        raise RuntimeError(f"the daemon holds {held}, not the image built ({built.digest})")
    record = cache_dir()
    record.mkdir(parents=True, exist_ok=True)
    (record / "image-id").write_text(built.digest + "\n")
    return built.digest


def _unpack(versions: dict[str, str], debs: Path, rootfs: Path) -> None:
    debs.mkdir()
    rootfs.mkdir()
    _run(["apt-get", "download", "-q", *(f"{n}={v}" for n, v in versions.items())], cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "--extract", str(deb), str(rootfs)])
    for name in _DIRS:
        (rootfs / name).mkdir(exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("nobody:x:65534:65534:nobody:/scratch:/bin/false\n")
    (rootfs / "etc" / "group").write_text("nogroup:x:65534:\n")
    python = rootfs / "usr" / "bin" / "python3"
    if not python.exists():
        raise RuntimeError("the packages gave no /usr/bin/python3")


def _write_archive(rootfs: Path, dest: Path, versions: dict[str, str]) -> str:
    layer = _layer(rootfs)
    layer_id = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": _docker_arch(),
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Env": _ENV, "WorkingDir": "/scratch", "User": "65534:65534"},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
            "history": [
                {
                    "created": "1970-01-01T00:00:00Z",
                    "created_by": "backend.sandbox.image from Debian packages: "
                    + " ".join(f"{n}={v}" for n, v in sorted(versions.items())),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        [{"Config": f"{image_id}.json", "RepoTags": None, "Layers": [f"{layer_id}/layer.tar"]}]
    ).encode()
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((f"{layer_id}/layer.tar", layer), (f"{image_id}.json", config),
                           ("manifest.json", manifest)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return f"sha256:{image_id}"


def _layer(rootfs: Path) -> bytes:
    """The root file system as one tar: sorted, owned by root, time 0 (reproducible)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(rootfs.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _archive_digest(archive: Path) -> str | None:
    """The image id an archive's config gives (its sha256), read from the archive."""
    try:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("manifest.json")
            if member is None:
                return None
            config_name = json.loads(member.read())[0]["Config"]
            config = tar.extractfile(config_name)
            return "sha256:" + hashlib.sha256(config.read()).hexdigest() if config else None
    except (OSError, KeyError, IndexError, ValueError, tarfile.TarError):
        return None


def _docker_arch() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _run(argv: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(  # noqa: S603 - our own fixed commands
        argv, capture_output=True, text=True, check=False, cwd=cwd
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backend.sandbox.image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["build", "load"])
    parser.add_argument("--cache", type=Path, default=None, help="where archives are kept")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            built = build(args.cache)
            print(f"{built.digest} {built.archive}")
        else:
            print(load(args.cache))
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
