"""``SecureCodeExecutor``: run untrusted Python in the strongest sandbox available here.

Runtimes are tried in this order: Docker + gVisor, gVisor (``runsc``), bubblewrap. The first
that works is used (``runtime_name``; ``status()`` says which and why the others are not).
When none works, running code raises ``SandboxUnavailableError`` naming the packages to
install; code never runs unsandboxed.

Runs are served by warm sandboxes (``pool.WarmPool``) when the pool holds one for the
run's runtime and limits, else started cold; either way each sandbox serves one run only.
On construction, directories that dead processes left behind are swept (``scratch.sweep``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backend.sandbox import cgroups
from backend.sandbox.base import INSTALL_HINT, Runtime
from backend.sandbox.bubblewrap import BubblewrapRuntime
from backend.sandbox.docker import DockerGvisorRuntime
from backend.sandbox.gvisor import GvisorRuntime
from backend.sandbox.pool import WarmPool
from backend.sandbox.scratch import sweep
from shared_api.errors import InvalidValueError, SandboxUnavailableError
from shared_api.sandbox import Limits, SandboxResult

RUNTIME_ORDER = ("docker-gvisor", "runsc", "bubblewrap")

POOL_ENV = "ENTROPIC_SANDBOX_POOL"
DEFAULT_POOL_SIZE = 2
"""Warm sandboxes kept by default (``$ENTROPIC_SANDBOX_POOL`` or ``pool_size`` overrides)."""

_swept: set[tuple[int, Path | None]] = set()
_sweep_lock = threading.Lock()


def pool_size_from_env() -> int:
    try:
        return max(0, int(os.environ.get(POOL_ENV, DEFAULT_POOL_SIZE)))
    except ValueError:
        return DEFAULT_POOL_SIZE


def sweep_once(root: Path | None) -> None:
    """Sweep what dead processes left under ``root`` (and their run cgroups), once per
    process and root."""
    with _sweep_lock:
        if (os.getpid(), root) in _swept:
            return
        _swept.add((os.getpid(), root))
    cgroups.sweep()  # first: it kills whatever is still running in a dead owner's groups
    sweep(root)


def default_runtimes() -> list[Runtime]:
    """One instance of every runtime, strongest first."""
    return [DockerGvisorRuntime(), GvisorRuntime(), BubblewrapRuntime()]


class SecureCodeExecutor:
    """Runs Python source in a sandbox under ``Limits`` and returns a ``SandboxResult``.

    Availability is probed once per runtime (a real sandboxed ``print``), on first use.
    Safe to share between threads; runs do not share scratch space, cgroups or container
    ids. ``pool_size`` warm sandboxes are kept (default ``$ENTROPIC_SANDBOX_POOL`` or 2; 0
    for none) once code has run, for the runtime and limits of the last run; ``close()``
    destroys them (so does the process's exit). ``scratch_root`` (default: the system's
    temporary directory) holds the runs' host-side directories; bubblewrap binds the scratch
    space from there as the sandbox uid, so it must be searchable by that uid, as /tmp is.
    """

    def __init__(
        self,
        runtimes: Sequence[Runtime] | None = None,
        *,
        limits: Limits | None = None,
        scratch_root: Path | None = None,
        pool_size: int | None = None,
    ) -> None:
        found = list(runtimes) if runtimes is not None else default_runtimes()
        self.runtimes: dict[str, Runtime] = {rt.name: rt for rt in found}
        self.limits = limits or Limits()
        self.scratch_root = scratch_root
        self._lock = threading.Lock()
        size = pool_size_from_env() if pool_size is None else pool_size
        self.pool = WarmPool(size, scratch_root)
        sweep_once(scratch_root)

    def _available(self, name: str) -> str | None:
        with self._lock:  # probes run once, not once per concurrent caller
            return self.runtimes[name].available()

    def reasons(self) -> dict[str, str | None]:
        """Each runtime's availability: None when it works, else why not (probes them all)."""
        return {name: self._available(name) for name in self.runtimes}

    @property
    def runtime_name(self) -> str | None:
        """The runtime that runs code when none is asked for; None when none works."""
        return next((name for name in self.runtimes if self._available(name) is None), None)

    def status(self) -> dict[str, Any]:
        """Which runtime is in use, why the others are not, and how each enforces limits."""
        reasons = self.reasons()
        return {
            "runtime": self.runtime_name,
            "install_hint": None if self.runtime_name else INSTALL_HINT,
            "default_limits": self.limits.model_dump(),
            "pool": {
                "size": self.pool.size,
                "ready": self.pool.ready(),
                "served": self.pool.served,
                "missed": self.pool.missed,
            },
            "runtimes": {
                name: {
                    "available": reasons[name] is None,
                    "reason": reasons[name],
                    "enforcement": rt.enforcement() if reasons[name] is None else {},
                }
                for name, rt in self.runtimes.items()
            },
        }

    def select(self, name: str | None = None) -> Runtime:
        """The runtime to use: ``name``, or the first available one (probing no further)."""
        if name is not None:
            if name not in self.runtimes:
                raise InvalidValueError(
                    f"unknown sandbox runtime {name!r}; known: {', '.join(self.runtimes)}",
                    runtime=name,
                )
            why = self._available(name)
            if why is not None:
                raise SandboxUnavailableError(
                    f"sandbox runtime {name} is not available: {why}. "
                    f"To install the sandboxes, as root: {INSTALL_HINT}",
                    reasons={name: why},
                    install=INSTALL_HINT,
                )
            return self.runtimes[name]
        for runtime_name in self.runtimes:
            if self._available(runtime_name) is None:
                return self.runtimes[runtime_name]
        reasons = self.reasons()
        listed = "; ".join(f"{n}: {why}" for n, why in reasons.items())
        raise SandboxUnavailableError(
            f"No sandbox is available, so code will not run ({listed}). "
            f"Install one, as root: {INSTALL_HINT}",
            reasons=reasons,
            install=INSTALL_HINT,
        )

    def run_python(
        self, source: str, limits: Limits | None = None, runtime: str | None = None
    ) -> SandboxResult:
        """Run ``source`` as ``/scratch/main.py`` in a fresh scratch directory, removed after.

        Raises ``SandboxUnavailableError`` (nothing can run it) or ``SandboxFailedError``
        (the sandbox broke); whatever the script itself does is in the result.
        """
        chosen = self.select(runtime)
        limits = limits or self.limits
        warm = self.pool.take(chosen, limits)
        if warm is None:
            warm = chosen.start(limits, self.scratch_root)
        return warm.run(source)

    def warm_up(
        self, limits: Limits | None = None, runtime: str | None = None, timeout: float = 60.0
    ) -> bool:
        """Have the pool keep sandboxes for these limits and runtime, and wait until one is
        ready (False when none is within ``timeout``, or the pool size is 0)."""
        return self.pool.fill(self.select(runtime), limits or self.limits, timeout)

    def close(self) -> None:
        """Destroy the warm sandboxes; later runs start cold."""
        self.pool.close()
