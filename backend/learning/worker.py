"""The training subprocess: ``python -m backend.learning.worker SPEC.json``.

CPU path: the base GGUF is dequantized into transformers (fp32), LoRA adapters (peft) are
trained on the golden ChatML examples (only the assistant's tokens are learned), merged, and
exported (``backend.learning.export``). GPU path: Unsloth QLoRA (``backend.learning.gpu``),
then the same export. It runs apart from the backend so its memory (about 1.7 GiB for a
135M model) never lands in the backend's process, and so it can be killed at any moment:
the backend only trusts ``OUT/result.json``, written last and atomically.

Progress goes to stdout as JSON lines; SIGTERM stops it between steps.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from backend.learning.batches import encode, load_examples, next_batch, pad_batch
from backend.learning.export import (
    check_export,
    choose_quant,
    convert_to_f16,
    quantize,
    read_facts,
    sha256_file,
)
from backend.learning.spec import LORA_TARGETS, RESULT_FILE, TrainResult, TrainSpec

_stop = False


class Stopped(Exception):
    """SIGTERM arrived: the job was cancelled."""


def emit(kind: str, **fields: Any) -> None:
    print(json.dumps({"event": kind, **fields}), flush=True)


def _on_term(_sig: int, _frame: Any) -> None:
    global _stop
    _stop = True


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the backend dies (even by SIGKILL), so no orphan trains on."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def check_stop() -> None:
    if _stop:
        raise Stopped


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_lora(spec: TrainSpec, out: Path) -> tuple[Path, list[float], float, int]:
    """CPU LoRA; returns (merged HF dir, losses, seconds training, examples)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(spec.seed)
    torch.set_num_threads(spec.threads)
    base = Path(spec.base_path)
    emit("phase", phase="loading", message=f"dequantizing {base.name} to fp32")
    tokenizer = AutoTokenizer.from_pretrained(str(base.parent), gguf_file=base.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(base.parent), gguf_file=base.name, dtype=torch.float32
    )
    check_stop()
    rows = load_examples(Path(spec.examples))
    data = [encode(tokenizer, m, spec.max_seq_len) for m in rows]
    lora = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(spec.seed)
    order: list[int] = []
    losses: list[float] = []
    emit("phase", phase="training", message=f"{len(data)} examples, {spec.steps} steps")
    started = time.perf_counter()
    for step in range(1, spec.steps + 1):
        optimizer.zero_grad()
        total = 0.0
        for _ in range(spec.grad_accum):
            batch = next_batch(torch, data, order, generator, spec.batch_size)
            ids_t, labels_t, mask_t = pad_batch(torch, batch, pad)
            loss = model(input_ids=ids_t, attention_mask=mask_t, labels=labels_t).loss
            (loss / spec.grad_accum).backward()
            total += float(loss.detach()) / spec.grad_accum
        optimizer.step()
        losses.append(round(total, 5) if math.isfinite(total) else float("nan"))
        elapsed = time.perf_counter() - started
        emit(
            "step",
            step=step,
            total=spec.steps,
            loss=losses[-1],
            elapsed_s=round(elapsed, 3),
            eta_s=round(elapsed / step * (spec.steps - step), 3),
        )
        check_stop()
    train_s = time.perf_counter() - started
    emit("phase", phase="merging", message="merging the LoRA adapters into the weights")
    return _save_merged(model, tokenizer, out / "hf"), losses, train_s, len(data)


def _save_merged(model: Any, tokenizer: Any, hf_dir: Path) -> Path:
    """Merge the LoRA adapters into the weights and save the model as Hugging Face files."""
    merged = model.merge_and_unload()
    # A model loaded from GGUF refuses save_pretrained ("quantized with gguf ... not
    # serializable") until it forgets its quantizer: the weights are plain fp32 by now.
    merged.hf_quantizer = None
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    merged.save_pretrained(str(hf_dir))
    tokenizer.save_pretrained(str(hf_dir))
    return hf_dir


def export(
    spec: TrainSpec, hf_dir: Path, out: Path, base_gguf: Path | None
) -> tuple[Path, str, Any]:
    """Convert and quantize; returns (GGUF path, quant used, facts)."""
    base_facts = read_facts(base_gguf) if base_gguf is not None else None
    quant = choose_quant(spec.quant, base_facts.file_type if base_facts else "")
    emit("phase", phase="converting", message="convert_hf_to_gguf.py -> f16")
    f16 = out / "model.f16.gguf"
    convert_to_f16(hf_dir, f16, Path(spec.converter))
    check_stop()
    emit("phase", phase="quantizing", message=f"f16 -> {quant}")
    gguf = out / f"model.{quant}.gguf"
    quantize(f16, gguf, quant, threads=spec.threads)
    f16.unlink(missing_ok=True)
    emit("phase", phase="checking", message="chat template and EOS")
    facts = check_export(gguf, base_facts)
    return gguf, quant, facts


def run(spec: TrainSpec) -> TrainResult:
    started = time.perf_counter()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spec.engine == "unsloth":
        from backend.learning.gpu import train_unsloth

        hf_dir, losses, train_s, n = train_unsloth(spec, out, emit, check_stop)
        base_gguf = None
    else:
        hf_dir, losses, train_s, n = train_lora(spec, out)
        base_gguf = Path(spec.base_path)
    gguf, quant, facts = export(spec, hf_dir, out, base_gguf)
    base_quant = read_facts(base_gguf).file_type if base_gguf is not None else ""
    return TrainResult(
        job_id=spec.job_id,
        gguf=str(gguf),
        sha256=sha256_file(gguf),
        size_bytes=gguf.stat().st_size,
        quant=quant,
        base_quant=base_quant,
        chat_template=facts.chat_template,
        eos_token=facts.eos_token,
        steps=len(losses),
        final_loss=losses[-1] if losses else None,
        losses=losses,
        examples=n,
        train_s=round(train_s, 3),
        total_s=round(time.perf_counter() - started, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        engine=spec.engine,
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m backend.learning.worker SPEC.json", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_term)
    _die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    spec = TrainSpec.model_validate_json(Path(args[0]).read_text())
    try:
        result = run(spec)
    except Stopped:
        emit("error", message="cancelled", cancelled=True)
        return 3
    except Exception as exc:
        emit("error", message=f"{type(exc).__name__}: {exc}")
        raise
    path = Path(spec.out_dir) / RESULT_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(result.model_dump_json(indent=2))
    os.replace(tmp, path)  # the one thing the backend trusts: written last, atomically
    emit("result", **result.model_dump())
    return 0


if __name__ == "__main__":
    sys.exit(main())
