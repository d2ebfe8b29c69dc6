"""Sandboxed execution of untrusted Python (code written by the personas).

``SecureCodeExecutor`` picks the strongest runtime available (Docker + gVisor, gVisor,
bubblewrap), enforces ``Limits`` on every one of them and returns a typed ``SandboxResult``.
It never falls back to running code unsandboxed. A small pool of warm sandboxes (started,
waiting for their program) serves calls without a start-up; each serves one run only.
"""

from backend.sandbox.base import INSTALL_HINT, Runtime, Warm
from backend.sandbox.executor import RUNTIME_ORDER, SecureCodeExecutor, default_runtimes
from backend.sandbox.pool import WarmPool
from shared_api.errors import SandboxFailedError, SandboxUnavailableError
from shared_api.sandbox import Limits, SandboxResult

__all__ = [
    "INSTALL_HINT",
    "RUNTIME_ORDER",
    "Limits",
    "Runtime",
    "SandboxFailedError",
    "SandboxResult",
    "SandboxUnavailableError",
    "SecureCodeExecutor",
    "Warm",
    "WarmPool",
    "default_runtimes",
]
