"""The learning loop's journaled operations on ``Proto.learning``.

``backend.ops.apply`` hands every ``learning_*`` op here, with the manager lock held, live
and on journal replay alike, so replay reproduces exactly what was acknowledged. Each op
checks everything before it changes anything.

``Proto.learning`` holds plain data only::

    scores      {interaction id: JudgeScore}
    golden      {example id: GoldenExample}
    candidates  {pointer id: ModelPointer}     fine-tuned models not (or no longer) in use
    model       ModelPointer | None            what the persona talks through (None: default)
    previous    [pointer id | ""]              the rollback stack ("" = the default model)
    adoptions   [AdoptionRecord]               every pointer change with its evidence
    base        "" | pointer id                Ascension: the base the next fine-tune uses

Scores, golden examples and candidates are data, like history: they do not bump the
version, so curation never makes a concurrent swap stale. A pointer change does.
"""

from __future__ import annotations

from typing import Any

from backend.protos import Proto, ProtoManager
from shared_api.errors import InvalidValueError, NotFoundError
from shared_api.learning import AdoptionRecord, GoldenExample, JudgeScore, ModelPointer

MAX_ADOPTIONS = 200


def _section(proto: Proto, key: str) -> dict[str, Any]:
    section = proto.learning.setdefault(key, {})
    assert isinstance(section, dict)
    return section


def model_of(proto: Proto) -> ModelPointer | None:
    raw = proto.learning.get("model")
    return ModelPointer.model_validate(raw) if raw else None


def candidates_of(proto: Proto) -> dict[str, ModelPointer]:
    return {
        k: ModelPointer.model_validate(v) for k, v in proto.learning.get("candidates", {}).items()
    }


def pointer(proto: Proto, pointer_id: str) -> ModelPointer | None:
    """A known model of ``proto`` by id (the current one or a candidate); "" is the default."""
    if not pointer_id:
        return None
    current = model_of(proto)
    if current is not None and current.id == pointer_id:
        return current
    found = candidates_of(proto).get(pointer_id)
    if found is None:
        raise NotFoundError(
            f"{proto.name} has no model {pointer_id!r}; see learning_status for its models.",
            proto=proto.name,
        )
    return found


def golden_of(proto: Proto) -> list[GoldenExample]:
    return [GoldenExample.model_validate(v) for v in proto.learning.get("golden", {}).values()]


def scores_of(proto: Proto) -> dict[str, JudgeScore]:
    return {k: JudgeScore.model_validate(v) for k, v in proto.learning.get("scores", {}).items()}


def apply(manager: ProtoManager, proto: Proto, op: dict[str, Any]) -> Proto:
    kind = op["op"]
    if kind == "learning_scores":
        scores = [JudgeScore.model_validate(s) for s in op["scores"]]
        section = _section(proto, "scores")
        for score in scores:
            section[score.interaction_id] = score.model_dump(mode="json")
        manager.notify(proto, kind, {"scored": len(scores)})
        return proto
    if kind == "learning_golden_put":
        example = GoldenExample.model_validate(op["example"])
        if example.proto != proto.name:
            example = example.model_copy(update={"proto": proto.name})
        _section(proto, "golden")[example.id] = example.model_dump(mode="json")
        manager.notify(proto, kind, {"id": example.id})
        return proto
    if kind == "learning_golden_exclude":
        golden = _section(proto, "golden")
        if op["id"] not in golden:
            raise NotFoundError(
                f"{proto.name} has no golden example {op['id']!r}.", proto=proto.name
            )
        golden[op["id"]] = {
            **golden[op["id"]],
            "excluded": bool(op["excluded"]),
            "updated": op.get("ts", 0.0),
        }
        manager.notify(proto, kind, {"id": op["id"], "excluded": bool(op["excluded"])})
        return proto
    if kind == "learning_candidate":
        candidate = ModelPointer.model_validate(op["pointer"])
        _section(proto, "candidates")[candidate.id] = candidate.model_dump(mode="json")
        manager.notify(proto, kind, {"id": candidate.id})
        return proto
    if kind == "learning_adopt":
        _adopt(proto, op)
    elif kind == "learning_rollback":
        _rollback(proto, op)
    elif kind == "learning_ascend":
        return _ascend(manager, proto, op)
    else:
        raise InvalidValueError(f"unknown learning operation {kind!r}")
    proto.version += 1
    manager.notify(proto, kind, {"model": (proto.learning.get("model") or {}).get("id", "")})
    return proto


def _record(proto: Proto, record: dict[str, Any]) -> None:
    adoptions = proto.learning.setdefault("adoptions", [])
    adoptions.append(AdoptionRecord.model_validate(record).model_dump(mode="json"))
    del adoptions[:-MAX_ADOPTIONS]


def _switch(proto: Proto, new: ModelPointer | None) -> None:
    """Make ``new`` current; the outgoing model stays a candidate (so it can come back)."""
    old = model_of(proto)
    if old is not None:
        _section(proto, "candidates")[old.id] = old.model_dump(mode="json")
    proto.learning["model"] = new.model_dump(mode="json") if new is not None else None


def _adopt(proto: Proto, op: dict[str, Any]) -> None:
    new = pointer(proto, op["pointer_id"])
    old = model_of(proto)
    AdoptionRecord.model_validate(op["record"])  # refuse a bad record before any change
    _switch(proto, new)
    proto.learning.setdefault("previous", []).append(old.id if old else "")
    _record(proto, op["record"])


def _rollback(proto: Proto, op: dict[str, Any]) -> None:
    previous = proto.learning.get("previous") or []
    if not previous:
        raise InvalidValueError(
            f"{proto.name} has no earlier model to roll back to; it talks through "
            f"{(model_of(proto) or ModelPointer(id='the default model', proto=proto.name)).id}.",
            proto=proto.name,
        )
    target = pointer(proto, previous[-1])
    AdoptionRecord.model_validate(op["record"])
    _switch(proto, target)
    previous.pop()
    _record(proto, op["record"])


def _ascend(manager: ProtoManager, proto: Proto, op: dict[str, Any]) -> Proto:
    """Swap in a copy of the live production Proto that talks through the Ascension's model
    and fine-tunes from its base from now on. The codex is the live one's: never changed."""
    new = ModelPointer.model_validate(op["pointer"])
    AdoptionRecord.model_validate(op["record"])
    twin = proto.clone()
    old = model_of(twin)
    _section(twin, "candidates")[new.id] = new.model_dump(mode="json")
    _switch(twin, new)
    twin.learning.setdefault("previous", []).append(old.id if old else "")
    twin.learning["base"] = op.get("base", "")
    _record(twin, op["record"])
    swapped = manager.atomic_swap(twin, base_version=proto.version)
    manager.notify(swapped, "learning_ascend", {"model": new.id})
    return swapped
