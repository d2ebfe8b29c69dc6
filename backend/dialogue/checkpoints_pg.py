"""Dialogue checkpoints on PostgreSQL (``[dialogue] checkpoints = "postgresql://..."``).

LangGraph's own ``PostgresSaver`` over a ``psycopg_pool`` connection pool, with the signed,
allow-listed serializer (``serde.py``). The password never goes in config.toml: libpq reads it
from ``$PGPASSWORD`` or ``~/.pgpass`` (a password in the URL is accepted but never logged).

Reads of many checkpoints (the debugger's history) are one query (``read_many``), not one
round trip per checkpoint: LangGraph's own ``SELECT_SQL`` (each row with its blobs and
pending writes) over ``checkpoint_id = ANY(...)``, decoded by the saver itself.

Tables: ``checkpoints`` (one row per checkpoint, small values inline as JSONB),
``checkpoint_blobs`` (larger channel values, keyed by channel version and shared between
checkpoints) and ``checkpoint_writes`` (pending writes). Pruning deletes old checkpoints and
their writes, then the blobs no remaining checkpoint refers to, in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg import Connection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from backend.dialogue.checkpoint_base import chain_from
from backend.dialogue.serde import SignedSerializer
from backend.urls import redact
from shared_api.errors import UnavailableError

log = logging.getLogger(__name__)

POOL_MAX = 4
OPEN_TIMEOUT_S = 10.0

_PRUNE = (
    """DELETE FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = ''
       AND checkpoint_id = ANY(%(doomed)s)""",
    """DELETE FROM checkpoint_writes WHERE thread_id = %(t)s AND checkpoint_ns = ''
       AND checkpoint_id = ANY(%(doomed)s)""",
    """DELETE FROM checkpoint_blobs b WHERE b.thread_id = %(t)s AND NOT EXISTS (
           SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id
           AND c.checkpoint_ns = b.checkpoint_ns
           AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)""",
)


class PostgresStore:
    def __init__(self, url: str, serde: SignedSerializer) -> None:
        self.where = redact(url)
        self._pool: ConnectionPool[Connection[DictRow]] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
            open=False,
            name="dialogue-checkpoints",
        )
        try:
            self._pool.open(wait=True, timeout=OPEN_TIMEOUT_S)
        except PoolTimeout:
            self._pool.close()
            raise UnavailableError(
                f"PostgreSQL at {self.where} did not accept a connection within "
                f"{OPEN_TIMEOUT_S:g} s. Start it, check the URL in [dialogue] checkpoints, and "
                "put the password in $PGPASSWORD or ~/.pgpass.",
                where=self.where,
            ) from None
        self._pg = PostgresSaver(self._pool, serde=serde)
        self._pg.setup()
        log.info("dialogue checkpoints on %s", self.where)

    @property
    def saver(self) -> PostgresSaver:
        return self._pg

    def prune_thread(self, thread_id: str, keep: int, protect: Iterable[str] = ()) -> int:
        if keep <= 0:
            return 0
        spared = set(protect)
        with self._pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                "SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s "
                "AND checkpoint_ns = '' ORDER BY checkpoint_id DESC OFFSET %s",
                (thread_id, keep),
            ).fetchall()
            doomed = [r["checkpoint_id"] for r in rows if r["checkpoint_id"] not in spared]
            if doomed:
                for sql in _PRUNE:
                    conn.execute(sql, {"t": thread_id, "doomed": doomed})
        return len(doomed)

    def delete_threads(self, thread_ids: Iterable[str]) -> None:
        for thread_id in thread_ids:
            self._pg.delete_thread(thread_id)

    def read_many(self, thread_id: str, ids: list[str]) -> list[CheckpointTuple]:
        """The checkpoints ``ids`` of a thread, in that order, in one query; ids no longer
        there (pruned meanwhile) are left out."""
        if not ids:
            return []
        with self._pool.connection() as conn:
            rows = conn.execute(  # binary, like the saver's own reads: its loader's types
                self._pg.SELECT_SQL + "WHERE thread_id = %s AND checkpoint_ns = '' "
                "AND checkpoint_id = ANY(%s)",
                (thread_id, ids),
                binary=True,
            ).fetchall()
        found = {row["checkpoint_id"]: row for row in rows}
        return [self._load(thread_id, found[i]) for i in ids if i in found]

    def _load(self, thread_id: str, row: DictRow) -> CheckpointTuple:
        if row["checkpoint"]["v"] < 4 and row["parent_checkpoint_id"]:
            # a checkpoint from before LangGraph's format 4: its pending sends need the
            # migration get_tuple does (this store never writes one; kept for old databases)
            config: RunnableConfig = {
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": "",
                    "checkpoint_id": row["checkpoint_id"],
                }
            }
            tup = self._pg.get_tuple(config)
            assert tup is not None
            return tup
        return self._pg._load_checkpoint_tuple(row)

    def count(self, thread_id: str) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM checkpoints WHERE thread_id = %s", (thread_id,)
            ).fetchone()
        return int(row["n"]) if row else 0

    def blob_count(self, thread_id: str) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM checkpoint_blobs WHERE thread_id = %s", (thread_id,)
            ).fetchone()
        return int(row["n"]) if row else 0

    def branch(self, thread_id: str, tip: str = "", limit: int = 200) -> tuple[list[str], bool]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT checkpoint_id, parent_checkpoint_id FROM checkpoints "
                "WHERE thread_id = %s AND checkpoint_ns = ''",
                (thread_id,),
            ).fetchall()
        parents = {r["checkpoint_id"]: r["parent_checkpoint_id"] for r in rows}
        return chain_from(parents, tip, limit)

    def close(self) -> None:
        self._pool.close()
