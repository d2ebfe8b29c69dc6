"""Backend configuration from ``HOME/config.toml``, validated when it is loaded.

Every section and field is optional; a wrong one is refused at startup with the file and
field named, never discovered mid-run.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared_api.errors import ConfigInvalidError


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Literal["tcp", "ipc"] = "tcp"
    ip: str = "127.0.0.1"
    allow_remote: bool = Field(
        default=False, description="Allow binding to a non-loopback address."
    )
    request_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    event_port: int = Field(default=0, ge=0, le=65535)
    heartbeat_interval_s: float = Field(default=1.0, gt=0, le=60)
    autosave_interval_s: float = Field(default=300.0, ge=0, description="0 disables autosave.")
    image_generations: int = Field(default=5, ge=2, le=100)
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    workers: int = Field(default=8, ge=1, le=64)
    replay_window_s: float = Field(default=30.0, ge=5)

    @model_validator(mode="after")
    def _loopback_only(self) -> BackendConfig:
        if self.transport == "tcp" and not self.allow_remote:
            host = "127.0.0.1" if self.ip == "localhost" else self.ip
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(
                    f"ip {self.ip!r} is not a loopback address; set allow_remote = true "
                    "to expose the backend beyond this machine"
                )
        return self

    def endpoint_specs(self, run_dir: Path) -> tuple[str, str]:
        if self.transport == "ipc":
            return f"ipc://{run_dir / 'requests.sock'}", f"ipc://{run_dir / 'events.sock'}"
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        req = f"tcp://{host}" + (f":{self.request_port}" if self.request_port else "")
        evt = f"tcp://{host}" + (f":{self.event_port}" if self.event_port else "")
        return req, evt


class PersonaModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="Ollama model for this persona (overrides codex)")


class ModelsConfig(BaseModel):
    """``[models]``: which backend answers, and how."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "ollama", "embedded"] = Field(
        default="auto",
        description="auto: each persona's codex model on Ollama when reachable and installed, "
        "else the embedded model.",
    )
    ollama_host: str = Field(default="", description="default: $OLLAMA_HOST or 127.0.0.1:11434")
    ollama_timeout_s: float = Field(default=300.0, gt=0)
    embedded_model: str = Field(default="", description="a GGUF path; default: SmolLM2-135M")
    embedded_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    n_threads: int = Field(default=1, ge=1, le=64)
    n_ctx: int = Field(default=2048, ge=256, le=131072)
    max_tokens: int = Field(default=256, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    vram_budget_gb: float = Field(default=8.0, gt=0)
    personas: dict[str, PersonaModel] = {}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: BackendConfig = BackendConfig()
    models: ModelsConfig = ModelsConfig()


def load_config(path: Path) -> Config:
    """Read and validate ``path``; a missing file means all defaults."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigInvalidError(f"{path} is not valid TOML: {exc}. Fix or remove it.") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigInvalidError(f"{path}: {problems}", file=str(path)) from None
