"""The core commands' handlers, registered in the dispatch table (``backend.routing``).

A handler raises ``EntropicError`` for a typed failure; the server turns that (or any other
exception) into an ``ErrorReply``. ``blocking`` handlers run on the worker pool so a slow
method, a journal fsync or an image save never holds up other requests; only handlers that
neither wait on disk nor run user code run inline on the request loop.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from backend import __version__, ops
from backend.documents import prompt_for, read_document
from backend.engines import engines
from backend.memory.service import MemoryService
from backend.routing import Context, route
from backend.state_tree import copy_tree, get_path
from shared_api import commands as c
from shared_api.errors import (
    AlreadyExistsError,
    DocumentError,
    EntropicError,
    InvalidValueError,
    MemoryUnavailableError,
    ModelUnreachableError,
    NotFoundError,
)
from shared_api.events import BackendLog
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
    ToolList,
)
from shared_api.version import PROTOCOL_VERSION


def _updated(proto_name: str, version: int, change: str) -> ProtoUpdated:
    return ProtoUpdated(proto=proto_name, version=version, change=change)


def _ping_fast(ctx: Context, body: dict[str, Any]) -> dict[str, Any] | None:
    """``ping`` with no field but a short ``client`` string (see ``c.Ping``), as plain data."""
    client = body.get("client", "")
    if type(client) is not str or len(client) > 32 or len(body) != 1 + ("client" in body):
        return None
    if ctx.attach is not None:
        ctx.attach.seen(client)
    return {"kind": "pong", "protocol": PROTOCOL_VERSION, "pid": os.getpid()}


@route("ping", fast=_ping_fast)
def ping(ctx: Context, cmd: c.Ping) -> Reply:
    if ctx.attach is not None:
        ctx.attach.seen(cmd.client)
    return Pong(protocol=PROTOCOL_VERSION, pid=os.getpid())


def _echo_fast(ctx: Context, body: dict[str, Any]) -> dict[str, Any] | None:
    """``echo`` whose ``data`` is a str or bytes and no other field (see ``c.Echo``)."""
    data = body.get("data", "")
    if (type(data) is not str and type(data) is not bytes) or len(body) != 1 + ("data" in body):
        return None
    return {"kind": "echo_reply", "data": data}


@route("echo", fast=_echo_fast)
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
                "roles": {
                    n: {r: s.model_dump() for r, s in roles.items()}
                    for n, roles in ctx.llm.role_selections.items()
                },
                "default": ctx.llm.default_model(),
            },
            "forge": ctx.forge.status() if ctx.forge else None,
            "memory": {"state": ctx.memory.state, "error": ctx.memory.error}
            if ctx.memory
            else None,
            "lifecycle": ctx.attach.status() if ctx.attach is not None else None,
            "engines": engines(ctx),
        },
    )


@route("list_protos")
def list_protos(ctx: Context, cmd: c.ListProtos) -> Reply:
    return ProtoList(
        protos=[
            ProtoSummary(
                name=p.name,
                role=p.codex.role,
                version=p.version,
                methods=sorted(p.methods),
                tools=sorted(p.tools),
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
            history=[_clip(_judged(p, i)) for i in p.history[-HISTORY_SHOWN:]],
            tools=list(p.tools.values()),
            models=ctx.llm.role_selections.get(p.name, {}),
        )


HISTORY_SHOWN = 20


def _judged(proto: Any, interaction: dict[str, Any]) -> dict[str, Any]:
    """The interaction with ALFRED's overall score, once the curator has judged it."""
    score = proto.learning.get("scores", {}).get(interaction.get("id"))
    if not score:
        return interaction
    if score.get("error"):  # a failed judgement is shown as such, never as a score
        return {**interaction, "judge_error": (score["error"] or {}).get("message", "")}
    return {**interaction, "judge_score": score.get("overall")}


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
    cancelled = (
        ctx.llm.cancel(cmd.request_id)
        or bool(ctx.forge and ctx.forge.cancel(cmd.request_id))
        or bool(ctx.learning and ctx.learning.cancel(cmd.request_id))
    )
    return CancelReply(request_id=cmd.request_id, cancelled=cancelled)


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
        roles=llm.role_selections,
        default_model=llm.default_model(),
    )


def _resident(ctx: Context) -> str | None:
    resident = ctx.llm.manager.resident
    return f"{resident[0]}:{resident[1]}" if resident else None


@route("save_image", blocking=True)
def save_image(ctx: Context, cmd: c.SaveImage) -> Reply:
    return ctx.runtime.save_image()


# -- episodic memory (backend/memory/) --------------------------------------------------------
def _memory(ctx: Context) -> MemoryService:
    if ctx.memory is None:
        raise MemoryUnavailableError("This backend runs without a memory.")
    return ctx.memory


