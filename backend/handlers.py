"""The dispatch table: one handler per command kind, each returning a typed reply.

A handler raises ``EntropicError`` for a typed failure; the server turns that (or any other
exception) into an ``ErrorReply``. ``blocking`` handlers run on the worker pool so a slow
method, a journal fsync or an image save never holds up other requests; only handlers that
neither wait on disk nor run user code run inline on the request loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend import __version__, ops
from backend.llm.service import PersonaLLM
from backend.runtime import Runtime
from backend.state_tree import copy_tree, get_path
from shared_api import commands as c
from shared_api.errors import AlreadyExistsError, InvalidValueError, ModelUnreachableError
from shared_api.replies import (
    CancelReply,
    EchoReply,
    ModelEntry,
    ModelListReply,
    ModelStatusReply,
    Pong,
    ProtoDescription,
    ProtoList,
    ProtoSummary,
    ProtoUpdated,
    Reply,
    ShuttingDown,
    StateReply,
    StatusReply,
)
from shared_api.version import PROTOCOL_VERSION


@dataclass
class Context:
    runtime: Runtime
    llm: PersonaLLM
    endpoints: dict[str, str]
    request_stop: Callable[[bool], None]
    started: float = field(default_factory=time.monotonic)
    stats: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Context, Any], Reply]


@dataclass(frozen=True)
class Route:
    handler: Handler
    blocking: bool


ROUTES: dict[str, Route] = {}


def route(kind: str, *, blocking: bool = False) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ROUTES[kind] = Route(fn, blocking)
        return fn

    return register


def _updated(proto_name: str, version: int, change: str) -> ProtoUpdated:
    return ProtoUpdated(proto=proto_name, version=version, change=change)


@route("ping")
def ping(ctx: Context, cmd: c.Ping) -> Reply:
    return Pong(protocol=PROTOCOL_VERSION, pid=os.getpid())


@route("echo")
def echo(ctx: Context, cmd: c.Echo) -> Reply:
    return EchoReply(data=cmd.data)


@route("status")
def status(ctx: Context, cmd: c.Status) -> Reply:
    rt = ctx.runtime
    return StatusReply(
        protocol=PROTOCOL_VERSION,
        package_version=__version__,
        pid=os.getpid(),
        uptime_s=time.monotonic() - ctx.started,
        home=str(rt.home.root),
        protos=rt.manager.names(),
        image=rt.image_info,
        endpoints=ctx.endpoints,
        services={
            "journal": {"seq": rt.journal.seq, "dirty": rt.dirty},
            "autosave_interval_s": rt.config.autosave_interval_s,
            "dropped_frames": dict(ctx.stats.get("dropped", {})),
            "requests": ctx.stats.get("requests", 0),
            "models": {
                "resident": _resident(ctx),
                "selections": {n: s.model_dump() for n, s in ctx.llm.selections.items()},
            },
        },
    )


@route("list_protos")
def list_protos(ctx: Context, cmd: c.ListProtos) -> Reply:
    return ProtoList(
        protos=[
            ProtoSummary(
                name=p.name, role=p.codex.role, version=p.version, methods=sorted(p.methods)
            )
            for p in ctx.runtime.manager.list()
        ]
    )


@route("describe_proto")
def describe_proto(ctx: Context, cmd: c.DescribeProto) -> Reply:
    manager = ctx.runtime.manager
    with manager.lock:  # a consistent view of one version
        p = manager.get(cmd.proto)
        return ProtoDescription(
            name=p.name,
            version=p.version,
            codex=p.codex.model_dump(mode="json"),
            state=copy_tree(p.state),
            methods={n: m.source for n, m in p.methods.items()},
            description=p.get_self_description(),
            history=[_clip(i) for i in p.history[-HISTORY_SHOWN:]],
        )


HISTORY_SHOWN = 20


def _clip(interaction: dict[str, Any], limit: int = 2000) -> dict[str, Any]:
    """An interaction for display: long prompts (whole documents) are shortened."""
    return {
        k: (v[:limit] + "...") if isinstance(v, str) and len(v) > limit else v
        for k, v in interaction.items()
    }


@route("get_state")
def get_state(ctx: Context, cmd: c.GetState) -> Reply:
    manager = ctx.runtime.manager
    with manager.lock:
        p = manager.get(cmd.proto)
        value = get_path(p.state, cmd.path)
        return StateReply(proto=p.name, path=cmd.path, value=value, version=p.version)


@route("set_state", blocking=True)
def set_state(ctx: Context, cmd: c.SetState) -> Reply:
    p = ctx.runtime.commit(
        {"op": "set_state", "proto": cmd.proto, "path": cmd.path, "value": cmd.value}
    )
    return _updated(p.name, p.version, "set_state")


@route("define_method", blocking=True)
def define_method(ctx: Context, cmd: c.DefineMethod) -> Reply:
    p = ctx.runtime.commit(
        {"op": "define_method", "proto": cmd.proto, "name": cmd.name, "source": cmd.source}
    )
    return _updated(p.name, p.version, "define_method")


@route("remove_method", blocking=True)
def remove_method(ctx: Context, cmd: c.RemoveMethod) -> Reply:
    p = ctx.runtime.commit({"op": "remove_method", "proto": cmd.proto, "name": cmd.name})
    return _updated(p.name, p.version, "remove_method")


@route("invoke", blocking=True)
def invoke(ctx: Context, cmd: c.Invoke) -> Reply:
    return ctx.runtime.invoke(cmd.proto, cmd.method, dict(cmd.args))


@route("clone_proto", blocking=True)
def clone_proto(ctx: Context, cmd: c.CloneProto) -> Reply:
    manager = ctx.runtime.manager
    with manager.lock:
        manager.get(cmd.proto)
        new_name = cmd.new_name or ops.free_clone_name(manager, cmd.proto)
        if new_name in manager.names():
            raise AlreadyExistsError(
                f"A Proto named {new_name!r} already exists; pick another name."
            )
        p = ctx.runtime.commit({"op": "clone", "proto": cmd.proto, "new_name": new_name})
    return _updated(p.name, p.version, "clone")


@route("remove_proto", blocking=True)
def remove_proto(ctx: Context, cmd: c.RemoveProto) -> Reply:
    if cmd.proto in ctx.runtime.codices:
        raise InvalidValueError(
            f"{cmd.proto} is a codex persona (personas/{cmd.proto}.json) and cannot be removed; "
            "only clones can. Close its morph instead.",
            proto=cmd.proto,
        )
    p = ctx.runtime.commit({"op": "remove", "proto": cmd.proto})
    return _updated(p.name, p.version, "remove")


@route("swap_proto", blocking=True)
def swap_proto(ctx: Context, cmd: c.SwapProto) -> Reply:
    p = ctx.runtime.commit(
        {
            "op": "swap",
            "proto": cmd.proto,
            "base_version": cmd.base_version,
            "state": cmd.state,
            "methods": dict(cmd.methods),
            "remove_methods": list(cmd.remove_methods),
        }
    )
    return _updated(p.name, p.version, "swap")


@route("ask_persona", blocking=True)
def ask_persona(ctx: Context, cmd: c.AskPersona) -> Reply:
    return ctx.llm.submit(cmd.proto, cmd.text, cmd.max_tokens)


@route("cancel")
def cancel(ctx: Context, cmd: c.Cancel) -> Reply:
    return CancelReply(request_id=cmd.request_id, cancelled=ctx.llm.cancel(cmd.request_id))


@route("list_models", blocking=True)
def list_models(ctx: Context, cmd: c.ListModels) -> Reply:
    models = [
        ModelEntry(name=m.name, backend=m.backend, size_bytes=m.size_bytes, detail=m.detail)
        for m in ctx.llm.manager.backends["embedded"].list_models()
    ]
    error = None
    try:
        models += [
            ModelEntry(name=m.name, backend=m.backend, size_bytes=m.size_bytes, detail=m.detail)
            for m in ctx.llm.ollama.list_models()
        ]
    except ModelUnreachableError as exc:
        error = exc.message
    return ModelListReply(
        models=models,
        ollama_host=ctx.llm.ollama.host,
        ollama_reachable=error is None,
        ollama_error=error,
    )


@route("model_status", blocking=True)
def model_status(ctx: Context, cmd: c.ModelStatus) -> Reply:
    llm = ctx.llm
    metrics = llm.manager.last_metrics
    return ModelStatusReply(
        resident=_resident(ctx),
        queue=llm.manager.queue(),
        selections=llm.refresh_selections(),
        vram_budget_bytes=llm.manager.vram_budget_bytes,
        in_flight=llm.in_flight(),
        last_metrics=metrics.model_dump() if metrics else None,
    )


def _resident(ctx: Context) -> str | None:
    resident = ctx.llm.manager.resident
    return f"{resident[0]}:{resident[1]}" if resident else None


@route("save_image", blocking=True)
def save_image(ctx: Context, cmd: c.SaveImage) -> Reply:
    return ctx.runtime.save_image()


@route("shutdown", blocking=True)
def shutdown(ctx: Context, cmd: c.Shutdown) -> Reply:
    saved = False
    if cmd.save:
        ctx.runtime.save_image()
        saved = True
    ctx.request_stop(cmd.save)
    return ShuttingDown(saved=saved)
