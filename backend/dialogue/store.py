"""What the dialogue service remembers beside the checkpoints: each dialogue's summary and
breakpoints, the amendments awaiting approval, and the motivator's goal queue.

Plain ``sqlite3`` in ``HOME/dialogue/dialogues.sqlite`` (no LangGraph), so listing dialogues,
approvals and goals, and finding the dialogues to resume after a restart, is cheap.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from backend.fsio import private_file
from shared_api.dialogue import ApprovalInfo, DialogueSummary, GoalInfo
from shared_api.errors import NotFoundError

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS dialogues (
    id TEXT PRIMARY KEY, goal TEXT NOT NULL, status TEXT NOT NULL, reason TEXT DEFAULT '',
    next TEXT DEFAULT '[]', round INTEGER DEFAULT 0, max_rounds INTEGER DEFAULT 0,
    dissonance REAL DEFAULT 0, convergence REAL DEFAULT 0, personas TEXT DEFAULT '{}',
    breakpoints TEXT DEFAULT '[]', head TEXT DEFAULT '', outcome TEXT DEFAULT '',
    created REAL, updated REAL
);
CREATE TABLE IF NOT EXISTS approvals (
    interrupt_id TEXT PRIMARY KEY, dialogue_id TEXT NOT NULL, proto TEXT, field TEXT,
    old TEXT, new TEXT, diff TEXT, reason TEXT, status TEXT DEFAULT 'pending',
    note TEXT DEFAULT '', version INTEGER, created REAL, decided REAL,
    resumed INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS goals (
    id TEXT PRIMARY KEY, text TEXT NOT NULL, source TEXT, proto TEXT DEFAULT '',
    score REAL DEFAULT 0, status TEXT DEFAULT 'proposed', dialogue_id TEXT DEFAULT '',
    created REAL, updated REAL, detail TEXT DEFAULT '{}', key TEXT DEFAULT ''
);
"""
_JSON_COLUMNS = {"next", "personas", "breakpoints", "detail"}
_DIALOGUE_COLUMNS = frozenset(
    [
        "goal",
        "status",
        "reason",
        "next",
        "round",
        "max_rounds",
        "dissonance",
        "convergence",
        "personas",
        "breakpoints",
        "head",
        "outcome",
    ]
)


