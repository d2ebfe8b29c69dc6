"""Sandboxed code execution: the limits a run is given and the typed result it returns.

Both are plain pydantic models so that they can cross the wire (the ToolForge will ask the
backend to run code and get a ``SandboxResult`` back).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

KilledReason = Literal["wall_time", "cpu_time", "memory", "output_limit"]
"""Why a run was stopped before it finished by itself.

``wall_time``: it ran past ``Limits.wall_s``; ``cpu_time``: it used more than ``Limits.cpu_s``
of CPU; ``memory``: the memory cgroup's OOM killer killed one of its processes (an
allocation refused by RLIMIT_AS is not a kill: the script sees ``MemoryError``);
``output_limit``: it wrote more than
``Limits.output_bytes`` to stdout and stderr together.
"""


class Limits(BaseModel):
    """What one run may use. Every runtime enforces every field (see ``status()``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wall_s: float = Field(default=10.0, gt=0, le=3600, description="wall-clock seconds")
    cpu_s: float = Field(default=5.0, gt=0, le=3600, description="CPU seconds, all processes")
    memory_mb: int = Field(default=256, ge=32, le=1 << 20, description="address space / RAM")
    pids: int = Field(default=32, ge=4, le=4096, description="processes and threads")
    file_size_mb: int = Field(default=16, ge=1, le=1 << 20, description="largest file written")
    disk_mb: int = Field(
        default=64, ge=1, le=1 << 20, description="all files written, together (scratch space)"
    )
    output_bytes: int = Field(
        default=1 << 20, ge=1024, le=1 << 30, description="stdout + stderr kept; more is killed"
    )


class SandboxResult(BaseModel):
    """The outcome of one sandboxed run.

    ``exit_code`` is the script's exit status (128 + N when a signal N ended it, the same on
    every runtime), or None when the run was killed (``killed_reason`` says why). stdout and
    stderr are decoded as UTF-8 (bad bytes replaced) and hold at most ``limits.output_bytes``
    between them; ``*_truncated`` says when more was written.
    """

    model_config = ConfigDict(frozen=True)

    kind: Literal["sandbox_result"] = "sandbox_result"
    runtime: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    killed_reason: KilledReason | None = None
    duration_s: float
    cpu_s: float | None = Field(default=None, description="CPU seconds used, when measured")
    disk_full: bool | None = Field(
        default=None,
        description="the run filled its scratch space (limits.disk_mb): writes past it failed "
        "with ENOSPC; None where the host cannot measure it",
    )
    limits: Limits = Limits()
