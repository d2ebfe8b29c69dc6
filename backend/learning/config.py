"""``[learning]`` in config.toml: the curator, the judge, fine-tuning and adoption."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LearningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # -- the curator and ALFRED's judgement --------------------------------------------------
    curator: bool = Field(default=True, description="judge new interactions in the background")
    curator_interval_s: float = Field(default=600.0, ge=0, description="0: only on demand")
    curator_batch: int = Field(default=8, ge=1, le=1000, description="interactions per pass")
    judge: str = Field(default="ALFRED", description="the persona who judges")
    judge_max_tokens: int = Field(default=96, ge=8, le=4096)
    golden_threshold: float = Field(
        default=0.7, ge=0.0, le=1.0, description="overall score that makes an example golden"
    )
    # -- motivator hooks ---------------------------------------------------------------------
    low_score: float = Field(default=0.35, ge=0.0, le=1.0)
    deficit_window: int = Field(default=5, ge=1, description="recent judged interactions read")
    deficit_count: int = Field(
        default=3, ge=1, description="low scores among them that publish curiosity_deficit"
    )
    propose_finetune_at: int = Field(
        default=20, ge=1, description="new golden examples that propose a fine-tune"
    )
    # -- fine-tuning -------------------------------------------------------------------------
    engine: Literal["auto", "cpu", "unsloth"] = Field(
        default="auto", description="auto: Unsloth on a CUDA GPU when installed, else CPU"
    )
    steps: int = Field(default=24, ge=1, le=100_000)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    rank: int = Field(default=8, ge=1, le=512)
    lora_alpha: int = Field(default=16, ge=1, le=1024)
    batch_size: int = Field(default=4, ge=1, le=512)
    grad_accum: int = Field(default=1, ge=1, le=512)
    max_seq_len: int = Field(default=512, ge=32, le=131072)
    threads: int = Field(default=2, ge=1, le=256, description="torch threads of the trainer")
    quant: str = Field(default="Q4_K_M", description="never the base GGUF's own type")
    max_memory_mb: int = Field(
        default=8192, ge=256, description="the trainer is killed beyond this resident memory"
    )
    job_timeout_s: float = Field(default=6 * 3600.0, gt=0)
    exclusive: bool = Field(
        default=True,
        description="hold the one model slot while training: no model is resident meanwhile",
    )
    llama_cpp_dir: str = Field(default="", description="a llama.cpp checkout (its converter)")
    bases: list[str] = Field(
        default=[], description="GGUF files BABS may propose as a new base (Ascension)"
    )
    researcher: str = Field(default="BABS", description="who proposes a new base model")
    # -- the GPU path (Unsloth QLoRA, for an 8 GB card) ---------------------------------------
    gpu_base: str = Field(
        default="", description="Hugging Face model (dir or name) Unsloth fine-tunes"
    )
    gpu_batch_size: int = Field(default=2, ge=1)
    gpu_grad_accum: int = Field(default=4, ge=1)
    gpu_max_seq_len: int = Field(default=2048, ge=2048)
    gpu_steps: int = Field(default=60, ge=1)
    gpu_learning_rate: float = Field(default=2e-4, gt=0)
    ollama_register: bool = Field(
        default=True, description="register a GPU fine-tune with `ollama create`"
    )
    # -- validation and adoption -------------------------------------------------------------
    holdout_fraction: float = Field(default=0.2, ge=0.0, le=0.9)
    min_holdout: int = Field(default=3, ge=1)
    max_holdout: int = Field(default=12, ge=1)
    validation_max_tokens: int = Field(default=96, ge=8, le=4096)
    alpha: float = Field(default=0.05, gt=0, lt=1, description="sign-test significance")
    auto_adopt: bool = Field(default=True, description="adopt on a significant win")
