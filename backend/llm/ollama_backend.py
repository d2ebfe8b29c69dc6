"""The Ollama backend, through the official ``ollama`` client.

``keep_alive: 0`` goes out on every chat, so Ollama unloads the model as soon as the reply
is done; the ``ModelManager`` serializes calls, so an 8 GB GPU never holds two models.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from backend.llm.base import ChatMessage, Completion, GenerationParams, ModelInfo, OnToken
from shared_api.errors import ModelFailedError, ModelMissingError, ModelUnreachableError

if TYPE_CHECKING:
    import httpx
    import ollama

log = logging.getLogger(__name__)

DEFAULT_HOST = "http://127.0.0.1:11434"


class OllamaBackend:
    name = "ollama"

    def __init__(self, host: str = "", timeout: float = 300.0) -> None:
        self.host = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self.timeout = timeout
        self._sizes: dict[str, int] = {}

    # The client library (and httpx under it) is imported on first use: most homes run the
    # embedded model, and the import is a tenth of the backend's start-up.
    @cached_property
    def _client(self) -> ollama.Client:
        import ollama

        return ollama.Client(host=self.host, timeout=self.timeout)

    @cached_property
    def _probe(self) -> ollama.Client:
        import ollama

        return ollama.Client(host=self.host, timeout=2.0)

    # -- discovery --------------------------------------------------------------------------
    def _unreachable(self) -> ModelUnreachableError:
        return ModelUnreachableError(
            f"Ollama is not reachable at {self.host}. Start it with `ollama serve`, set "
            'OLLAMA_HOST, or set models.backend = "embedded" in config.toml.',
            host=self.host,
        )

    def _missing(self, model: str) -> ModelMissingError:
        return ModelMissingError(
            f"Model {model!r} is not installed on Ollama at {self.host}. Run: ollama pull {model}",
            host=self.host,
            model=model,
            command=f"ollama pull {model}",
        )

    def list_models(self) -> list[ModelInfo]:
        """Installed models (``/api/tags``), each with its size."""
        try:
            listed = self._probe.list()
        except (ConnectionError, _http_error()):
            raise self._unreachable() from None
        models = []
        for m in listed.models:
            if m.model:
                size = int(m.size or 0)
                self._sizes[m.model] = size
                detail = {"quantization": (m.details.quantization_level or "") if m.details else ""}
                models.append(ModelInfo(m.model, self.name, size, detail))
        return models

    def installed(self, model: str) -> bool:
        names = {m.name for m in self.list_models()}
        return model in names or f"{model}:latest" in names

    def model_size(self, model: str) -> int:
        """Bytes the model needs: its file size from ``/api/tags``, cross-checked against the
        parameter count from ``/api/show``."""
        if not self.installed(model):
            raise self._missing(model)
        size = self._sizes.get(model) or self._sizes.get(f"{model}:latest", 0)
        try:
            shown = self._probe.show(model)
        except _response_error() as exc:
            if exc.status_code == 404:
                raise self._missing(model) from None
            raise ModelFailedError(f"Ollama could not describe {model}: {exc}") from None
        except (ConnectionError, _http_error()):
            raise self._unreachable() from None
        params = (shown.modelinfo or {}).get("general.parameter_count")
        if not size and isinstance(params, int):
            size = params // 2  # ~4-bit weights
        return size

    def resident(self) -> list[str]:
        try:
            return [m.model or "" for m in self._probe.ps().models]
        except (ConnectionError, _http_error()):
            raise self._unreachable() from None

    # -- residency --------------------------------------------------------------------------
    def load(self, model: str) -> float:
        return 0.0  # Ollama loads on the first request; it reports load_duration itself

    def unload(self) -> None:
        """Wait (briefly) until Ollama has released the model after its keep_alive 0."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if not self.resident():
                    return
            except ModelUnreachableError:
                return
            time.sleep(0.05)
        log.warning("Ollama at %s still holds a model 10 s after keep_alive 0", self.host)

    # -- generation -------------------------------------------------------------------------
    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        request = _request(model, messages, params)
        if params.choices:
            return self._score_choices(request, params.choices, model)
        with self._errors(model):
            if on_token is None:
                return self._single(request)
            return self._streamed(request, on_token, cancel)

    def _single(self, request: dict[str, Any]) -> Completion:
        """Not streamed: one response, whose own eval time is the generation time."""
        started = time.perf_counter()
        final = self._client.chat(**request, stream=False)
        ended = time.perf_counter()
        eval_ms = (getattr(final, "eval_duration", 0) or 0) / 1e6
        return _completion(
            final,
            final.message.content or "",
            _stop_reason(final),
            pieces=1,
            ttft_ms=(ended - started) * 1000,
            generation_ms=eval_ms,
        )

    def _streamed(
        self, request: dict[str, Any], on_token: OnToken, cancel: threading.Event
    ) -> Completion:
        """Streamed piece by piece to ``on_token``; a set ``cancel`` drops the stream."""
        started = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        final: Any = None
        stop = "stop"
        stream = self._client.chat(**request, stream=True)
        try:
            for chunk in stream:
                if cancel.is_set():
                    stop = "cancelled"
                    break
                piece = chunk.message.content if chunk.message else ""
                if piece:
                    first = first or time.perf_counter()
                    parts.append(piece)
                    on_token(piece)
                if chunk.done:
                    final = chunk
        finally:
            stream.close()  # type: ignore[attr-defined]  # on cancel: drops the stream
        ended = time.perf_counter()
        if final is not None and stop != "cancelled":
            stop = _stop_reason(final)
        return _completion(
            final,
            "".join(parts),
            stop,
            pieces=len(parts),
            ttft_ms=((first or ended) - started) * 1000,
            generation_ms=(ended - (first or started)) * 1000,
        )

    @contextmanager
    def _errors(self, model: str) -> Iterator[None]:
        """Ollama's and the connection's failures as typed errors that say what to do."""
        try:
            yield
        except _response_error() as exc:
            if exc.status_code == 404:
                raise self._missing(model) from None
            raise ModelFailedError(f"Ollama failed on {model}: {exc}") from None
        except (ConnectionError, _http_error()):
            raise self._unreachable() from None

    def _score_choices(
        self, request: dict[str, Any], choices: tuple[str, ...], model: str
    ) -> Completion:
        """One token with its top log-probabilities; a choice not among them gets a floor
        below the least likely listed one."""
        started = time.perf_counter()
        request["options"] = {**request["options"], "num_predict": 1, "temperature": 0.0}
        with self._errors(model):
            final = self._client.chat(**request, stream=False, logprobs=True, top_logprobs=20)
        listed: dict[str, float] = {}
        for entry in (final.logprobs or [])[:1]:
            for top in entry.top_logprobs or [entry]:
                key = top.token.strip()
                listed[key] = float(
                    math.log(math.exp(listed[key]) + math.exp(top.logprob))
                    if key in listed
                    else top.logprob
                )
        if not listed:
            raise ModelFailedError(
                f"Ollama returned no log-probabilities for {model}; it needs Ollama 0.12 or "
                "newer to judge by probabilities."
            )
        floor = min(listed.values()) - math.log(10)
        scores = {c: listed.get(c, floor) for c in choices}
        return Completion(
            text=max(scores, key=lambda c: scores[c]),
            stop_reason="stop",
            prompt_tokens=int(final.prompt_eval_count or 0),
            ttft_ms=(time.perf_counter() - started) * 1000,
            choice_logprobs=scores,
        )