@route("search_memory", blocking=True)
def search_memory(ctx: Context, cmd: c.SearchMemory) -> Reply:
    if cmd.proto is not None:
        ctx.runtime.manager.get(cmd.proto)  # NotFoundError names the known personas
    return _memory(ctx).search(cmd.text, cmd.k, cmd.proto)


@route("ingest_document", blocking=True)
def ingest_document(ctx: Context, cmd: c.IngestDocument) -> Reply:
    if cmd.proto is not None:
        ctx.runtime.manager.get(cmd.proto)
    _check_document_path(cmd.path)
    return _memory(ctx).ingest(cmd.path, cmd.proto, cmd.wait)


@route("ask_document", blocking=True)
def ask_document(ctx: Context, cmd: c.AskDocument) -> Reply:
    """A drop: read the file here (off the UI thread), remember it, ask with its text."""
    ctx.runtime.manager.get(cmd.proto)
    _check_document_path(cmd.path)
    document = read_document(Path(cmd.path), cmd.max_bytes)
    _remember(ctx, str(document.path.resolve()), cmd.proto)
    text = prompt_for(document, cmd.budget_chars)
    accepted = ctx.llm.submit(cmd.proto, text, None)
    return accepted.model_copy(update={"asked": text.splitlines()[0][:160]})


#: How long a dropped document's ingest waits for the memory to open (a background thread).
DROP_OPEN_WAIT_S = 600.0


def _remember(ctx: Context, path: str, proto: str) -> None:
    """Ingest a dropped document in the background (the same content twice adds nothing).
    A memory still opening (LanceDB and the embedder load lazily, slowly on a busy machine)
    is waited for; one that cannot take it says why, as a warning the workbench shows. The
    persona is asked all the same."""

    def ingest() -> None:
        try:
            _memory(ctx).ingest(path, proto, False, open_wait=DROP_OPEN_WAIT_S)
        except EntropicError as exc:
            ctx.runtime.bus.publish(BackendLog(level="warning", message=exc.message))

    threading.Thread(target=ingest, name="remember-document", daemon=True).start()


def _check_document_path(path: str) -> None:
    """A path no file can have gets a typed, one-line ``DocumentError`` here."""
    if "\x00" in path:
        raise DocumentError(
            "The path holds a NUL byte, which no file name can contain. Give the file's path.",
            path=path.replace("\x00", "\\0"),
            reason="nul_byte",
        )
    try:
        Path(path).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        why = "a symlink loop" if "loop" in str(exc) else type(exc).__name__
        raise DocumentError(
            f"{path} cannot be resolved ({why}). Give the path of a regular file.",
            path=path,
            reason="unresolvable",
        ) from None


@route("memory_stats", blocking=True)
def memory_stats(ctx: Context, cmd: c.MemoryStats) -> Reply:
    return _memory(ctx).stats()


@route("shutdown", blocking=True)
def shutdown(ctx: Context, cmd: c.Shutdown) -> Reply:
    saved = False
    if cmd.save:
        ctx.runtime.save_image()
        saved = True
    ctx.request_stop(cmd.save)
    return ShuttingDown(saved=saved)


# -- the Tool Forge ----------------------------------------------------------------------------


@route("forge_tool", blocking=True)
def forge_tool(ctx: Context, cmd: c.ForgeTool) -> Reply:
    return ctx.tool_forge().submit(
        cmd.proto, cmd.name, cmd.description, list(cmd.examples), cmd.max_attempts
    )


@route("list_tools")
def list_tools(ctx: Context, cmd: c.ListTools) -> Reply:
    manager = ctx.runtime.manager
    with manager.lock:
        protos = [manager.get(cmd.proto)] if cmd.proto else manager.list()
        return ToolList(tools=[t for p in protos for t in p.tools.values()])


@route("remove_tool", blocking=True)
def remove_tool(ctx: Context, cmd: c.RemoveTool) -> Reply:
    p = ctx.runtime.commit({"op": "remove_tool", "proto": cmd.proto, "name": cmd.name})
    return _updated(p.name, p.version, "remove_tool")


@route("run_tool", blocking=True)
def run_tool(ctx: Context, cmd: c.RunTool) -> Reply:
    proto = ctx.runtime.manager.get(cmd.proto)
    tool = proto.tools.get(cmd.name)
    if tool is None:
        raise NotFoundError(
            f"{proto.name} has no forged tool {cmd.name!r}. Known: "
            f"{', '.join(sorted(proto.tools)) or 'none'}; forge one with forge_tool.",
            proto=proto.name,
        )
    return ctx.tool_forge().call(proto.name, tool, dict(cmd.args))
