"""Mending a small model's import slips in a candidate, before it is tested.

A 1.5B model writes the right algorithm with the wrong import surprisingly often:
``from datetime import datetime`` then ``datetime.timedelta(...)``, or ``Counter(...)`` with no
import at all. Each such slip costs a whole attempt, and the model tends to repeat it when
told. Here the candidate's source is read (``ast``, never run), and only these are mended:

- a name it uses but never binds, that a standard-library module exports
  (``timedelta`` -> ``from datetime import timedelta``; ``re`` -> ``import re``);
- ``X.attr`` where ``X`` was imported from module ``M`` (``from M import X``), ``X`` has no
  ``attr`` but ``M`` does (``datetime.timedelta`` -> ``timedelta``, imported from ``M``);
- ``M.attr`` where module ``M`` has no ``attr`` but its same-named class does
  (``import datetime`` then ``datetime.strptime`` -> ``datetime.datetime.strptime``).

The mended candidate still has to pass every example in the sandbox; what was mended is
reported. Only the modules in ``MODULES`` are looked at, by attribute lookup on the imported
standard-library module (nothing of the candidate is imported or run here).
"""

from __future__ import annotations

import ast
import builtins
import importlib
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType

#: Looked at in this order: the first that exports a name provides it.
MODULES = (
    "datetime", "collections", "itertools", "functools", "math", "re", "string", "statistics",
    "calendar", "json", "operator", "heapq", "bisect", "decimal", "fractions", "textwrap",
    "unicodedata", "csv", "io", "typing",
)  # fmt: skip


@dataclass
class Repair:
    source: str
    #: What was mended, in words (empty: nothing).
    notes: list[str] = field(default_factory=list)


@cache
def _module(name: str) -> ModuleType:
    return importlib.import_module(name)


def _provider(name: str) -> str | None:
    """The import line that provides ``name``, or None."""
    if name in MODULES:
        return f"import {name}"
    for module in MODULES:
        if not name.startswith("_") and hasattr(_module(module), name):
            return f"from {module} import {name}"
    return None


def _bound(tree: ast.Module) -> tuple[set[str], dict[str, str], set[str]]:
    """Every name the source binds; the names bound by ``from M import X`` (X -> M); the
    modules bound by ``import M``."""
    bound: set[str] = set()
    imported_from: dict[str, str] = {}
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
                if alias.asname is None and "." not in alias.name:
                    modules.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if node.module and alias.asname is None and node.level == 0:
                    imported_from[alias.name] = node.module
        elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
            bound.add(node.name)
    return bound, imported_from, modules


def _edits(tree: ast.Module, imported_from: dict[str, str], modules: set[str]) -> tuple[
    list[tuple[ast.Attribute, str]], set[str], list[str]
]:  # fmt: skip
    """The attribute slips: (node, its replacement text), the imports they need, notes."""
    edits: list[tuple[ast.Attribute, str]] = []
    needed: set[str] = set()
    notes: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
            continue
        owner, attr = node.value.id, node.attr
        module = imported_from.get(owner)
        if module in MODULES:
            thing = getattr(_module(module), owner, None)
            if thing is not None and not hasattr(thing, attr) and hasattr(_module(module), attr):
                edits.append((node, attr))
                needed.add(f"from {module} import {attr}")
                notes.append(f"{owner}.{attr} -> {attr} (from {module})")
        elif owner in modules and owner in MODULES and not hasattr(_module(owner), attr):
            inner = getattr(_module(owner), owner, None)
            if inner is not None and hasattr(inner, attr):
                edits.append((node, f"{owner}.{owner}.{attr}"))
                notes.append(f"{owner}.{attr} -> {owner}.{owner}.{attr}")
    return edits, needed, notes


def repair(source: str) -> Repair:
    """``source`` with its import slips mended (unchanged when it has none or does not
    parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return Repair(source)
    bound, imported_from, modules = _bound(tree)
    edits, needed, notes = _edits(tree, imported_from, modules)
    known = bound | set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in known:
            line = _provider(node.id)
            if line is not None and line not in needed:
                needed.add(line)
                notes.append(f"{node.id} was not imported: {line}")
    if not needed and not edits:
        return Repair(source)
    lines = source.splitlines(keepends=True)
    for node, text in sorted(edits, key=lambda e: (e[0].lineno, e[0].col_offset), reverse=True):
        if node.lineno != node.end_lineno or node.end_col_offset is None:
            continue  # an attribute split over lines: left as written
        row = lines[node.lineno - 1].encode()
        start, end = node.col_offset, node.end_col_offset
        lines[node.lineno - 1] = (row[:start] + text.encode() + row[end:]).decode()
    header = "".join(f"{line}\n" for line in sorted(needed))
    future = [n.end_lineno or n.lineno for n in tree.body
              if isinstance(n, ast.ImportFrom) and n.module == "__future__"]  # fmt: skip
    at = max(future, default=0)  # after `from __future__ import ...`, which must come first
    return Repair("".join(lines[:at]) + header + "".join(lines[at:]), notes)
