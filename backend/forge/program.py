"""The code side of the forge: reading a candidate out of a model's reply, refusing tests that
test nothing, and the two programs that run in the sandbox (the tests, and one tool call).

Nothing here executes the candidate: it is only parsed (``ast``) in the backend; it runs in
the sandbox alone.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from shared_api.sandbox import SandboxResult

RESULT_MARK = "\x1eENTROPIC-RESULT "
"""Prefix of the line a sandbox program reports on. Passing tests is a quality gate, not a
security boundary (the code could print this line itself); the sandbox is the boundary."""

_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class CandidateRejected(Exception):
    """The reply cannot be used; ``stage`` is ``write`` or ``check``, the message says why
    in words meant for the author."""

    def __init__(self, stage: Literal["write", "check"], message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class Candidate:
    source: str
    tests: str
    test_names: list[str]
    params: list[str]


def extract_code(reply: str) -> str:
    """The Python in a model reply: its fenced blocks joined, else the whole reply
    (an unterminated fence, as when the answer hit the token limit, is read to the end)."""
    blocks = _FENCE.findall(reply)
    if blocks:
        return "\n\n".join(b.strip("\n") for b in blocks)
    start = re.search(r"```[ \t]*(?:python|py|python3)?[ \t]*\n", reply, re.IGNORECASE)
    return reply[start.end() :] if start else reply


def parse_candidate(name: str, reply: str) -> Candidate:
    """Split the code into the tool module and its tests and check both.

    Raises ``CandidateRejected`` when there is no code, it does not parse, it lacks
    ``def NAME``, or a test does not assert on the result of calling ``NAME``.
    """
    code = extract_code(reply).strip()
    if not code:
        raise CandidateRejected("write", "The reply held no Python code.")
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise CandidateRejected(
            "write", f"SyntaxError: {exc.msg} at line {exc.lineno}: {(exc.text or '').strip()}"
        ) from None
    lines = code.splitlines(keepends=True)
    tool_parts: list[str] = []
    test_parts: list[str] = []
    tests: list[ast.FunctionDef] = []
    function: ast.FunctionDef | None = None
    for node in tree.body:
        segment = "".join(lines[_first_line(node) - 1 : node.end_lineno])
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            tests.append(node)
            test_parts.append(segment)
        elif _is_main_guard(node) or _is_script_call(node):
            continue  # `test_x()` or a main block at the top would run at import
        else:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                function = node
            spaced = tool_parts and isinstance(node, ast.FunctionDef | ast.ClassDef)
            tool_parts.append(("\n" if spaced else "") + segment.rstrip("\n") + "\n")
    if function is None:
        raise CandidateRejected(
            "check", f"There is no top-level function `def {name}(...)`. Define it."
        )
    if not tests:
        raise CandidateRejected(
            "check",
            f"There are no tests. Write at least two functions named test_..., each calling "
            f"`{name}` and asserting on its result, e.g. `assert {name}(...) == ...`.",
        )
    for test in tests:
        if not _asserts_on_call(test, name):
            raise CandidateRejected(
                "check",
                f"`{test.name}` does not assert on a result of `{name}`. Each test must call "
                f"`{name}` and check what it returns, e.g. `assert {name}(...) == ...`.",
            )
    params = [a.arg for a in function.args.posonlyargs + function.args.args]
    params += [a.arg for a in function.args.kwonlyargs]
    return Candidate(
        source="".join(tool_parts),
        tests="\n\n".join(p.rstrip("\n") + "\n" for p in test_parts),
        test_names=[t.name for t in tests],
        params=params,
    )


def _first_line(node: ast.stmt) -> int:
    decorators: list[ast.expr] = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _is_script_call(node: ast.stmt) -> bool:
    """A bare call at module level (``test_x()``, ``print(...)``): script code, not a tool."""
    return isinstance(node, ast.Expr) and any(isinstance(n, ast.Call) for n in ast.walk(node))


def _calls(node: ast.AST, name: str) -> bool:
    return any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
        for n in ast.walk(node)
    )


def _asserts_on_call(test: ast.FunctionDef, name: str) -> bool:
    """True when an ``assert`` in ``test`` involves a call of ``name``, directly or through
    a variable assigned from one."""
    results = {
        target.id
        for node in ast.walk(test)
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value and _calls(node.value, name)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    for node in ast.walk(test):
        if isinstance(node, ast.Assert):
            if _calls(node.test, name):
                return True
            if any(isinstance(n, ast.Name) and n.id in results for n in ast.walk(node.test)):
                return True
    return False


# -- the programs that run in the sandbox ----------------------------------------------------

_PRELUDE = """\
import json, linecache, sys, traceback, types
MARK = {mark!r}
tool = types.ModuleType("tool")
tool.__file__ = "tool.py"
sys.modules["tool"] = tool

