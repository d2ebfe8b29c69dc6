"""Proto: a persona as a live object, and ProtoManager: the registry that swaps them atomically.

A Proto has an immutable ``codex`` (its identity), an editable ``state`` tree of JSON-like
values, runtime-defined ``methods`` (source kept, compiled and bound with ``MethodType``), a
``version`` bumped by every change, and a ``history`` of interactions for later curation.
"""

from __future__ import annotations

import builtins
import inspect
import linecache
import pickle
import threading
import traceback
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from backend.codex import Codex
from backend.state_tree import copy_tree
from shared_api.errors import (
    AlreadyExistsError,
    CodexImmutableError,
    CompileError,
    InvalidValueError,
    MethodFailedError,
    NotFoundError,
    StaleVersionError,
    UnavailableError,
)
from shared_api.tools import Tool

HISTORY_CHUNK = 1000
_SLOTS = frozenset(
    {"name", "_codex", "state", "version", "_methods", "_tools", "history", "learning"}
)


class DoesNotUnderstand(AttributeError):  # Smalltalk's name for it
    """Raised inside method code that sends a Proto a message it lacks."""

    def __init__(self, proto: str, message: str) -> None:
        super().__init__(f"{proto} does not understand {message!r}")
        self.proto = proto
        self.message = message


@dataclass(frozen=True)
class Method:
    name: str
    source: str
    function: types.FunctionType

    @property
    def signature(self) -> str:
        params = list(inspect.signature(self.function).parameters.values())[1:]
        return f"{self.name}({', '.join(str(p) for p in params)})"


def compile_method(owner: str, name: str, source: str) -> Method:
    """Compile ``source``, which must define ``def NAME(self, ...)``.

    Raises ``CompileError`` with ``line`` and ``column`` for a syntax error, or with the
    failing line for an error raised while the definition runs.
    """
    filename = f"<{owner}.{name}>"
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise CompileError(
            f"{name}: {exc.msg} at line {exc.lineno}, column {exc.offset}. "
            "Fix the source; the previous method is unchanged.",
            line=exc.lineno,
            column=exc.offset,
            text=(exc.text or "").rstrip("\n"),
        ) from None
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": f"protos.{owner}"}
    try:
        exec(code, namespace)  # noqa: S102 - methods are the authenticated user's own code
    except Exception as exc:
        line = traceback.extract_tb(exc.__traceback__)[-1].lineno
        raise CompileError(
            f"{name}: defining it raised {exc.__class__.__name__}: {exc} (line {line}). "
            "The previous method is unchanged.",
            line=line,
            column=None,
        ) from None
    function = namespace.get(name)
    if not isinstance(function, types.FunctionType):
        raise CompileError(
            f"The source must define a function named `{name}`, as `def {name}(self, ...):`.",
            line=1,
            column=1,
        )
    if not inspect.signature(function).parameters:
        raise CompileError(
            f"`{name}` must take `self` as its first parameter.",
            line=function.__code__.co_firstlineno,
            column=1,
        )
    return Method(name, source, function)


