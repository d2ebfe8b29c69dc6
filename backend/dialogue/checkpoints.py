"""The dialogues' SQLite checkpointer in the home directory, with retention and pruning.

One thread per dialogue (``thread_id`` = the dialogue id). Every step is written and committed
before the next one starts (``durability="sync"``, WAL with ``synchronous=FULL``), so a
``kill -9`` loses at most the node that was running. Checkpoints store the whole graph state,
which is kept small (a transcript window, no growing lists), and old checkpoints are pruned
per thread (``keep_checkpoints``) with incremental vacuum, so the file cannot grow without
bound.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver

from backend.dialogue.store import private_file

CHUNK = 500


def open_saver(path: Path) -> SqliteSaver:
    """Open (or create, 0600) the checkpoint database at ``path``."""
    fresh = not path.exists()
    private_file(path)
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    if fresh:  # must precede the first table; lets pruning hand pages back to the OS
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    saver = SqliteSaver(conn)
    saver.setup()
    return saver


def prune_thread(saver: SqliteSaver, thread_id: str, keep: int, protect: Iterable[str] = ()) -> int:
    """Delete all but the ``keep`` newest checkpoints of a thread (and their pending writes),
    sparing ``protect`` (e.g. a rewound head). Returns how many were deleted."""
    if keep <= 0:
        return 0
    spared = set(protect)
    with saver.cursor() as cur:
        rows = cur.execute(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
            "ORDER BY checkpoint_id DESC LIMIT -1 OFFSET ?",
            (thread_id, keep),
        ).fetchall()
        doomed = [r[0] for r in rows if r[0] not in spared]
        for i in range(0, len(doomed), CHUNK):
            chunk = doomed[i : i + CHUNK]
            marks = ",".join("?" * len(chunk))
            for table in ("checkpoints", "writes"):
                cur.execute(
                    f"DELETE FROM {table} WHERE thread_id = ? AND checkpoint_id IN ({marks})",  # noqa: S608 - placeholders only
                    (thread_id, *chunk),
                )
    if doomed:
        vacuum(saver)
    return len(doomed)


def delete_threads(saver: SqliteSaver, thread_ids: Iterable[str]) -> None:
    for thread_id in thread_ids:
        saver.delete_thread(thread_id)
    vacuum(saver)


def vacuum(saver: SqliteSaver) -> None:
    """Hand free pages back (a no-op for a database made without auto_vacuum)."""
    with saver.lock:
        saver.conn.execute("PRAGMA incremental_vacuum")
        saver.conn.commit()


def count(saver: SqliteSaver, thread_id: str) -> int:
    with saver.cursor(transaction=False) as cur:
        row = cur.execute(
            "SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (thread_id,)
        ).fetchone()
    return int(row[0])


def file_bytes(path: Path) -> int:
    """The database's size on disk, write-ahead log included."""
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def branch(
    saver: SqliteSaver, thread_id: str, tip: str = "", limit: int = 200
) -> tuple[list[str], bool]:
    """The checkpoint ids from ``tip`` (default: the newest) back along its parents, oldest
    first, at most ``limit``; True when older ones exist (pruned, or past the limit). Reads
    ids only, so the cost follows ``limit``, not the thread's size."""
    with saver.cursor(transaction=False) as cur:
        rows = cur.execute(
            "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints "
            "WHERE thread_id = ? AND checkpoint_ns = ''",
            (thread_id,),
        ).fetchall()
    parents = {row[0]: row[1] for row in rows}
    current = tip or (max(parents) if parents else "")
    chain: list[str] = []
    while current in parents and len(chain) < limit:
        chain.append(current)
        current = parents[current] or ""
    chain.reverse()
    return chain, bool(current)