class DialogueStore:
    def __init__(self, path: Path) -> None:
        private_file(path)
        self.path = path
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._lock, self._conn:
            return self._conn.execute(sql, args).rowcount

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [
            {k: (json.loads(r[k]) if k in _JSON_COLUMNS and r[k] else r[k]) for k in r.keys()}  # noqa: SIM118 - sqlite3.Row
            for r in rows
        ]

    # -- dialogues ----------------------------------------------------------------------------
    def add_dialogue(self, summary: DialogueSummary) -> None:
        self._write(
            "INSERT INTO dialogues (id, goal, status, reason, next, round, max_rounds, "
            "personas, breakpoints, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                summary.dialogue_id,
                summary.goal,
                summary.status,
                summary.reason,
                json.dumps(summary.next),
                summary.round,
                summary.max_rounds,
                json.dumps(summary.personas),
                json.dumps(summary.breakpoints),
                summary.created,
                summary.updated,
            ),
        )

    def update_dialogue(self, dialogue_id: str, **fields: Any) -> DialogueSummary:
        unknown = set(fields) - _DIALOGUE_COLUMNS
        if unknown:
            raise ValueError(f"unknown dialogue columns {sorted(unknown)}")
        values = [json.dumps(v) if k in _JSON_COLUMNS else v for k, v in fields.items()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._write(
            f"UPDATE dialogues SET {sets}, updated = ? WHERE id = ?",  # noqa: S608 - checked columns
            (*values, time.time(), dialogue_id),
        )
        return self.dialogue(dialogue_id)

    def dialogue(self, dialogue_id: str) -> DialogueSummary:
        rows = self._read("SELECT * FROM dialogues WHERE id = ?", (dialogue_id,))
        if not rows:
            raise NotFoundError(
                f"No dialogue {dialogue_id!r}; `list_dialogues` shows them.",
                dialogue_id=dialogue_id,
            )
        return _summary(rows[0])

    def dialogues(self, statuses: tuple[str, ...] = ()) -> list[DialogueSummary]:
        if statuses:
            marks = ",".join("?" * len(statuses))
            rows = self._read(
                f"SELECT * FROM dialogues WHERE status IN ({marks}) ORDER BY created",  # noqa: S608
                statuses,
            )
        else:
            rows = self._read("SELECT * FROM dialogues ORDER BY created")
        return [_summary(r) for r in rows]

    def delete_dialogues(self, dialogue_ids: list[str]) -> None:
        for dialogue_id in dialogue_ids:
            self._write("DELETE FROM dialogues WHERE id = ?", (dialogue_id,))
            self._write("DELETE FROM approvals WHERE dialogue_id = ?", (dialogue_id,))

    # -- approvals ----------------------------------------------------------------------------
    def add_approval(self, approval: ApprovalInfo) -> bool:
        """Record a proposal once; False when it was already known (a resumed dialogue)."""
        return (
            self._write(
                "INSERT OR IGNORE INTO approvals (interrupt_id, dialogue_id, proto, field, old, "
                "new, diff, reason, status, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    approval.interrupt_id,
                    approval.dialogue_id,
                    approval.proto,
                    approval.field,
                    approval.old,
                    approval.new,
                    approval.diff,
                    approval.reason,
                    approval.status,
                    approval.created,
                ),
            )
            == 1
        )

    def approval(self, interrupt_id: str) -> ApprovalInfo:
        rows = self._read("SELECT * FROM approvals WHERE interrupt_id = ?", (interrupt_id,))
        if not rows:
            raise NotFoundError(
                f"No amendment awaits a decision under interrupt id {interrupt_id!r}; "
                "`list_approvals` shows the pending ones.",
                interrupt_id=interrupt_id,
            )
        return _approval(rows[0])

    def approvals(
        self, *, dialogue_id: str | None = None, pending_only: bool = True
    ) -> list[ApprovalInfo]:
        sql, args = "SELECT * FROM approvals WHERE 1=1", []
        if dialogue_id is not None:
            sql += " AND dialogue_id = ?"
            args.append(dialogue_id)
        if pending_only:
            sql += " AND status = 'pending'"
        return [_approval(r) for r in self._read(sql + " ORDER BY created", tuple(args))]

    def decide(
        self, interrupt_id: str, status: str, note: str, version: int | None
    ) -> ApprovalInfo:
        self._write(
            "UPDATE approvals SET status = ?, note = ?, version = ?, decided = ? "
            "WHERE interrupt_id = ?",
            (status, note, version, time.time(), interrupt_id),
        )
        return self.approval(interrupt_id)

    def decision(self, interrupt_id: str) -> dict[str, Any] | None:
        """The decision to resume with, if the approval was decided but not yet resumed."""
        rows = self._read(
            "SELECT * FROM approvals WHERE interrupt_id = ? AND status != 'pending' "
            "AND resumed = 0",
            (interrupt_id,),
        )
        if not rows:
            return None
        row = rows[0]
        return {
            "approve": row["status"] == "approved",
            "note": row["note"] or "",
            "version": row["version"],
        }

    def mark_resumed(self, interrupt_id: str) -> None:
        self._write("UPDATE approvals SET resumed = 1 WHERE interrupt_id = ?", (interrupt_id,))

    # -- goals --------------------------------------------------------------------------------
    def add_goal(self, goal: GoalInfo, key: str) -> None:
        self._write(
            "INSERT INTO goals (id, text, source, proto, score, status, dialogue_id, created, "
            "updated, detail, key) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                goal.goal_id,
                goal.text,
                goal.source,
                goal.proto,
                goal.score,
                goal.status,
                goal.dialogue_id,
                goal.created,
                goal.updated,
                json.dumps(goal.detail),
                key,
            ),
        )

    def update_goal(self, goal_id: str, **fields: Any) -> GoalInfo:
        allowed = {"status", "dialogue_id"}
        if set(fields) - allowed:
            raise ValueError(f"unknown goal columns {sorted(set(fields) - allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._write(
            f"UPDATE goals SET {sets}, updated = ? WHERE id = ?",  # noqa: S608 - checked columns
            (*fields.values(), time.time(), goal_id),
        )
        return self.goal(goal_id)

    def goal(self, goal_id: str) -> GoalInfo:
        rows = self._read("SELECT * FROM goals WHERE id = ?", (goal_id,))
        if not rows:
            raise NotFoundError(f"No goal {goal_id!r}; `list_goals` shows them.", goal_id=goal_id)
        return _goal(rows[0])

    def goals(self, limit: int = 200) -> list[GoalInfo]:
        rows = self._read("SELECT * FROM goals ORDER BY created DESC LIMIT ?", (limit,))
        return [_goal(r) for r in reversed(rows)]

    def goal_for_dialogue(self, dialogue_id: str) -> GoalInfo | None:
        rows = self._read("SELECT * FROM goals WHERE dialogue_id = ?", (dialogue_id,))
        return _goal(rows[0]) if rows else None

    def recent_goal_times(self, since: float, key: str | None = None) -> list[float]:
        args: list[Any]
        sql, args = "SELECT created FROM goals WHERE created >= ?", [since]
        if key is not None:
            sql += " AND key = ?"
            args.append(key)
        return [float(r["created"]) for r in self._read(sql, tuple(args))]


def _summary(row: dict[str, Any]) -> DialogueSummary:
    return DialogueSummary(
        dialogue_id=row["id"],
        goal=row["goal"],
        status=row["status"],
        reason=row["reason"] or "",
        next=row["next"] or [],
        round=row["round"] or 0,
        max_rounds=row["max_rounds"] or 0,
        dissonance=row["dissonance"] or 0.0,
        convergence=row["convergence"] or 0.0,
        personas=row["personas"] or {},
        breakpoints=row["breakpoints"] or [],
        head=row["head"] or "",
        outcome=row["outcome"] or "",
        created=row["created"] or 0.0,
        updated=row["updated"] or 0.0,
    )


def _approval(row: dict[str, Any]) -> ApprovalInfo:
    return ApprovalInfo(
        interrupt_id=row["interrupt_id"],
        dialogue_id=row["dialogue_id"],
        proto=row["proto"],
        field=row["field"],
        old=row["old"] or "",
        new=row["new"] or "",
        diff=row["diff"] or "",
        reason=row["reason"] or "",
        status=row["status"],
        created=row["created"] or 0.0,
        version=row["version"],
    )


def _goal(row: dict[str, Any]) -> GoalInfo:
    return GoalInfo(
        goal_id=row["id"],
        text=row["text"],
        source=row["source"] or "",
        proto=row["proto"] or "",
        score=row["score"] or 0.0,
        status=row["status"],
        dialogue_id=row["dialogue_id"] or "",
        created=row["created"] or 0.0,
        updated=row["updated"] or 0.0,
        detail=row["detail"] or {},
    )
