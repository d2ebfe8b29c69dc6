"""What the backend tells a training subprocess, and what it says back.

The backend writes a ``TrainSpec`` as JSON; ``python -m backend.learning.worker SPEC`` trains
and exports, printing one JSON object per line on stdout (``phase``, ``step``, ``log``, and
a final ``result`` or ``error``). The result also lands in ``OUT/result.json``, written
last and atomically: a job without it produced nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Quantization types the export may use, best first; never the base GGUF's own type.
QUANT_PREFERENCE = ("Q4_K_M", "Q5_K_M", "Q8_0")
RESULT_FILE = "result.json"
#: The projections LoRA adapts, on the CPU (peft) and the GPU (Unsloth) paths alike.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class TrainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: str
    engine: Literal["cpu", "unsloth"] = "cpu"
    #: The GGUF the fine-tune starts from (CPU path), or a Hugging Face model dir or name
    #: (Unsloth path).
    base_path: str
    #: Where to export; the worker creates ``hf/``, ``model.f16.gguf``, ``model.QUANT.gguf``.
    out_dir: str
    #: ChatML training examples: JSONL with ``messages``.
    examples: str
    converter: str = Field(description="convert_hf_to_gguf.py from llama.cpp")
    quant: str = "Q4_K_M"
    steps: int = Field(default=24, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    rank: int = Field(default=8, ge=1)
    alpha: int = Field(default=16, ge=1)
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_seq_len: int = Field(default=512, ge=32)
    threads: int = Field(default=2, ge=1)
    seed: int = 0
    #: Unsloth only: load the base in 4 bits (QLoRA).
    load_in_4bit: bool = True


class TrainResult(BaseModel):
    job_id: str
    gguf: str
    sha256: str
    size_bytes: int
    quant: str
    base_quant: str = ""
    chat_template: str = ""
    eos_token: str = ""
    steps: int = 0
    final_loss: float | None = None
    losses: list[float] = []
    examples: int = 0
    train_s: float = 0.0
    total_s: float = 0.0
    peak_rss_mb: float = 0.0
    engine: str = "cpu"
