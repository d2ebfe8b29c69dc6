"""The changes a user can make to the object graph, as plain-data operations.

The same ``apply`` runs a live edit and its journal replay, so replay reproduces exactly what
was acknowledged. Each op is all-or-nothing: it raises before it changes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend.codex import amended
from backend.learning import image_ops as learning_ops
from backend.protos import Proto, ProtoManager
from backend.state_tree import check_depth, copy_tree, set_path
from shared_api.errors import AlreadyExistsError, InvalidValueError
from shared_api.tools import Tool

Op = dict[str, Any]


#: An edit of one Proto: it changes the Proto and returns the detail of its announcement;
#: ``apply`` then bumps the version and announces it.
Edit = Callable[[Proto, Op], dict[str, Any]]
#: An op that yields a Proto of its own (a clone, a swap) or does not count as an edit.
Produce = Callable[[ProtoManager, Proto, Op], Proto]


def apply(manager: ProtoManager, op: Op) -> Proto:
    """Apply ``op`` and announce it through the manager; returns the Proto it produced.

    Call with ``manager.lock`` held.
    """
    kind = op["op"]
    proto = manager.get(op["proto"])
    produce = PRODUCE.get(kind)
    if produce is None and kind.startswith("learning_"):
        # Judge scores, golden examples and the model pointer (backend/learning/).
        produce = learning_ops.apply
    if produce is not None:
        return produce(manager, proto, op)
    edit = EDITS.get(kind)
    if edit is None:
        raise InvalidValueError(f"unknown operation {kind!r}")
    detail = edit(proto, op)
    proto.version += 1
    manager.notify(proto, kind, detail)
    return proto


# The live state gets its own copy of a value: a running method may edit the live state in
# place, and that must never change the op that is (or will be) journaled.
def _set_state(proto: Proto, op: Op) -> dict[str, Any]:
    check_depth(op["value"], op["path"])
    value = op["value"]
    set_path(proto.state, op["path"], copy_tree(value) if _container(value) else value)
    return {"path": op["path"]}


def _replace_state(proto: Proto, op: Op) -> dict[str, Any]:
    check_depth(op["state"])
    proto.state = copy_tree(op["state"])
    return {}


def _define_method(proto: Proto, op: Op) -> dict[str, Any]:
    proto.define_method(op["name"], op["source"])
    return {"method": op["name"]}


def _remove_method(proto: Proto, op: Op) -> dict[str, Any]:
    proto.remove_method(op["name"])
    return {"method": op["name"]}


def _attach_tool(proto: Proto, op: Op) -> dict[str, Any]:
    tool = Tool.model_validate(op["tool"])
    if tool.proto != proto.name:  # a clone's copy answers to the clone
        tool = tool.model_copy(update={"proto": proto.name})
    proto.attach_tool(tool)
    return {"tool": tool.name}


def _remove_tool(proto: Proto, op: Op) -> dict[str, Any]:
    proto.detach_tool(op["name"])
    return {"tool": op["name"]}


def _amend_codex(proto: Proto, op: Op) -> dict[str, Any]:
    # The one path that changes a codex: an amendment the user approved (dialogue).
    proto._codex = amended(proto.codex, op["field"], op["value"])
    return {"field": op["field"], "interrupt_id": op.get("interrupt_id", "")}


def _record_interaction(manager: ProtoManager, proto: Proto, op: Op) -> Proto:
    # History is not an edit: it does not bump the version, so it never makes a concurrent
    # swap stale.
    proto.history.append(op["interaction"])
    manager.notify(proto, "interaction", {"id": op["interaction"].get("id", "")})
    return proto


def _remove(manager: ProtoManager, proto: Proto, op: Op) -> Proto:
    return manager.remove(proto.name)


def _clone(manager: ProtoManager, proto: Proto, op: Op) -> Proto:
    twin = proto.clone(op["new_name"])
    twin.version = 0
    twin.history = []
    return manager.register(twin)


def _swap(manager: ProtoManager, proto: Proto, op: Op) -> Proto:
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


EDITS: dict[str, Edit] = {
    "set_state": _set_state,
    "replace_state": _replace_state,
    "define_method": _define_method,
    "remove_method": _remove_method,
    "attach_tool": _attach_tool,
    "remove_tool": _remove_tool,
    "amend_codex": _amend_codex,
}
PRODUCE: dict[str, Produce] = {
    "record_interaction": _record_interaction,
    "remove": _remove,
    "clone": _clone,
    "swap": _swap,
}


def _container(value: Any) -> bool:
    return isinstance(value, dict | list)


def free_clone_name(manager: ProtoManager, base: str) -> str:
    names: set[str] = set(manager.names())
    for n in range(2, 10_000):
        candidate = f"{base}-{n}"
        if candidate not in names:
            return candidate
    raise AlreadyExistsError(f"Too many clones of {base}; remove some first.")
