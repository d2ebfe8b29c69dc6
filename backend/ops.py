"""The changes a user can make to the object graph, as plain-data operations.

The same ``apply`` runs a live edit and its journal replay, so replay reproduces exactly what
was acknowledged. Each op is all-or-nothing: it raises before it changes anything.
"""

from __future__ import annotations

from typing import Any

from backend.codex import amended
from backend.learning import image_ops as learning_ops
from backend.protos import Proto, ProtoManager
from backend.state_tree import check_depth, copy_tree, set_path
from shared_api.errors import AlreadyExistsError, InvalidValueError
from shared_api.tools import Tool

Op = dict[str, Any]


def apply(manager: ProtoManager, op: Op) -> Proto:
    """Apply ``op`` and announce it through the manager; returns the Proto it produced.

    Call with ``manager.lock`` held.
    """
    kind = op["op"]
    proto = manager.get(op["proto"])
    # The live state gets its own copy of a value: a running method may edit the live state
    # in place, and that must never change the op that is (or will be) journaled.
    if kind == "set_state":
        check_depth(op["value"], op["path"])
        value = op["value"]
        set_path(proto.state, op["path"], copy_tree(value) if _container(value) else value)
        detail: dict[str, Any] = {"path": op["path"]}
    elif kind == "replace_state":
        check_depth(op["state"])
        proto.state = copy_tree(op["state"])
        detail = {}
    elif kind == "define_method":
        proto.define_method(op["name"], op["source"])
        detail = {"method": op["name"]}
    elif kind == "remove_method":
        proto.remove_method(op["name"])
        detail = {"method": op["name"]}
    elif kind == "attach_tool":
        tool = Tool.model_validate(op["tool"])
        if tool.proto != proto.name:  # a clone's copy answers to the clone
            tool = tool.model_copy(update={"proto": proto.name})
        proto.attach_tool(tool)
        detail = {"tool": tool.name}
    elif kind == "remove_tool":
        proto.detach_tool(op["name"])
        detail = {"tool": op["name"]}
    elif kind == "amend_codex":
        # The one path that changes a codex: an amendment the user approved (dialogue).
        proto._codex = amended(proto.codex, op["field"], op["value"])
        detail = {"field": op["field"], "interrupt_id": op.get("interrupt_id", "")}
    elif kind == "record_interaction":
        # History is not an edit: it does not bump the version, so it never makes a
        # concurrent swap stale.
        proto.history.append(op["interaction"])
        manager.notify(proto, "interaction", {"id": op["interaction"].get("id", "")})
        return proto
    elif kind.startswith("learning_"):
        # Judge scores, golden examples and the model pointer (backend/learning/).
        return learning_ops.apply(manager, proto, op)
    elif kind == "remove":
        return manager.remove(proto.name)
    elif kind == "clone":
        twin = proto.clone(op["new_name"])
        twin.version = 0
        twin.history = []
        return manager.register(twin)
    elif kind == "swap":
        clone = proto.clone()
        if op.get("state") is not None:
            check_depth(op["state"])
            clone.state = copy_tree(op["state"])
        else:
            # Record the state the swap actually carried over, so the journaled op replays
            # exactly what went live even if a running method changed the state meanwhile.
            op["state"] = copy_tree(clone.state)
        for name, source in op.get("methods", {}).items():
            clone.define_method(name, source)
        for name in op.get("remove_methods", []):
            clone.remove_method(name)
        clone.version = op["base_version"]
        return manager.atomic_swap(clone)
    else:
        raise InvalidValueError(f"unknown operation {kind!r}")
    proto.version += 1
    manager.notify(proto, kind, detail)
    return proto


def _container(value: Any) -> bool:
    return isinstance(value, dict | list)


def free_clone_name(manager: ProtoManager, base: str) -> str:
    names: set[str] = set(manager.names())
    for n in range(2, 10_000):
        candidate = f"{base}-{n}"
        if candidate not in names:
            return candidate
    raise AlreadyExistsError(f"Too many clones of {base}; remove some first.")
