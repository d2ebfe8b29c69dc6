"""Where the dialogues' checkpoints live: SQLite in the home (the default) or PostgreSQL.

One thread per dialogue (``thread_id`` = the dialogue id). Every step is written and committed
before the next one starts (``durability="sync"``; SQLite in WAL with ``synchronous=FULL``),
so a ``kill -9`` loses at most the node that was running. Checkpoints store the whole graph
state, which is kept small (a transcript window, no growing lists), and old checkpoints are
pruned per thread (``keep_checkpoints``), so the store cannot grow without bound.

Every blob is signed and read back through ``serde.SignedSerializer``: a tampered checkpoint
is refused, never run. ``[dialogue] checkpoints`` picks the store: empty for SQLite in
``HOME/dialogue``, or a ``postgresql://`` URL (``checkpoints_pg.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver

from backend.dialogue.checkpoint_base import CheckpointStore, chain_from
from backend.dialogue.serde import SignedSerializer, checkpoint_key
from backend.fsio import private_file
from backend.urls import redact
from shared_api.errors import ConfigInvalidError

CHUNK = 500
FILE_NAME = "checkpoints.sqlite"


def describe(spec: str, directory: Path) -> str:
    """Where ``spec`` keeps the checkpoints, without a password."""
    return f"sqlite:{directory / FILE_NAME}" if spec in ("", "sqlite") else redact(spec)


def open_store(spec: str, directory: Path, image_key: bytes) -> CheckpointStore:
    """The store ``spec`` names ("" or "sqlite": ``directory/checkpoints.sqlite``)."""
    serde = SignedSerializer(checkpoint_key(image_key))
    if spec in ("", "sqlite"):
        return SqliteStore(directory / FILE_NAME, serde)
    if spec.startswith(("postgresql://", "postgres://")):
        from backend.dialogue.checkpoints_pg import PostgresStore

        return PostgresStore(spec, serde)
    raise ConfigInvalidError(
        f"dialogue.checkpoints = {redact(spec)!r} is neither empty (SQLite in the home) nor a "
        "postgresql:// URL. Fix it in config.toml."
    )


class SqliteStore:
    def __init__(self, path: Path, serde: SignedSerializer) -> None:
        self.path = path
        self.where = f"sqlite:{path}"
        fresh = not path.exists()
        private_file(path)
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        if fresh:  # must precede the first table; lets pruning hand pages back to the OS
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        self.saver = self._sqlite = SqliteSaver(conn, serde=serde)
        self._sqlite.setup()

    def prune_thread(self, thread_id: str, keep: int, protect: Iterable[str] = ()) -> int:
        if keep <= 0:
            return 0
        spared = set(protect)
        with self._sqlite.cursor() as cur:
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
            self.vacuum()
        return len(doomed)

    def delete_threads(self, thread_ids: Iterable[str]) -> None:
        for thread_id in thread_ids:
            self._sqlite.delete_thread(thread_id)
        self.vacuum()

    def vacuum(self) -> None:
        """Hand free pages back (a no-op for a database made without auto_vacuum)."""
        with self._sqlite.lock:
            self._sqlite.conn.execute("PRAGMA incremental_vacuum")
            self._sqlite.conn.commit()

    def count(self, thread_id: str) -> int:
        with self._sqlite.cursor(transaction=False) as cur:
            row = cur.execute(
                "SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (thread_id,)
            ).fetchone()
        return int(row[0])

    def file_bytes(self) -> int:
        """The database's size on disk, write-ahead log included."""
        return sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm"))
            if p.exists()
        )

    def branch(self, thread_id: str, tip: str = "", limit: int = 200) -> tuple[list[str], bool]:
        with self._sqlite.cursor(transaction=False) as cur:
            rows = cur.execute(
                "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints "
                "WHERE thread_id = ? AND checkpoint_ns = ''",
                (thread_id,),
            ).fetchall()
        return chain_from({row[0]: row[1] for row in rows}, tip, limit)

    def close(self) -> None:
        self._sqlite.conn.close()
