"""The house rules for imports, read from the source with ``ast`` (nothing is imported).

- ``ui/`` and ``morphs/`` never import ``backend/``; ``backend/`` never imports ``ui/`` or
  ``morphs/``; ``shared_api/`` imports nothing of ours. Every import counts here, at module
  level, inside a function or under ``TYPE_CHECKING``.
- No circle of imports between modules, and no exception listed. Every import counts, those
  under ``TYPE_CHECKING`` too: they never run, but a part that names its owner's type is a
  service handed to its own parts (STYLE.md 20). Give it a Protocol of what it uses instead.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("backend", "ui", "morphs", "shared_api")
#: What each package must not import (``main.py``, the launcher, may import them all).
FORBIDDEN = {
    "ui": ("backend",),
    "morphs": ("backend",),
    "backend": ("ui", "morphs"),
    "shared_api": ("backend", "ui", "morphs", "personas", "main"),
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a package's ``__init__`` is the package's name)
    line: int
    type_checking: bool


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, guarded: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node under ``node``, with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        yield child, guarded
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, guarded
                yield from _walk(stmt, guarded)
        else:
            yield from _walk(child, guarded)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted ``name`` that is one of our modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor if is_package else anchor[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # ``from pkg import mod`` imports the module ``pkg.mod``; ``from mod import name``,
        # the module ``mod``: ``_resolve`` keeps the longest prefix that is a module.
        yield from (f"{base}.{alias.name}" for alias in node.names)


def imports() -> list[Import]:
    modules = _modules()
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        for node, guarded in _walk(tree):
            for name in _targets(node, module, path.name == "__init__.py"):
                target = _resolve(name, modules) or name.split(".")[0]
                if target != module:
                    found.append(Import(module, target, node.lineno, guarded))  # type: ignore[attr-defined]
    return found


def cycles(edges: list[Import]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_crosses_between_the_processes() -> None:
    crossing = [
        f"{edge.source} (line {edge.line}) imports {edge.target}"
        for edge in imports()
        if edge.target.split(".")[0] in FORBIDDEN.get(edge.source.split(".")[0], ())
    ]
    assert not crossing, (
        "ui/ and morphs/ must not import backend/, backend/ must not import ui/ or morphs/, "
        "shared_api/ imports none of ours (see ARCHITECTURE.md): pass a function in instead, "
        "or move the code to the side that owns it:\n" + "\n".join(crossing)
    )


def test_no_import_cycles() -> None:
    found = sorted(sorted(c) for c in cycles(imports()))
    assert not found, (
        "A circle of imports. Break it: hand the collaborator the callables it uses (or a "
        "Protocol of them) instead of importing their owner, or move the shared part into a "
        f"module of its own (see ARCHITECTURE.md): {found}"
    )


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_sees_cycles_and_crossings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules themselves, on a small made-up tree: a function-level cycle counts, so does
    a TYPE_CHECKING one, relative imports resolve, a crossing is found."""
    import tests.unit.test_imports as rules

    _write(
        tmp_path,
        {
            "backend/__init__.py": "",
            "backend/a.py": "def f():\n    from backend import b\n",
            "backend/b.py": "from .a import f\nfrom ui.c import g\n",
            "backend/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from backend.e import E\n",
            "backend/e.py": "import backend.d\n",
            "ui/__init__.py": "",
            "ui/c.py": "def g(): ...\n",
            "morphs/__init__.py": "",
            "shared_api/__init__.py": "",
        },
    )
    monkeypatch.setattr(rules, "ROOT", tmp_path)
    edges = rules.imports()
    assert cycles(edges) == {
        frozenset({"backend.a", "backend.b"}),
        frozenset({"backend.d", "backend.e"}),
    }
    assert Import("backend.b", "ui.c", 2, False) in edges
    assert Import("backend.d", "backend.e", 3, True) in edges


#: The house's screen: no function in these packages is longer (issue 17's "done when").
SCREEN_LINES = 60


def long_functions(source: str) -> list[tuple[str, int]]:
    """(name, lines) of each function in ``source`` longer than a screen."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > SCREEN_LINES
    ]


def test_no_function_is_longer_than_a_screen() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {name} ({lines} lines)"
        for package in ("backend", "ui", "morphs")
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, lines in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "split these (a function fits on one screen): " + "; ".join(found)
    body = "".join(f"    x{i} = {i}\n" for i in range(SCREEN_LINES))
    assert long_functions(f"def f():\n{body}") == [("f", SCREEN_LINES + 1)]  # the check bites
    assert long_functions(f"def f():\n{body[: body.rindex('    x')]}") == []
