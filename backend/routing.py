"""The dispatch table: the ``Context`` handlers run in, one ``Route`` per command kind, and
the ``route`` decorator with which each route module registers its handlers.

``blocking`` handlers run on the worker pool so a slow method, a journal fsync or an image
save never holds up other requests; only handlers that neither wait on disk nor run user
code run inline on the request loop. The server imports the route modules
(``backend.handlers``, ``backend.dialogue.routes``, ``backend.learning.routes``); they import
this module, never the server or each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared_api.errors import UnavailableError
from shared_api.replies import Reply

if TYPE_CHECKING:
    from backend.forge import ToolForge
    from backend.llm.service import PersonaLLM
    from backend.memory.service import MemoryService
    from backend.runtime import Runtime


@dataclass
class Context:
    runtime: Runtime
    llm: PersonaLLM
    endpoints: dict[str, str]
    request_stop: Callable[[bool], None]
    started: float = field(default_factory=time.monotonic)
    stats: dict[str, Any] = field(default_factory=dict)
    #: The dialogue service (``backend.dialogue.service.DialogueService``), set at startup.
    dialogue: Any = None
    forge: ToolForge | None = None
    #: The episodic memory (``backend.memory.service.MemoryService``), set at startup.
    memory: MemoryService | None = None
    #: The learning loop (``backend.learning.service.LearningService``), set at startup.
    learning: Any = None
    #: Who started the backend, and whether a workbench is attached (``backend.attach``).
    attach: Any = None

    def tool_forge(self) -> ToolForge:
        if self.forge is None:
            raise UnavailableError("The Tool Forge is not running in this backend.")
        return self.forge


Handler = Callable[[Context, Any], Reply]
#: A shortcut for a command's known-good bodies: given the decoded body (a dict that holds
#: ``kind``), the reply as plain data, or None for any other shape, which then goes through
#: full validation and the handler (and gets their typed errors).
FastHandler = Callable[[Context, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Route:
    handler: Handler
    blocking: bool
    fast: FastHandler | None = None


ROUTES: dict[str, Route] = {}


def route(
    kind: str, *, blocking: bool = False, fast: FastHandler | None = None
) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``kind``; ``fast`` (only for a non-blocking route) answers the
    bodies it recognizes without building the command and reply models."""
    if blocking and fast is not None:
        raise ValueError(f"{kind}: a blocking route has no inline fast path")

    def register(fn: Handler) -> Handler:
        ROUTES[kind] = Route(fn, blocking, fast)
        return fn

    return register