def _request(model: str, messages: list[ChatMessage], params: GenerationParams) -> dict[str, Any]:
    """The chat request for ``params``; ``keep_alive`` 0 unloads the model right after."""
    options: dict[str, Any] = {
        "temperature": params.temperature,
        "num_predict": params.max_tokens,
        "repeat_penalty": params.repeat_penalty,
    }
    if params.seed is not None:
        options["seed"] = params.seed
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "keep_alive": 0,
        "options": options,
    }
    if params.json_schema is not None:
        request["format"] = params.json_schema  # Ollama's structured outputs
    return request


def _stop_reason(final: Any) -> str:
    return "length" if final.done_reason == "length" else "stop"


def _completion(
    final: Any, text: str, stop: str, *, pieces: int, ttft_ms: float, generation_ms: float
) -> Completion:
    """A reply with Ollama's counts from its last response (``final``; None if cut off)."""
    return Completion(
        text=text,
        stop_reason=stop,  # type: ignore[arg-type]
        prompt_tokens=int(getattr(final, "prompt_eval_count", 0) or 0),
        completion_tokens=int(getattr(final, "eval_count", 0) or pieces),
        load_ms=(getattr(final, "load_duration", 0) or 0) / 1e6,
        ttft_ms=ttft_ms,
        generation_ms=generation_ms,
    )


def _http_error() -> type[httpx.HTTPError]:
    """httpx's base error; evaluated only while an exception is handled, by then the client
    (and so httpx) is imported."""
    import httpx

    return httpx.HTTPError


def _response_error() -> type[ollama.ResponseError]:
    import ollama

    return ollama.ResponseError
