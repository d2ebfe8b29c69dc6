"""Where each engine lives, for ``status``: the model behind each persona, the dialogue
checkpoints, the memory and the sandbox. Addresses only: no key, no password."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.routing import Context


def engines(ctx: Context) -> dict[str, Any]:
    forge = ctx.forge.status() if ctx.forge else None
    sandbox = (forge or {}).get("sandbox") or {}
    return {
        "models": {
            name: {"backend": s.backend, "model": s.model, "where": ctx.llm.where(s.backend)}
            for name, s in sorted(ctx.llm.selections.items())
        },
        "checkpoints": ctx.dialogue.checkpoints_where if ctx.dialogue else None,
        "memory": ctx.memory.where if ctx.memory else None,
        "sandbox": sandbox.get("runtime"),
    }
