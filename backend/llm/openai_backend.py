"""A model backend for any OpenAI-compatible chat server (vLLM, llama.cpp's server, LM Studio,
Ollama's ``/v1``), through the official ``openai`` client.

One backend per configured endpoint (``endpoints.py``); only the base URL and model id differ
between servers. It streams over SSE, stops on cancel by closing the stream, reports the
server's token usage, and turns every failure into a typed error whose message says what to
do: connection refused, a rejected key, an unknown model, a timeout, a stream cut short.
The server manages its own memory, so this backend is ``remote``: the ModelManager gives it its
own lane (``concurrency`` calls at once) instead of the one-local-model rule.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx2
import openai

from backend.llm.base import (
    ChatMessage,
    Completion,
    GenerationParams,
    ModelBackend,
    ModelInfo,
    OnToken,
)
from backend.llm.endpoints import BACKEND_PREFIX, OpenAIEndpoint
from shared_api.errors import (
    EntropicError,
    ModelFailedError,
    ModelMissingError,
    ModelUnauthorizedError,
    ModelUnreachableError,
    RequestTimeout,
)

log = logging.getLogger(__name__)

MODELS_TTL_S = 30.0
NO_KEY = "no-key"  # the client insists on some key; servers without auth ignore it


def build_backends(endpoints: dict[str, OpenAIEndpoint]) -> dict[str, ModelBackend]:
    """One ModelManager backend per declared endpoint, named ``openai:NAME``."""
    return {BACKEND_PREFIX + name: OpenAIBackend(name, ep) for name, ep in endpoints.items()}


class OpenAIBackend:
    remote = True

    def __init__(self, endpoint_name: str, endpoint: OpenAIEndpoint) -> None:
        self.name = BACKEND_PREFIX + endpoint_name
        self.endpoint = endpoint
        self.concurrency = endpoint.concurrency
        self._client = openai.OpenAI(
            base_url=endpoint.base_url,
            api_key=lambda: endpoint.api_key() or NO_KEY,  # read when a request goes out
            timeout=httpx2.Timeout(endpoint.timeout_s, connect=endpoint.connect_timeout_s),
            max_retries=0,
        )
        self._served: tuple[float, list[ModelInfo]] | None = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return self.endpoint.base_url

    # -- discovery --------------------------------------------------------------------------
    def list_models(self) -> list[ModelInfo]:
        """The models the server serves (``/v1/models``), cached briefly."""
        with self._lock:
            now = time.monotonic()
            if self._served is None or now - self._served[0] > MODELS_TTL_S:
                try:
                    listed = [m.id for m in self._client.models.list()]
                except Exception as exc:
                    raise self._typed(exc, "") from None
                self._served = (now, [ModelInfo(m, self.name, 0) for m in listed])
            return list(self._served[1])

    def model_size(self, model: str) -> int:
        return 0  # the server manages its own memory

    def load(self, model: str) -> float:
        """Nothing to load here: check that the server serves ``model``."""
        served = [m.name for m in self.list_models()]
        if model not in served:
            self._served = None  # look again next time: it may be loading it
            raise self._missing(model, served)
        return 0.0

    def unload(self) -> None:
        return None

    # -- generation -------------------------------------------------------------------------
    def generate(
        self,
        model: str,
        messages: list[ChatMessage],
        params: GenerationParams,
        on_token: OnToken | None,
        cancel: threading.Event,
    ) -> Completion:
        request = self._request(model, messages, params)
        started = time.perf_counter()
        try:
            if on_token is None:
                return self._whole(request, started)
            return self._stream(request, started, on_token, cancel)
        except EntropicError:
            raise
        except Exception as exc:
            raise self._typed(exc, model) from None

    def _request(
        self, model: str, messages: list[ChatMessage], params: GenerationParams
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
        }
        schema = getattr(params, "json_schema", None)  # structured output, when asked for
        if schema and self.endpoint.structured == "json_object":
            request["response_format"] = {"type": "json_object", "schema": schema}
        elif schema:
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        return request

    def _whole(self, request: dict[str, Any], started: float) -> Completion:
        reply = self._client.chat.completions.create(**request, stream=False)
        ended = time.perf_counter()
        choice = reply.choices[0] if reply.choices else None
        if choice is None or choice.finish_reason is None:
            raise self._cut_short(request["model"], 0)
        usage = reply.usage
        text = choice.message.content or ""
        return Completion(
            text=text,
            stop_reason="length" if choice.finish_reason == "length" else "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            ttft_ms=(ended - started) * 1000,
            generation_ms=(ended - started) * 1000,
        )

    def _stream(
        self, request: dict[str, Any], started: float, on_token: OnToken, cancel: threading.Event
    ) -> Completion:
        stream = self._client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        parts: list[str] = []
        first: float | None = None
        finish: str | None = None
        usage: Any = None
        try:
            for chunk in stream:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                piece = choice.delta.content if choice.delta else None
                if piece:
                    first = first or time.perf_counter()
                    parts.append(piece)
                    on_token(piece)
                if choice.finish_reason:
                    finish = choice.finish_reason
        except (httpx2.TransportError, openai.APIConnectionError):
            if not cancel.is_set():
                raise self._cut_short(request["model"], len(parts)) from None
            finish = "cancelled"
        finally:
            stream.close()  # on cancel: drops the connection, the server stops generating
        if finish is None:
            if cancel.is_set():
                finish = "cancelled"
            else:
                raise self._cut_short(request["model"], len(parts))
        ended = time.perf_counter()
        stop = {"length": "length", "cancelled": "cancelled"}.get(finish, "stop")
        return Completion(
            text="".join(parts),
            stop_reason=stop,  # type: ignore[arg-type]
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else len(parts),
            ttft_ms=((first or ended) - started) * 1000,
            generation_ms=(ended - (first or started)) * 1000,
        )

    # -- errors -----------------------------------------------------------------------------
    def _typed(self, exc: Exception, model: str) -> EntropicError:
        where = f"the OpenAI-compatible server {self.name!r} at {self.endpoint.base_url}"
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return RequestTimeout(
                f"{where} did not answer within {self.endpoint.timeout_s:g} s. Check that it "
                f"is not overloaded, or raise models.openai.{self.name[7:]}.timeout_s.",
                host=self.endpoint.base_url,
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            env = self.endpoint.api_key_env
            hint = (
                f"set ${env} to the server's API key (it is read on every request)"
                if env
                else f"set models.openai.{self.name[7:]}.api_key_env to a variable holding it"
            )
            return ModelUnauthorizedError(
                f"{where} refused the API key ({exc.status_code}); {hint}.",
                host=self.endpoint.base_url,
                status=exc.status_code,
            )
        if isinstance(exc, openai.NotFoundError) and model:
            return self._missing(model, [])
        if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
            return ModelUnreachableError(
                f"{where} is not reachable ({_first_line(exc)}). Start the server, or fix "
                f"models.openai.{self.name[7:]}.base_url in config.toml.",
                host=self.endpoint.base_url,
            )
        if isinstance(exc, openai.APIStatusError):
            return ModelFailedError(
                f"{where} failed with HTTP {exc.status_code}: {_first_line(exc)}. Check the "
                "request's model and limits in the server's log.",
                host=self.endpoint.base_url,
                status=exc.status_code,
            )
        log.exception("unexpected failure from %s", self.name)
        return ModelFailedError(f"{where} failed: {type(exc).__name__}: {_first_line(exc)}")

    def _missing(self, model: str, served: list[str]) -> ModelMissingError:
        listed = ", ".join(served) if served else "see its /v1/models"
        return ModelMissingError(
            f"Model {model!r} is not served by {self.name} at {self.endpoint.base_url} (it "
            f"serves: {listed}). Fix the model id in config.toml or load it on the server.",
            host=self.endpoint.base_url,
            model=model,
        )

    def _cut_short(self, model: str, pieces: int) -> ModelFailedError:
        return ModelFailedError(
            f"{self.name} at {self.endpoint.base_url} closed the stream for {model} after "
            f"{pieces} pieces without finishing; it may have crashed or restarted, check its "
            "log and ask again.",
            host=self.endpoint.base_url,
            model=model,
        )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]