class Proto:
    """A live persona object. Mutate it only through ``ProtoManager`` / the runtime, which
    journal every change; methods may edit ``self.state`` freely."""

    #: The process's model service (``backend.llm.service.PersonaLLM``), set at startup.
    llm: ClassVar[Any] = None
    #: Runs forged tools in the sandbox (``backend.forge.ToolForge``), set at startup.
    tool_runner: ClassVar[Any] = None

    def __init__(
        self, name: str, codex: Codex, state: dict[str, Any] | None = None, version: int = 0
    ) -> None:
        self.name = name
        self._codex = codex
        self.state: dict[str, Any] = state if state is not None else {}
        self.version = version
        self._methods: dict[str, Method] = {}
        self._tools: dict[str, Tool] = {}
        self.history: list[dict[str, Any]] = []
        #: The learning loop's plain data (backend/learning/image_ops.py): judge scores,
        #: golden examples, the model pointer and its history. Changed only by journaled ops.
        self.learning: dict[str, Any] = {}

    # -- identity ---------------------------------------------------------------------------
    @property
    def codex(self) -> Codex:
        return self._codex

    def __setattr__(self, attr: str, value: Any) -> None:
        if attr == "codex":
            raise CodexImmutableError(
                f"The codex of {self.name} is immutable; propose an amendment for approval instead."
            )
        if attr not in _SLOTS:
            raise AttributeError(
                f"Proto {getattr(self, 'name', '?')} has no attribute {attr!r}; keep data in "
                "self.state so it is saved in the image."
            )
        object.__setattr__(self, attr, value)

    # -- methods ----------------------------------------------------------------------------
    @property
    def methods(self) -> dict[str, Method]:
        return dict(self._methods)

    def has_method(self, name: str) -> bool:
        return name in self._methods

    def understands(self, name: str) -> bool:
        """True for a method or a forged tool of that name."""
        return name in self._methods or name in self._tools

    def define_method(self, name: str, source: str) -> Method:
        """Compile and bind; on any error the old method (if any) stays."""
        if name in self._tools:
            raise AlreadyExistsError(
                f"{self.name} has a forged tool named {name!r}; remove the tool first "
                "(remove_tool) or pick another method name.",
                proto=self.name,
            )
        method = compile_method(self.name, name, source)
        self._methods[name] = method
        return method

    def remove_method(self, name: str) -> None:
        if self._methods.pop(name, None) is None:
            raise NotFoundError(f"{self.name} has no method {name!r}.", proto=self.name)

    # -- forged tools: methods whose bodies run in the sandbox ------------------------------
    @property
    def tools(self) -> dict[str, Tool]:
        return dict(self._tools)

    def attach_tool(self, tool: Tool) -> None:
        """Attach (or replace) a forged tool; a plain method of that name is never shadowed."""
        if tool.name in self._methods:
            raise AlreadyExistsError(
                f"{self.name} already has a method named {tool.name!r}; remove it or forge "
                "the tool under another name.",
                proto=self.name,
            )
        self._tools[tool.name] = tool

    def detach_tool(self, name: str) -> Tool:
        tool = self._tools.pop(name, None)
        if tool is None:
            raise NotFoundError(
                f"{self.name} has no forged tool {name!r}. Known: "
                f"{', '.join(sorted(self._tools)) or 'none'}.",
                proto=self.name,
            )
        return tool

    def _tool_caller(self, tool: Tool) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if len(args) > len(tool.params):
                raise TypeError(f"{tool.signature} takes {len(tool.params)} arguments")
            kwargs.update(zip(tool.params, args, strict=False))
            return self._call_tool(tool, kwargs)

        call.__name__ = tool.name
        call.__doc__ = tool.description
        return call

    def _call_tool(self, tool: Tool, args: dict[str, Any]) -> Any:
        if Proto.tool_runner is None:
            raise UnavailableError("No sandbox service runs in this process to run tools.")
        unknown = sorted(set(args) - set(tool.params))
        if unknown:
            raise InvalidValueError(
                f"Bad arguments for {self.name}.{tool.signature}: unexpected {', '.join(unknown)}.",
                method=tool.name,
            )
        return Proto.tool_runner.call(self.name, tool, args).result

    def __getattr__(self, attr: str) -> Any:
        # Only called when normal lookup fails: methods are looked up here, so method code
        # can call ``self.other(...)``; a forged tool answers the same way, in the sandbox.
        methods = self.__dict__.get("_methods", {})
        if attr in methods:
            return types.MethodType(methods[attr].function, self)
        tools = self.__dict__.get("_tools", {})
        if attr in tools:
            return self._tool_caller(tools[attr])
        if attr.startswith("_"):
            raise AttributeError(attr)
        raise DoesNotUnderstand(self.__dict__.get("name", "?"), attr)

    def invoke(self, name: str, args: dict[str, Any]) -> Any:
        """Call a method with keyword ``args``. Raises ``DoesNotUnderstand`` for an unknown
        name, ``InvalidValueError`` for bad arguments, ``MethodFailedError`` if it raises."""
        method = self._methods.get(name)
        if method is None:
            if name in self._tools:
                return self._call_tool(self._tools[name], args)
            raise DoesNotUnderstand(self.name, name)
        bound = types.MethodType(method.function, self)
        try:
            inspect.signature(bound).bind(**args)
        except TypeError as exc:
            raise InvalidValueError(
                f"Bad arguments for {self.name}.{method.signature}: {exc}.", method=name
            ) from None
        try:
            return bound(**args)
        except DoesNotUnderstand:
            raise  # answered as a does_not_understand reply, not a failure
        except Exception as exc:
            tb = traceback.format_exception(exc)
            raise MethodFailedError(
                f"{self.name}.{name} raised {exc.__class__.__name__}: {exc}. Fix the method "
                "in the Inspector and call it again.",
                method=name,
                traceback="".join(tb[-6:]),
            ) from None

    def invoke_llm(
        self,
        prompt: str,
        max_tokens: int | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> str:
        """Ask this persona's model (its system prompt, its model); the interaction is
        recorded in ``history``. With ``json_schema`` the answer is JSON valid under it."""
        if Proto.llm is None:
            raise UnavailableError("No model service runs in this process.")
        completion = Proto.llm.ask(self, prompt, max_tokens=max_tokens, json_schema=json_schema)
        return str(completion.text)

    # -- copies -----------------------------------------------------------------------------
    def clone(self, name: str | None = None) -> Proto:
        """A deep, independent copy: editing the clone never touches the original."""
        twin = Proto(name or self.name, self._codex, copy_tree(self.state), self.version)
        twin._methods = dict(self._methods)  # Method objects are immutable; binding is per call
        twin._tools = dict(self._tools)  # Tool models are frozen
        twin.history = list(self.history)
        twin.learning = copy_tree(self.learning)
        return twin

    def get_self_description(self) -> dict[str, Any]:
        """What the Proto knows about itself, for prompts and the Inspector."""
        return {
            "name": self.name,
            "role": self._codex.role,
            "description": self._codex.description,
            "core_principles": list(self._codex.core_principles),
            "default_model": self._codex.default_model,
            "version": self.version,
            "methods": [
                {"name": m.name, "signature": m.signature, "doc": inspect.getdoc(m.function) or ""}
                for m in self._methods.values()
            ],
            "tools": [
                {"name": t.name, "signature": t.signature, "doc": t.description}
                for t in self._tools.values()
            ],
            "state_keys": sorted(self.state),
            "interactions": len(self.history),
            "learning": self._learning_view(),
        }

    def _learning_view(self) -> dict[str, Any]:
        """The learning loop at a glance: the model, golden examples, the judge's scores."""
        stored = list(self.learning.get("scores", {}).values())
        scores = [s.get("overall") for s in stored if not s.get("error")]
        judged = [s for s in scores if isinstance(s, int | float)]
        golden = self.learning.get("golden", {}).values()
        return {
            "model": (self.learning.get("model") or {}).get("id", ""),
            "golden": sum(not g.get("excluded") for g in golden),
            "judged": len(judged),
            "judge_failed": sum(bool(s.get("error")) for s in stored),
            "mean_score": round(sum(judged) / len(judged), 3) if judged else None,
        }

    # -- pickling (the image) ---------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # Methods travel as source and are recompiled on load. The bulky plain history goes
        # through C pickle (dill's pure-Python pickler is several times slower on it), in
        # chunks, so no single C call holds the GIL long enough to stall the request loop.
        return {
            "format": 1,
            "name": self.name,
            "codex": self._codex.model_dump(mode="json"),
            "state": self.state,
            "version": self.version,
            "methods": {n: m.source for n, m in self._methods.items()},
            "tools": {n: t.model_dump(mode="json") for n, t in self._tools.items()},
            "history": [
                pickle.dumps(self.history[i : i + HISTORY_CHUNK], protocol=5)
                for i in range(0, len(self.history), HISTORY_CHUNK)
            ],
            "learning": self.learning,
        }

    def __setstate__(self, data: dict[str, Any]) -> None:
        object.__setattr__(self, "name", data["name"])
        object.__setattr__(self, "_codex", Codex.model_validate(data["codex"]))
        object.__setattr__(self, "state", data["state"])
        object.__setattr__(self, "version", data["version"])
        object.__setattr__(self, "_methods", {})
        tools = {n: Tool.model_validate(t) for n, t in data.get("tools", {}).items()}
        object.__setattr__(self, "_tools", tools)
        history: list[dict[str, Any]] = []
        for chunk in data["history"]:
            history.extend(pickle.loads(chunk))  # noqa: S301 - inside a verified image
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "learning", data.get("learning", {}))
        for name, source in data["methods"].items():
            self._methods[name] = compile_method(self.name, name, source)

    def __repr__(self) -> str:
        return (
            f"<Proto {self.name} v{self.version} methods={sorted(self._methods)} "
            f"tools={sorted(self._tools)}>"
        )


