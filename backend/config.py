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

from backend.learning.config import LearningConfig
from backend.llm.endpoints import OpenAIEndpoint, is_reference, parse_reference
from backend.memory.config import MemoryConfig
from shared_api.errors import ConfigInvalidError
from shared_api.sandbox import Limits


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transport: Literal["tcp", "ipc"] = Field(
        default="ipc",
        description="ipc: sockets in HOME/run (0700), reachable by this user only; tcp: "
        "anyone on the machine can connect (every request is still signed)",
    )
    ip: str = "127.0.0.1"
    allow_remote: bool = Field(
        default=False, description="Allow binding to a non-loopback address (needs curve)."
    )
    curve: bool = Field(
        default=False,
        description="tcp only: encrypt with ZeroMQ CURVE and let in only the client keys in "
        "HOME/keys/authorized (see `main.py keys`)",
    )
    request_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    event_port: int = Field(default=0, ge=0, le=65535)
    heartbeat_interval_s: float = Field(default=1.0, gt=0, le=60)
    autosave_interval_s: float = Field(default=300.0, ge=0, description="0 disables autosave.")
    autosave_records: int = Field(
        default=10_000,
        ge=0,
        description="also save the image once this many journal records are unsaved, so a "
        "restart after a crash never replays more; 0: only on the timer",
    )
    image_generations: int = Field(default=5, ge=2, le=100)
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    workers: int = Field(default=8, ge=1, le=64)
    replay_window_s: float = Field(default=30.0, ge=5)
    orphan_exit_s: float = Field(
        default=600.0,
        ge=0,
        description="A backend a workbench started stops this long after "
        "the last workbench left (0: never).",
    )

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
                    "(and curve = true) to expose the backend beyond this machine"
                )
        if self.transport == "tcp" and self.allow_remote and not self.curve:
            raise ValueError(
                "allow_remote needs curve = true: beyond this machine every byte must be "
                "encrypted and only authorized keys may connect (see `main.py keys`)"
            )
        return self

    def endpoint_specs(self, run_dir: Path, prefix: str = "") -> tuple[str, str]:
        """Bind specs: ipc sockets ``run_dir/PREFIXrequests.sock`` and ``...events.sock``,
        or tcp on ``ip`` (port 0: a free one)."""
        if self.transport == "ipc":
            return (
                f"ipc://{run_dir / f'{prefix}requests.sock'}",
                f"ipc://{run_dir / f'{prefix}events.sock'}",
            )
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        req = f"tcp://{host}" + (f":{self.request_port}" if self.request_port else "")
        evt = f"tcp://{host}" + (f":{self.event_port}" if self.event_port else "")
        return req, evt


ModelRefText = Field(
    default="",
    max_length=4096,
    description="a model reference: qwen2.5-coder-1.5b, tiny, a GGUF path, ollama:TAG, "
    "openai:MODEL (see backend/llm/catalog.py); empty: the next rule applies",
)


class RoleModels(BaseModel):
    """``[models.roles]``: the model each role talks through (empty: the default model)."""

    model_config = ConfigDict(extra="forbid")

    chat: str = ModelRefText  # persona replies and dialogue turns
    code: str = ModelRefText  # the forge's author
    judge: str = ModelRefText  # ALFRED's rubric scores and pairwise verdicts


class PersonaModel(RoleModels):
    """``[models.personas.NAME]``: a persona's own model, for all its roles or per role."""

    model: str = Field(
        default="",
        max_length=4096,
        description="this persona's model for every role (a bare name:tag is an Ollama model, "
        "overriding the codex's default_model)",
    )

    @model_validator(mode="after")
    def _something(self) -> PersonaModel:
        if not (self.model or self.chat or self.code or self.judge):
            raise ValueError("names no model: set model, chat, code or judge")
        return self


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
    default: str = Field(
        default="",
        max_length=4096,
        description="the model reference every role uses unless [models.roles] or a persona "
        "says otherwise; empty: $ENTROPIC_MODEL (main.py --model), else qwen2.5-coder-1.5b",
    )
    roles: RoleModels = RoleModels()
    embedded_model: str = Field(
        default="", max_length=4096, description="older name for `default` (a GGUF path)"
    )
    embedded_sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    n_threads: int = Field(
        default=0, ge=0, le=256, description="llama.cpp threads; 0: the physical cores (1 for tiny)"
    )
    n_ctx: int = Field(default=2048, ge=256, le=131072)
    max_tokens: int = Field(default=256, ge=1, le=32768, description="per persona reply")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    repeat_penalty: float = Field(
        default=1.1, ge=1.0, le=2.0, description="for persona replies and dialogue turns"
    )
    resample_temperature: float = Field(
        default=0.7, ge=0.0, le=2.0, description="re-sampling a reply that looped"
    )
    prompt_cache_mb: int = Field(
        default=64, ge=0, le=4096, description="embedded: kept system-prompt states; 0: off"
    )
    vram_budget_gb: float = Field(default=8.0, gt=0)
    personas: dict[str, PersonaModel] = {}
    openai: dict[str, OpenAIEndpoint] = Field(
        default={}, description="OpenAI-compatible servers, named; see backend/llm/endpoints.py"
    )

    @model_validator(mode="after")
    def _references_resolve(self) -> ModelsConfig:
        named = [(f"roles.{r}", getattr(self.roles, r)) for r in ("chat", "code", "judge")]
        for name, persona in self.personas.items():
            for field in ("model", "chat", "code", "judge"):
                named.append((f"personas.{name}.{field}", getattr(persona, field)))
        for where, reference in named:
            if is_reference(reference):
                try:
                    parse_reference(reference, self.openai)
                except ConfigInvalidError as exc:
                    raise ValueError(f"{where}: {exc.message}") from None
        return self