def load(source, filename, space):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), space)

def trace(exc):
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename in ("tool.py", "test_tool.py")]
    text = "".join(traceback.format_list(frames) + traceback.format_exception_only(exc))
    return "Traceback (most recent call last):\\n" + text if frames else text
"""


def suite_program(name: str, source: str, tests: str) -> str:
    """Runs every test against the tool; reports one JSON list of outcomes; exit 0 only
    when all pass. Tracebacks show only the tool's and the tests' own lines."""
    return _PRELUDE.format(mark=RESULT_MARK) + (
        f"sys.modules[{name!r}] = tool\n"
        "outcomes = []\n"
        "try:\n"
        f"    load({source!r}, 'tool.py', tool.__dict__)\n"
        "    space = dict(tool.__dict__)\n"
        f"    load({tests!r}, 'test_tool.py', space)\n"
        "except BaseException as exc:\n"
        "    outcomes.append({'test': '<load>', 'ok': False, 'error': trace(exc)})\n"
        "else:\n"
        "    for test in [n for n, v in list(space.items())\n"
        "                 if n.startswith('test') and callable(v) and n not in tool.__dict__]:\n"
        "        try:\n"
        "            space[test]()\n"
        "            outcomes.append({'test': test, 'ok': True})\n"
        "        except BaseException as exc:\n"
        "            outcomes.append({'test': test, 'ok': False, 'error': trace(exc)})\n"
        "sys.stdout.flush()\n"
        "sys.__stdout__.write(MARK + json.dumps(outcomes) + '\\n')\n"
        "sys.exit(0 if outcomes and all(o['ok'] for o in outcomes) else 1)\n"
    )


def call_program(name: str, source: str, args: dict[str, Any]) -> str:
    """Calls the tool once with JSON ``args``; what it prints goes to stderr, its JSON
    result to the report line; an exception's traceback (its own lines) to stderr."""
    return _PRELUDE.format(mark=RESULT_MARK) + (
        f"ARGS = json.loads({json.dumps(args)!r})\n"
        "out, sys.stdout = sys.stdout, sys.stderr\n"
        "try:\n"
        f"    load({source!r}, 'tool.py', tool.__dict__)\n"
        f"    result = tool.__dict__[{name!r}](**ARGS)\n"
        "except BaseException as exc:\n"
        "    sys.stderr.write(trace(exc))\n"
        "    sys.exit(1)\n"
        "try:\n"
        "    line = json.dumps(result, allow_nan=False)\n"
        "except (TypeError, ValueError) as exc:\n"
        f"    print({name!r} + ' returned a ' + type(result).__name__ + ', which is not JSON: '\n"
        "          + str(exc), file=sys.stderr)\n"
        "    sys.exit(3)\n"
        "out.write(MARK + line + '\\n')\n"
    )


def report(result: SandboxResult) -> tuple[bool, Any]:
    """``(True, value)`` for the JSON a sandbox program reported last; ``(False, None)`` when
    it reported nothing readable."""
    for line in reversed(result.stdout.split("\n")):  # not splitlines: it splits at \x1e
        if line.startswith(RESULT_MARK):
            try:
                return True, json.loads(line[len(RESULT_MARK) :])
            except json.JSONDecodeError:
                return False, None
    return False, None
