"""Which model serves a role (``chat``, ``code``, ``judge``) for a persona.

Every caller that needs "the model for the judge role" or "the code role" goes through
``role_selection``, so that model roles in config are one change here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from shared_api.replies import ModelSelection

if TYPE_CHECKING:
    from backend.llm.service import PersonaLLM
    from backend.protos import Proto

ModelRole = Literal["chat", "code", "judge"]


def role_selection(llm: PersonaLLM, role: ModelRole, proto: Proto) -> ModelSelection:
    """The model ``proto`` uses for ``role``: for now the persona's own selection (the
    embedded model unless config or its codex picks another)."""
    return llm.select(proto)
