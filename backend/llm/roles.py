"""Which model serves which role, and why.

A persona talks through a model per *role*:

- ``chat``: its replies and its dialogue turns;
- ``code``: writing tools in the forge (the author persona);
- ``judge``: rubric scores and pairwise verdicts (ALFRED).

For a persona and a role, the first rule that names a model wins:

1. ``[models.personas.NAME] ROLE``, then ``[models.personas.NAME] model``;
2. ``[models.roles] ROLE``;
3. with ``[models] backend = "auto"`` (the default), the persona's codex ``default_model`` when
   Ollama is reachable and has it installed (``backend = "ollama"``: always that model);
4. the default model: ``main.py --model`` / ``$ENTROPIC_MODEL``, else ``[models] default``,
   else Qwen2.5-Coder-1.5B, or SmolLM2-135M while that is not downloaded yet.

So by default all three roles use the same model, and only one model is ever resident.
With ``backend = "embedded"`` a rule that names an Ollama model is skipped. A persona's
adopted fine-tune (the learning loop) serves its ``chat`` role before all of these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol, get_args

from backend.config import ModelsConfig
from backend.llm.catalog import TINY_MODEL, ModelRef, default_reference, parse_ref
from shared_api.replies import ModelSelection

if TYPE_CHECKING:
    from backend.protos import Proto

ModelRole = Literal["chat", "code", "judge"]
Rule = Literal["config", "codex", "default"]
ROLES: tuple[ModelRole, ...] = get_args(ModelRole)
#: () -> (installed Ollama model names, error or None); cached by the caller.
OllamaProbe = Callable[[], tuple[set[str], str | None]]


def explicit(config: ModelsConfig, persona: str, role: ModelRole) -> tuple[str, str] | None:
    """(reference, where it is written) from config.toml's rules 1-2, if any."""
    own = config.personas.get(persona)
    if own is not None:
        if getattr(own, role):
            return getattr(own, role), f"[models.personas.{persona}] {role}"
        if own.model:
            return own.model, f"[models.personas.{persona}] model"
    if getattr(config.roles, role):
        return getattr(config.roles, role), f"[models.roles] {role}"
    return None


def default_model(config: ModelsConfig) -> tuple[ModelRef, str]:
    """Rule 4: the default model reference, and why it is the default."""
    text, why = default_reference(config.default or config.embedded_model)
    ref = parse_ref(text, config.embedded_sha256)
    if ref.entry is not None and ref.entry.chunks and not (ref.path and ref.path.is_file()):
        tiny = parse_ref(TINY_MODEL)
        return tiny, (
            f"{ref.entry.name} is not downloaded yet (run `main.py models fetch`), so the "
            f"fallback {TINY_MODEL}"
        )
    return ref, why


def _selection(ref: ModelRef, role: ModelRole, why: str) -> ModelSelection:
    return ModelSelection(backend=ref.backend, model=ref.model, reason=f"{role}: {why}")


def choose(
    config: ModelsConfig,
    persona: str,
    codex_model: str,
    role: ModelRole,
    probe: OllamaProbe,
    ollama_host: str,
) -> tuple[ModelSelection, ModelRef | None, Rule]:
    """The model ``persona`` uses for ``role`` (rules 1-4 above), its parsed reference (None
    for the codex's Ollama model) and which kind of rule chose it."""
    notes: list[str] = []
    found = explicit(config, persona, role)
    if found is not None:
        text, where = found
        ref = parse_ref(text, config.embedded_sha256)
        if config.backend == "embedded" and ref.kind == "ollama":
            notes.append(f"{where} = {text} skipped (backend = embedded)")
        else:
            return _selection(ref, role, f"{where} = {text}"), ref, "config"
    if config.backend == "ollama":
        chosen = ModelSelection(backend="ollama", model=codex_model, reason="forced by config")
        return chosen, None, "codex"
    if config.backend == "auto":
        names, error = probe()
        if error is not None:
            notes.append(f"Ollama unreachable at {ollama_host}")
        elif codex_model in names or f"{codex_model}:latest" in names:
            why = f"{role}: the codex model, installed on {ollama_host}"
            return ModelSelection(backend="ollama", model=codex_model, reason=why), None, "codex"
        else:
            notes.append(
                f"{codex_model} not installed on Ollama at {ollama_host} "
                f"(ollama pull {codex_model})"
            )
    else:
        notes.append("forced by config (backend = embedded)")
    ref, why = default_model(config)
    reason = "; ".join([*notes, f"the default model ({why})"])
    return _selection(ref, role, reason), ref, "default"


class Selector(Protocol):
    """What chooses a persona's model per role: ``PersonaLLM``."""

    def select(self, proto: Proto, role: ModelRole = ...) -> ModelSelection: ...


def role_selection(llm: Selector, role: ModelRole, proto: Proto) -> ModelSelection:
    """The model ``proto`` uses for ``role``; every caller that needs "the model for the judge
    role" or "the code role" goes through here (the forge, the judge, ALFRED's dialogue)."""
    return llm.select(proto, role)
