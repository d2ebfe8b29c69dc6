"""The personas' side of the models: which model each persona talks through for each role,
asking it, streaming the answer as events, and recording every interaction in the persona's
history.

Asking by role (see ``backend/llm/roles.py`` for how a model is chosen):

- ``llm.ask(proto, text, role="code")``: the persona's model for that role, its system
  prompt; ``role="chat"`` (the default) adds the loop guards (repeat penalty, stop at a
  repeated sentence, re-sample or trim a degenerate reply);
- ``llm.select(proto, "judge")``: the ``ModelSelection`` for a role, for callers that call
  ``llm.manager.generate`` themselves (the judge, with its own parameters).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backend.bus import EventBus, current_request
from backend.config import ModelsConfig
from backend.llm import endpoints
from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelBackend, OnToken
from backend.llm.degenerate import generate_without_loops
from backend.llm.embedded import EmbeddedBackend
from backend.llm.manager import GIB, ModelManager
from backend.llm.ollama_backend import OllamaBackend
from backend.llm.roles import ROLES, ModelRole, choose, default_model
from backend.memory.service import MemoryService
from backend.protos import Proto
from backend.runtime import Runtime
from shared_api.envelope import new_msg_id
from shared_api.errors import (
    EntropicError,
    ErrorCode,
    ErrorReply,
    ModelUnreachableError,
    UnavailableError,
)
from shared_api.events import Citation, PersonaReply, PersonaStatus, Token, Usage
from shared_api.replies import AskAccepted, ModelSelection

log = logging.getLogger(__name__)

PROBE_TTL_S = 15.0
MAX_IN_FLIGHT = 64


class PersonaLLM:
    def __init__(
        self,
        runtime: Runtime,
        config: ModelsConfig,
        bus: EventBus,
        backends: dict[str, ModelBackend] | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = config
        self.bus = bus
        if backends is None:
            default, _why = default_model(config)
            backends = {
                "ollama": OllamaBackend(config.ollama_host, config.ollama_timeout_s),
                "embedded": EmbeddedBackend(
                    default.text if default.kind == "embedded" else "",
                    config.embedded_sha256,
                    n_threads=config.n_threads,
                    n_ctx=config.n_ctx,
                    prompt_cache_mb=config.prompt_cache_mb,
                ),
                **_openai_backends(config.openai),
            }
        self.manager = ModelManager(
            backends,
            vram_budget_bytes=int(config.vram_budget_gb * GIB),
            on_status=self._publish_status,
            on_metrics=bus.publish,
        )
        self._requests: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ask")
        self._probe: tuple[float, set[str], str | None] | None = None
        #: Each persona's ``chat`` model (also in its state under ``llm``).
        self.selections: dict[str, ModelSelection] = {}
        #: Each persona's model per role, as last refreshed.
        self.role_selections: dict[str, dict[str, ModelSelection]] = {}
        #: The episodic memory: retrieval into prompts, and every interaction recorded.
        self.memory: MemoryService | None = None
        self._citations: dict[str, list[Citation]] = {}  # request id -> for its reply event
        #: The learning loop's model pointer: a persona's adopted model, if it has one.
        self.pointer_selection: Callable[[Proto], ModelSelection | None] | None = None

    @property
    def ollama(self) -> OllamaBackend:
        backend = self.manager.backends["ollama"]
        assert isinstance(backend, OllamaBackend)
        return backend

    def where(self, backend: str) -> str:
        """The address (or file) of a model backend, for ``status``."""
        if backend == "ollama":
            return self.ollama.host
        source = self.manager.backends.get(backend)
        where = getattr(source, "where", None)
        if isinstance(where, str):
            return where
        path = getattr(source, "path", None)
        return f"in-process: {path}" if path else "in-process"

    # -- selection --------------------------------------------------------------------------
    def probe_ollama(self, max_age: float = PROBE_TTL_S) -> tuple[set[str], str | None]:
        """(installed model names, error or None), cached for ``max_age`` seconds."""
        now = time.monotonic()
        if self._probe is None or now - self._probe[0] > max_age:
            try:
                names = {m.name for m in self.ollama.list_models()}
                self._probe = (now, names, None)
            except ModelUnreachableError as exc:
                self._probe = (now, set(), exc.message)
        return self._probe[1], self._probe[2]

    def select(self, proto: Proto, role: ModelRole = "chat") -> ModelSelection:
        """The model ``proto`` talks through for ``role``, and why (``backend/llm/roles.py``).
        Its adopted fine-tune, if any, serves its ``chat`` role first."""
        if role == "chat" and self.pointer_selection is not None:
            adopted = self.pointer_selection(proto)
            if adopted is not None:
                return adopted
        selection, ref, rule = choose(
            self.config,
            proto.name,
            proto.codex.default_model,
            role,
            self.probe_ollama,
            self.ollama.host,
        )
        if ref is not None and ref.kind == "openai":
            return self._remote_selection(ref.text, selection.reason)
        if ref is None or ref.kind != "embedded":
            return selection
        embedded = self.manager.backends.get("embedded")
        if isinstance(embedded, EmbeddedBackend):
            embedded.register(ref)
        elif embedded is not None and rule == "default":  # another embedded backend (a double)
            selection = selection.model_copy(update={"model": embedded.list_models()[0].name})
        return selection

    def for_role(self, proto_name: str, role: ModelRole) -> ModelSelection:
        """The model of the persona called ``proto_name`` for ``role``."""
        return self.select(self.runtime.manager.get(proto_name), role)

    def default_model(self) -> dict[str, str]:
        """The default model reference and why it is the default (for status)."""
        ref, why = default_model(self.config)
        return {"backend": ref.backend, "model": ref.model, "reason": why}

    def _remote_selection(self, reference: str, why: str) -> ModelSelection:
        """A model on an OpenAI-compatible server: no probing, the server answers or the
        call gets a typed error that says why."""
        backend, model = endpoints.parse_reference(reference, self.config.openai)
        where = self.config.openai[backend.removeprefix(endpoints.BACKEND_PREFIX)].base_url
        return ModelSelection(backend=backend, model=model, reason=f"{why} ({where})")

    def refresh_selections(self) -> dict[str, ModelSelection]:
        """Re-select for every persona; a change is written to its state under ``llm``."""
        for proto in self.runtime.manager.list():
            self._remember(proto, self.select(proto))
            self.role_selections[proto.name] = {role: self.select(proto, role) for role in ROLES}
        return dict(self.selections)

    def _remember(self, proto: Proto, selection: ModelSelection) -> None:
        self.selections[proto.name] = selection
        if proto.state.get("llm") != selection.model_dump() and self._is_live(proto):
            self.runtime.commit(
                {
                    "op": "set_state",
                    "proto": proto.name,
                    "path": "llm",
                    "value": selection.model_dump(),
                }
            )

    def _is_live(self, proto: Proto) -> bool:
        return (
            proto.name in self.runtime.manager.names()
            and self.runtime.manager.get(proto.name) is proto
        )

    # -- asking -----------------------------------------------------------------------------
    def ask(
        self,
        proto: Proto,
        text: str,
        *,
        request_id: str | None = None,
        max_tokens: int | None = None,
        on_token: Any = None,
        cancel: threading.Event | None = None,
        recall: bool = True,
        role: ModelRole = "chat",
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        """Ask ``proto`` synchronously through its model for ``role``; records the
        interaction. With ``recall`` the most relevant memories go in front of ``text``, with
        sources. A ``chat`` reply is guarded against loops (``generate_without_loops``); with
        ``json_schema`` the answer is JSON valid under it (see ``structured``)."""
        request_id = request_id or new_msg_id()
        selection = self._selection_for(proto, role)
        params = GenerationParams(
            max_tokens=max_tokens or self.config.max_tokens,
            temperature=self.config.temperature,
            repeat_penalty=self.config.repeat_penalty if role == "chat" else 1.0,
            json_schema=json_schema,
        )
        prompt, citations = self._recall(proto, text, request_id, params) if recall else (text, [])
        messages = [ChatMessage("user", prompt)]

        def generate(
            p: GenerationParams, tokens: OnToken | None, stop: threading.Event
        ) -> Completion:
            return self.manager.generate(
                backend=selection.backend,
                model=selection.model,
                messages=messages,
                system=proto.codex.system_prompt,
                params=p,
                caller=proto.name,
                request_id=request_id,
                on_token=tokens,
                cancel=stop,
            )

        cancel = cancel or threading.Event()
        if role == "chat" and json_schema is None:  # JSON is bounded by its schema
            resample = self.config.resample_temperature
            completion = generate_without_loops(generate, params, on_token, cancel, resample)
        else:
            completion = generate(params, on_token, cancel)
        self._record(proto, request_id, text, selection, completion, citations)
        return completion

    def _selection_for(self, proto: Proto, role: ModelRole) -> ModelSelection:
        """``select``, remembered for status (and, for ``chat``, in the persona's state)."""
        selection = self.select(proto, role)
        self.role_selections.setdefault(proto.name, {})[role] = selection
        if role == "chat":
            self._remember(proto, selection)
        if selection.backend not in self.manager.backends:
            raise UnavailableError(
                f"{proto.name}'s {role} model is {selection.backend}:{selection.model}, but no "
                f"{selection.backend} backend runs here. Name an embedded model, ollama:TAG or "
                "a declared openai:ENDPOINT/MODEL in config.toml [models]."
            )
        return selection

    def _recall(
        self, proto: Proto, text: str, request_id: str, params: GenerationParams
    ) -> tuple[str, list[Citation]]:
        """The prompt with the most relevant memories in front, and their sources."""
        if self.memory is None:
            return text, []
        memories = self.memory.recall(
            proto.name,
            text,
            system=proto.codex.system_prompt,
            n_ctx=self.config.n_ctx,
            max_tokens=params.max_tokens,
        )
        citations = memories.citations if memories else []
        with self._lock:
            if citations and request_id in self._requests:
                self._citations[request_id] = citations
        return (memories.prompt if memories else text), citations

    def _record(
        self,
        proto: Proto,
        request_id: str,
        text: str,
        sel: ModelSelection,
        c: Completion,
        citations: list[Citation] | None = None,
    ) -> None:
        interaction = {
            "id": request_id,
            "ts": time.time(),
            "prompt": text,
            "reply": c.text,
            "backend": sel.backend,
            "model": sel.model,
            "stop_reason": c.stop_reason,
            "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens},
            "timings": _timings(c),
        }
        if c.repeat_stopped or c.resampled or c.degenerate:
            interaction["loop_guard"] = {
                "repeat_stopped": c.repeat_stopped,
                "resampled": c.resampled,
                "degenerate": c.degenerate,
            }
        if self._is_live(proto):
            self.runtime.commit(
                {"op": "record_interaction", "proto": proto.name, "interaction": interaction}
            )
        else:
            proto.history.append(interaction)  # a detached clone: its own history only
        if self.memory is not None:
            self.memory.record_interaction(proto.name, interaction, citations)

    def submit(self, proto_name: str, text: str, max_tokens: int | None = None) -> AskAccepted:
        """Start an asynchronous ask; the answer arrives as events."""
        proto = self.runtime.manager.get(proto_name)
        with self._lock:
            if len(self._requests) >= MAX_IN_FLIGHT:
                raise UnavailableError(
                    f"{MAX_IN_FLIGHT} requests are already in flight; wait or cancel some."
                )
            request_id = new_msg_id()
            cancel = self._requests[request_id] = threading.Event()
        selection = self.select(proto)
        parent = current_request.get()
        self._pool.submit(self._run, proto, text, max_tokens, request_id, cancel, parent)
        return AskAccepted(
            request_id=request_id,
            proto=proto_name,
            backend=selection.backend,
            model=selection.model,
        )

    def _run(
        self,
        proto: Proto,
        text: str,
        max_tokens: int | None,
        request_id: str,
        cancel: threading.Event,
        parent: str | None,
    ) -> None:
        token = current_request.set(parent)
        index = 0

        def on_token(piece: str) -> None:
            nonlocal index
            self.bus.publish(
                Token(request_id=request_id, proto=proto.name, index=index, text=piece)
            )
            index += 1

        try:
            c = self.ask(
                proto,
                text,
                request_id=request_id,
                max_tokens=max_tokens,
                on_token=on_token,
                cancel=cancel,
            )
            reply = self._reply(proto, request_id, c)
        except EntropicError as exc:
            stop = "cancelled" if exc.code == ErrorCode.CANCELLED else "error"
            reply = PersonaReply(
                request_id=request_id, proto=proto.name, stop_reason=stop, error=exc.to_reply()
            )
        except Exception as exc:
            log.exception("ask %s failed", request_id)
            reply = PersonaReply(
                request_id=request_id,
                proto=proto.name,
                stop_reason="error",
                error=ErrorReply(
                    code=ErrorCode.INTERNAL,
                    message=f"Internal error while asking {proto.name}: {exc}",
                ),
            )
        finally:
            with self._lock:
                self._requests.pop(request_id, None)
                self._citations.pop(request_id, None)
            current_request.reset(token)
        self.bus.publish(reply)

    def _reply(self, proto: Proto, request_id: str, c: Completion) -> PersonaReply:
        """The finished answer, with the model it came from and the memories it cited."""
        sel = self.selections.get(proto.name)
        return PersonaReply(
            request_id=request_id,
            proto=proto.name,
            text=c.text,
            stop_reason=c.stop_reason,
            backend=sel.backend if sel else "",
            model=sel.model if sel else "",
            usage=Usage(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens),
            timings=_timings(c),
            citations=self._citations.pop(request_id, []),
            repeat_stopped=c.repeat_stopped,
            resampled=c.resampled,
            degenerate=c.degenerate,
        )

    def cancel(self, request_id: str) -> bool:
        with self._lock:
            event = self._requests.get(request_id)
        if event is None:
            return False
        event.set()
        return True

    def in_flight(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def close(self) -> None:
        for request_id in self.in_flight():
            self.cancel(request_id)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.manager.unload()

    # -- events -----------------------------------------------------------------------------
    def _publish_status(self, caller: str, status: str, detail: str) -> None:
        if caller not in self.runtime.manager.names():
            return  # an internal caller (e.g. an unload), not a persona
        self.bus.publish(
            PersonaStatus.model_validate({"proto": caller, "status": status, "detail": detail})
        )


def _timings(c: Completion) -> dict[str, float]:
    return {
        "load_ms": round(c.load_ms, 3),
        "ttft_ms": round(c.ttft_ms, 3),
        "generation_ms": round(c.generation_ms, 3),
        "tokens_per_s": round(c.tokens_per_s, 3),
    }


def _openai_backends(declared: dict[str, endpoints.OpenAIEndpoint]) -> dict[str, ModelBackend]:
    """The OpenAI-compatible endpoints' backends; the ``openai`` client (half a second to
    import) is loaded only when config.toml declares an endpoint."""
    if not declared:
        return {}
    from backend.llm.openai_backend import build_backends

    return build_backends(declared)
