"""The GPU path: Unsloth QLoRA, then the same export as the CPU path.

Imported only inside the training subprocess, and only when a job's engine is ``unsloth``:
Unsloth needs a CUDA GPU and pulls CUDA builds of torch, so it is never part of the
``learning`` extra or CI. Install it by hand on a GPU machine (README, "Learning").
Hyperparameters default to an 8 GB card: batch 2, gradient accumulation 4, sequence length
2048, 4-bit base. The merged 16-bit weights go through ``backend.learning.export`` like the
CPU path's, and the job then writes a Modelfile and registers it with ``ollama create``.

NOT VERIFIED on a GPU in this repository's CI (no accelerator there); see the README.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.learning.batches import encode, load_examples, next_batch, pad_batch
from backend.learning.spec import LORA_TARGETS, TrainSpec

Emit = Callable[..., None]


def train_unsloth(
    spec: TrainSpec, out: Path, emit: Emit, check_stop: Callable[[], None]
) -> tuple[Path, list[float], float, int]:
    """QLoRA with Unsloth; returns (merged HF dir, losses, seconds training, examples)."""
    import torch
    from unsloth import FastLanguageModel  # first: it patches transformers

    torch.manual_seed(spec.seed)
    emit(
        "phase",
        phase="loading",
        message=f"{spec.base_path} in 4 bits" if spec.load_in_4bit else spec.base_path,
    )
    model, tokenizer = _load(FastLanguageModel, spec)
    check_stop()
    rows = load_examples(Path(spec.examples))
    data = [encode(tokenizer, m, spec.max_seq_len) for m in rows]
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    losses: list[float] = []
    tokens = 0
    order: list[int] = []
    generator = torch.Generator().manual_seed(spec.seed)
    model.train()
    emit("phase", phase="training", message=f"{len(data)} examples, {spec.steps} steps (QLoRA)")
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for step in range(1, spec.steps + 1):
        optimizer.zero_grad()
        total = 0.0
        for _ in range(spec.grad_accum):
            batch = next_batch(torch, data, order, generator, spec.batch_size)
            ids, labels, mask = pad_batch(torch, batch, pad)
            tokens += int(mask.sum())
            loss = model(
                input_ids=ids.cuda(), attention_mask=mask.cuda(), labels=labels.cuda()
            ).loss
            (loss / spec.grad_accum).backward()
            total += float(loss.detach()) / spec.grad_accum
        optimizer.step()
        losses.append(round(total, 5))
        elapsed = time.perf_counter() - started
        emit(
            "step",
            step=step,
            total=spec.steps,
            loss=losses[-1],
            elapsed_s=round(elapsed, 3),
            eta_s=round(elapsed / step * (spec.steps - step), 3),
            tokens_per_s=round(tokens / elapsed, 1),
            peak_vram_gb=round(torch.cuda.max_memory_allocated() / 1024**3, 3),
        )
        check_stop()
    train_s = time.perf_counter() - started
    emit("phase", phase="merging", message="merging into 16-bit weights")
    hf_dir = out / "hf"
    model.save_pretrained_merged(str(hf_dir), tokenizer, save_method="merged_16bit")
    return hf_dir, losses, train_s, len(data)


def _load(fast: Any, spec: TrainSpec) -> tuple[Any, Any]:
    """The base model (in 4 bits if asked) with LoRA adapters, and its tokenizer."""
    model, tokenizer = fast.from_pretrained(
        model_name=spec.base_path,
        max_seq_length=spec.max_seq_len,
        load_in_4bit=spec.load_in_4bit,
        dtype=None,
    )
    model = fast.get_peft_model(
        model,
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        use_gradient_checkpointing="unsloth",
        random_state=spec.seed,
    )
    return model, tokenizer
