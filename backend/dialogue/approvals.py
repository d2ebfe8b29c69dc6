"""Codex amendments: the one change the system may not make alone.

ALFRED proposes; the graph's ``amend`` node calls ``interrupt()`` and the dialogue waits
(status ``awaiting_approval``). The proposal is recorded in the dialogue store under its
interrupt id, so it survives restarts. ``DialogueService.decide`` applies the user's verdict:
an approval is committed as the journaled ``amend_codex`` op (the only code path that changes
a codex) and saved in a new image generation; then the graph resumes with
``Command(resume={id: ...})``. This module holds the pure parts: the diff, the approval an
interrupt asks for.
"""

from __future__ import annotations

import difflib
import time
from typing import Any

from shared_api.dialogue import ApprovalInfo


def diff(field: str, old: str, new: str) -> str:
    """A unified diff of a codex field, old -> new."""
    lines = difflib.unified_diff(
        old.splitlines(),
        new.splitlines(),
        f"codex.{field} (now)",
        f"codex.{field} (proposed)",
        lineterm="",
        n=2,
    )
    return "\n".join(lines)


def from_interrupt(interrupt_id: str, dialogue_id: str, value: Any) -> ApprovalInfo | None:
    """The approval an ``amend`` interrupt asks for (None for any other interrupt)."""
    if not isinstance(value, dict) or value.get("type") != "amendment":
        return None
    old, new = str(value.get("old", "")), str(value.get("new", ""))
    return ApprovalInfo(
        interrupt_id=interrupt_id,
        dialogue_id=dialogue_id,
        proto=str(value.get("proto", "")),
        field=value.get("field", "description"),
        old=old,
        new=new,
        diff=diff(str(value.get("field", "")), old, new),
        reason=str(value.get("reason", "")),
        created=time.time(),
    )
