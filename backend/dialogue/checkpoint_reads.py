"""Reading many checkpoints of a dialogue at once (the debugger's history): one query where
the store can batch (PostgreSQL: ``PostgresStore.read_many``), else one read each (SQLite,
local and cheap)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # LangGraph is imported when the dialogue graph opens, not at start-up
    from langgraph.checkpoint.base import CheckpointTuple

    from backend.dialogue.checkpoint_base import CheckpointStore


@runtime_checkable
class ReadsMany(Protocol):
    """A store that reads many checkpoints of a thread in one round trip (PostgreSQL)."""

    def read_many(self, thread_id: str, ids: list[str]) -> list[CheckpointTuple]: ...


def read_checkpoints(
    store: CheckpointStore, thread_id: str, ids: list[str]
) -> list[CheckpointTuple]:
    """The checkpoints ``ids`` of a thread, in order, pruned ones left out."""
    if isinstance(store, ReadsMany):
        return store.read_many(thread_id, ids)
    found = (
        store.saver.get_tuple(
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": i}}
        )
        for i in ids
    )
    return [t for t in found if t is not None]
