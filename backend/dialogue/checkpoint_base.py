"""What every checkpoint store of the dialogues is (``checkpoints.py`` opens one): the
protocol the debugger and retention use beyond LangGraph's checkpointer, and the walk along a
branch of checkpoint ids that both stores share. Apart from ``checkpoints.py`` so that the
PostgreSQL store can use it without importing the module that chooses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver


class CheckpointStore(Protocol):
    """A LangGraph checkpointer plus what the debugger and retention need beyond it."""

    #: Where the checkpoints live, for ``status`` (no password).
    where: str

    @property
    def saver(self) -> BaseCheckpointSaver[str]: ...

    def prune_thread(self, thread_id: str, keep: int, protect: Iterable[str] = ()) -> int:
        """Delete all but the ``keep`` newest checkpoints of a thread (and their pending
        writes), sparing ``protect`` (e.g. a rewound head). Returns how many were deleted."""
        ...

    def delete_threads(self, thread_ids: Iterable[str]) -> None: ...

    def count(self, thread_id: str) -> int: ...

    def branch(self, thread_id: str, tip: str = "", limit: int = 200) -> tuple[list[str], bool]:
        """The checkpoint ids from ``tip`` (default: the newest) back along its parents,
        oldest first, at most ``limit``; True when older ones exist. Reads ids only."""
        ...

    def close(self) -> None: ...


def chain_from(parents: dict[str, str | None], tip: str, limit: int) -> tuple[list[str], bool]:
    """Walk ``parents`` (id -> parent id) from ``tip`` (default: the newest id)."""
    current = tip or (max(parents) if parents else "")
    chain: list[str] = []
    while current in parents and len(chain) < limit:
        chain.append(current)
        current = parents[current] or ""
    chain.reverse()
    return chain, bool(current)
