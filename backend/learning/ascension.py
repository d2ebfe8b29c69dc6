"""BABS proposes a new base model for a persona (the Ascension protocol's first step).

The options are the bundled embedded model, the GGUF files listed in ``learning.bases`` and
the models installed on Ollama. BABS is asked to pick one with a reason; a small model often
answers off the list, so her choice falls back to a rule (the first option the persona does
not use yet) and the proposal says so. The trial itself is ``ascend``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from backend.learning import image_ops
from backend.llm.base import ChatMessage, GenerationParams
from backend.protos import Proto
from shared_api.replies import AscensionProposal

if TYPE_CHECKING:
    from backend.learning.config import LearningConfig
    from backend.llm.service import PersonaLLM
    from backend.runtime import Runtime


def options(bases: list[str], llm: PersonaLLM) -> list[str]:
    """The bases a persona could ascend to: the embedded model, the GGUF files listed in
    ``bases`` that exist, and the models installed on Ollama."""
    found = ["embedded"]
    found += [str(Path(b).expanduser()) for b in bases if Path(b).expanduser().is_file()]
    names, error = llm.probe_ollama()
    if error is None:
        found += sorted(f"ollama:{n}" for n in names)
    return found


def propose(
    runtime: Runtime, llm: PersonaLLM, config: LearningConfig, proto: Proto
) -> AscensionProposal:
    choices = options(config.bases, llm)
    base = str(proto.learning.get("base") or "")
    in_use = base or "embedded"
    current = image_ops.model_of(proto)
    researcher = config.researcher
    text = ""
    if researcher in runtime.manager.names():
        babs = runtime.manager.get(researcher)
        selection = llm.select(babs)
        listing = "\n".join(f"- {c}" for c in choices)
        question = (
            f"{proto.name} ({proto.codex.role}) now talks through "
            f"{current.id if current else in_use}. Which of these base models should be "
            f"trialled for it next?\n{listing}\nAnswer with the option exactly, then one "
            "sentence of reason."
        )
        try:
            text = llm.manager.generate(
                backend=selection.backend,
                model=selection.model,
                messages=[ChatMessage("user", question)],
                system=babs.codex.system_prompt,
                params=GenerationParams(max_tokens=64, temperature=0.0),
                caller=researcher,
            ).text.strip()
        except Exception as exc:  # a model failure: the rule decides
            text = f"(BABS could not answer: {exc})"
    picked = next((c for c in choices if c != in_use and c.lower() in text.lower()), "")
    if picked:
        return AscensionProposal(
            proto=proto.name, options=choices, choice=picked, reason=f"{researcher}: {text}"
        )
    fallback = next((c for c in choices if c != in_use), in_use)
    why = (
        f"{researcher} named no other option ({text[:200]!r}); proposing the first base not in use"
    )
    return AscensionProposal(proto=proto.name, options=choices, choice=fallback, reason=why)
