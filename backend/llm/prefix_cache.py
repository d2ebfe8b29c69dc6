"""Prompt caching for persona replies: llama.cpp's state for each persona's system prefix.

Every reply of a persona starts with the same tokens: the chat template's system turn, which
holds the persona's system prompt. llama-cpp-python already reuses its KV cache when the next
prompt shares a prefix with the last one; when personas take turns (BRICK, ROBIN, BRICK ...)
it has to process the whole system turn again each time. This keeps the KV state of each
system prefix (only that sequence's KV cells: ~28 KB a token for Qwen2.5-1.5B) and restores
it before a reply, so only the new tokens are processed.

Invalidation is by construction: a state is keyed by the exact system text and belongs to
one loaded model (it is dropped when the model is unloaded), so a codex amendment (a new
system prompt) or a model change never meets a stale state; the user turn, which a persona's
prompt-building method writes, is never cached.
"""

from __future__ import annotations

import ctypes
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

from backend.llm.base import ChatMessage

log = logging.getLogger(__name__)

Outcome = Literal["off", "warm", "hit", "miss"]
MIN_PREFIX_TOKENS = 16  # shorter prefixes are not worth a state


class PrefixCache:
    """System-prefix KV states for one loaded ``llama_cpp.Llama`` (LRU, bounded in bytes)."""

    def __init__(self, capacity_bytes: int = 64 * 1024 * 1024) -> None:
        self.capacity_bytes = capacity_bytes
        self._states: OrderedDict[str, tuple[list[int], bytes]] = OrderedDict()
        self._prefixes: dict[str, list[int]] = {}
        self._formatter: Any = None
        self.last: Outcome = "off"

    def clear(self) -> None:
        """Forget every state (the model they belong to is being unloaded)."""
        self._states.clear()
        self._prefixes.clear()
        self._formatter = None

    @property
    def size_bytes(self) -> int:
        return sum(len(data) for _, data in self._states.values())

    def prepare(self, llm: Any, messages: Sequence[ChatMessage]) -> Outcome:
        """Before a chat completion: make ``llm``'s KV cache hold the system prefix of
        ``messages`` (already there, restored, or processed now and kept)."""
        self.last = "off"
        if self.capacity_bytes <= 0 or len(messages) < 2 or messages[0].role != "system":
            return self.last
        system = messages[0].content
        prefix = self._prefix(llm, system)
        if len(prefix) < MIN_PREFIX_TOKENS:
            return self.last
        n = len(prefix)
        if llm.n_tokens >= n and [int(t) for t in llm.input_ids[:n]] == prefix:
            self.last = "warm"  # llama-cpp-python's own prefix match will reuse it
        elif system in self._states and self._restore(llm, *self._states[system]):
            self._states.move_to_end(system)
            self.last = "hit"
        else:
            llm.reset()
            llm.eval(prefix)
            self._save(llm, system, prefix)
            self.last = "miss"
        return self.last

    # -- the system prefix, as the model's own chat template renders it ---------------------
    def _prefix(self, llm: Any, system: str) -> list[int]:
        if system not in self._prefixes:
            first, second = (self._tokens(llm, system, user) for user in ("A", "B"))
            common = 0
            for a, b in zip(first, second, strict=False):
                if a != b:
                    break
                common += 1
            self._prefixes[system] = first[:common]
        return self._prefixes[system]

    def _tokens(self, llm: Any, system: str, user: str) -> list[int]:
        """Tokens of the prompt ``create_chat_completion`` builds (same template, same call)."""
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            template = llm.metadata.get("tokenizer.chat_template")
            if not template:
                return []
            model = llm._model
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(llm.token_eos()),
                bos_token=model.token_get_text(llm.token_bos()),
            )
        prompt = self._formatter(
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}]
        ).prompt
        return list(llm.tokenize(prompt.encode("utf-8"), special=True))

    # -- llama.cpp's per-sequence state -----------------------------------------------------
    def _save(self, llm: Any, system: str, prefix: list[int]) -> None:
        import llama_cpp

        ctx = llm._ctx.ctx
        size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
        buffer = (ctypes.c_uint8 * size)()
        got = int(llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0))
        if got <= 0 or got > size or got > self.capacity_bytes:
            return
        self._states[system] = (prefix, bytes(buffer[:got]))
        while self.size_bytes > self.capacity_bytes:
            self._states.popitem(last=False)

    def _restore(self, llm: Any, prefix: list[int], data: bytes) -> bool:
        import llama_cpp

        ctx = llm._ctx.ctx
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if int(llama_cpp.llama_state_seq_set_data(ctx, buffer, len(data), 0)) != len(data):
            log.warning("could not restore a cached prompt prefix; processing it again")
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
            return False
        n = len(prefix)
        llm.input_ids[:n] = prefix
        llm.n_tokens = n
        llm._requires_eval = True  # the logits are not restored: decode before sampling
        return True