class ForgeConfig(BaseModel):
    """``[forge]``: the Tool Forge (personas write, test and hot-load their own tools)."""

    model_config = ConfigDict(extra="forbid")

    autonomy: bool = Field(
        default=False,
        description="on: a message a persona does not understand starts a forge, and the "
        "call is retried when the tool is attached; off: a forge is proposed as a goal",
    )
    author: str = Field(default="BRICK", description="the persona who writes the code")
    max_attempts: int = Field(default=3, ge=1, le=10)
    max_tokens: int = Field(default=768, ge=64, le=32768, description="per written candidate")
    candidates: int = Field(
        default=3, ge=1, le=10, description="candidates sampled per attempt (best-of-n)"
    )
    retry_candidates: int = Field(
        default=5,
        ge=0,
        le=10,
        description="candidates per attempt after one in which none passed, or the one that "
        "passed missed a proposed check (the greedy one has failed: more samples); 0: as many "
        "as `candidates`",
    )
    probes: bool = Field(
        default=True,
        description="beside given examples, the author proposes more checks that choose "
        "among the candidates passing them (one short extra generation per forge)",
    )
    temperature: float = Field(
        default=0.7, ge=0.0, le=2.0, description="sampling temperature of candidates 2..n"
    )
    runtime: str | None = Field(default=None, description="sandbox runtime; default: strongest")
    limits: Limits = Field(default=Limits(), description="for test runs and tool calls alike")
    concurrent: int = Field(default=2, ge=1, le=16, description="forges at once")


class DialogueConfig(BaseModel):
    """``[dialogue]``: the Socratic Contrapunto (BRICK and ROBIN argue, ALFRED judges)."""

    model_config = ConfigDict(extra="forbid")

    max_rounds: int = Field(default=6, ge=1, le=100, description="rounds unless a start says")
    impasse_rounds: int = Field(
        default=2, ge=1, le=100, description="dissonant rounds in a row that pause the graph"
    )
    dissonance_threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    convergence_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    max_tokens: int = Field(default=160, ge=8, le=32768, description="per persona turn")
    judge_views: bool = Field(
        default=True,
        description="ALFRED also judges which view answers the goal better (pairwise, both "
        "orders) each round; shown in the judgement",
    )
    keep_checkpoints: int = Field(
        default=400, ge=0, description="per dialogue, newest kept; 0 keeps every checkpoint"
    )
    keep_dialogues: int = Field(default=50, ge=1, description="finished dialogues kept")
    prune_every: int = Field(default=25, ge=1, description="steps between prunings")
    logic: str = Field(default="BRICK", description="who argues the logical side")
    empathy: str = Field(default="ROBIN", description="who answers with empathic synthesis")
    judge: str = Field(default="ALFRED", description="who supervises and judges")
    research: str = Field(default="BABS", description="who researches facts")
    checkpoints: str = Field(
        default="",
        description='where checkpoints live: "" for SQLite in HOME/dialogue, or a '
        "postgresql://user@host:port/db URL (the password from $PGPASSWORD or ~/.pgpass)",
    )


class MotivatorConfig(BaseModel):
    """``[motivator]``: dissonance and curiosity deficits become goals, rate-limited."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    curiosity_interval_s: float = Field(
        default=300.0, ge=0, description="seconds between curiosity checks; 0 disables them"
    )
    max_goals_per_hour: int = Field(default=6, ge=0, le=1000)
    cooldown_s: float = Field(default=600.0, ge=0, description="per source and subject")
    min_score: float = Field(default=0.5, ge=0.0, le=1.0, description="weaker events are ignored")
    auto_approve: bool = Field(
        default=False, description="start goals' dialogues without waiting for the user"
    )


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: BackendConfig = BackendConfig()
    models: ModelsConfig = ModelsConfig()
    memory: MemoryConfig = MemoryConfig()
    dialogue: DialogueConfig = DialogueConfig()
    motivator: MotivatorConfig = MotivatorConfig()
    forge: ForgeConfig = ForgeConfig()
    learning: LearningConfig = LearningConfig()


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
