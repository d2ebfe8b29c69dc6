"""The training data, shared by the CPU trainer (``backend.learning.worker``) and the GPU one
(``backend.learning.gpu``): golden examples read from JSON lines, encoded for learning only
the assistant's answer, drawn in seeded, shuffled batches and padded into tensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_examples(path: Path) -> list[list[dict[str, str]]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(
                [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
            )
    if not rows:
        raise ValueError(f"{path} holds no examples")
    return rows


def encode(
    tokenizer: Any, messages: list[dict[str, str]], max_len: int
) -> tuple[list[int], list[int]]:
    """Token ids and labels: only the final assistant turn (and its end token) is learned."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prefix = tokenizer.apply_chat_template(
        messages[:-1], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_len]
    n_prefix = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    labels = [-100] * min(n_prefix, len(ids)) + ids[n_prefix:]
    return ids, labels


def next_batch(
    torch: Any, data: list[Any], order: list[int], generator: Any, size: int
) -> list[Any]:
    """``size`` examples (fewer if there are fewer), drawn without replacement from a shuffled
    ``order`` that is refilled, seeded, whenever it runs out (shared by both trainers)."""
    batch = []
    for _ in range(min(size, len(data))):
        if not order:
            order.extend(torch.randperm(len(data), generator=generator).tolist())
        batch.append(data[order.pop()])
    return batch


def pad_batch(
    torch: Any, batch: list[tuple[list[int], list[int]]], pad: int
) -> tuple[Any, Any, Any]:
    """The batch as (input ids, labels, attention mask) tensors, right-padded to its longest
    example: ``pad`` ids, labels that are not learned (-100), a mask of 0."""
    width = max(len(ids) for ids, _ in batch)
    ids_t = torch.full((len(batch), width), pad, dtype=torch.long)
    labels_t = torch.full((len(batch), width), -100, dtype=torch.long)
    mask_t = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labels) in enumerate(batch):
        ids_t[row, : len(ids)] = torch.tensor(ids)
        labels_t[row, : len(labels)] = torch.tensor(labels)
        mask_t[row, : len(ids)] = 1
    return ids_t, labels_t, mask_t
