"""Where each engine lives, for ``status``: the model behind each persona (``models``: its
chat role; ``roles``: every role, chat, code and judge), the dialogue checkpoints, the memory
and the sandbox. Addresses only: no key, no password."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.routing import Context
    from shared_api.replies import ModelSelection


def engines(ctx: Context) -> dict[str, Any]:
    forge = ctx.forge.status() if ctx.forge else None
    sandbox = (forge or {}).get("sandbox") or {}

    def place(s: ModelSelection) -> dict[str, str]:
        return {"backend": s.backend, "model": s.model, "where": ctx.llm.where(s.backend)}

    return {
        "models": {name: place(s) for name, s in sorted(ctx.llm.selections.items())},
        "roles": {
            name: {role: place(s) for role, s in sorted(roles.items())}
            for name, roles in sorted(ctx.llm.role_selections.items())
        },
        "checkpoints": ctx.dialogue.checkpoints_where if ctx.dialogue else None,
        "memory": ctx.memory.where if ctx.memory else None,
        "sandbox": sandbox.get("runtime"),
    }