Listener = Callable[[Proto, str, dict[str, Any]], None]


class ProtoManager:
    """The registry of live Protos, one per backend process. Thread-safe.

    ``lock`` (re-entrant) guards every change; the runtime holds it while it applies a change
    and journals it, so a change and its journal record are one step.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._protos: dict[str, Proto] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """``listener(proto, change, detail)`` is called after every change."""
        self._listeners.append(listener)

    def notify(self, proto: Proto, change: str, detail: dict[str, Any] | None = None) -> None:
        for listener in self._listeners:
            listener(proto, change, detail or {})

    @contextmanager
    def locked(self) -> Iterator[ProtoManager]:
        with self.lock:
            yield self

    def register(self, proto: Proto) -> Proto:
        with self.lock:
            if proto.name in self._protos:
                raise AlreadyExistsError(f"A Proto named {proto.name!r} already exists.")
            self._protos[proto.name] = proto
        self.notify(proto, "registered")
        return proto

    def get(self, name: str) -> Proto:
        try:
            return self._protos[name]
        except KeyError:
            raise NotFoundError(
                f"No Proto named {name!r}. Known: {', '.join(sorted(self._protos))}.",
                proto=name,
            ) from None

    def list(self) -> builtins.list[Proto]:
        with self.lock:
            return list(self._protos.values())

    def names(self) -> builtins.list[str]:
        with self.lock:
            return list(self._protos)

    def remove(self, name: str) -> Proto:
        with self.lock:
            proto = self.get(name)
            del self._protos[name]
        self.notify(proto, "removed")
        return proto

    def atomic_swap(self, clone: Proto, base_version: int | None = None) -> Proto:
        """Replace the live Proto of the same name with ``clone`` in one step.

        ``base_version`` (default: the clone's own version) must equal the live version,
        else ``StaleVersionError``: someone changed the live Proto since it was cloned.
        """
        base = clone.version if base_version is None else base_version
        with self.lock:
            live = self.get(clone.name)
            if live.version != base:
                raise StaleVersionError(
                    f"{clone.name} is at version {live.version}, but this swap was based on "
                    f"version {base}. Re-read it (describe_proto) and apply the edit again.",
                    proto=clone.name,
                    live_version=live.version,
                    base_version=base,
                )
            clone.version = base + 1
            self._protos[clone.name] = clone
        self.notify(clone, "swapped")
        return clone
