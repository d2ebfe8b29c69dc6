"""The code side of the forge: reading a candidate out of a model's reply, reading the
requester's examples as checks, and the programs that run in the sandbox (all candidates of an
attempt against the examples, and one tool call).

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


def parse_candidate(name: str, reply: str, *, require_tests: bool = True) -> Candidate:
    """Split the code into the tool module and its tests and check both.

    Raises ``CandidateRejected`` when there is no code, it does not parse, or it lacks
    ``def NAME``. With ``require_tests`` (a forge without examples) it must also have tests,
    each asserting on the result of calling ``NAME``; without, its own tests are optional and
    one that asserts nothing is dropped.
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
    if require_tests and not tests:
        raise CandidateRejected(
            "check",
            f"There are no tests. Write at least two functions named test_..., each calling "
            f"`{name}` and asserting on its result, e.g. `assert {name}(...) == ...`.",
        )
    kept, test_parts = _own_tests(name, tests, test_parts, require_tests)
    params = [a.arg for a in function.args.posonlyargs + function.args.args]
    params += [a.arg for a in function.args.kwonlyargs]
    return Candidate(
        source="".join(tool_parts),
        tests="\n\n".join(p.rstrip("\n") + "\n" for p in test_parts),
        test_names=[t.name for t in kept],
        params=params,
    )


def _own_tests(
    name: str, tests: list[ast.FunctionDef], parts: list[str], required: bool
) -> tuple[list[ast.FunctionDef], list[str]]:
    """The candidate's own tests that assert on a call of ``name``, and their sources. One
    that asserts nothing is dropped when they are optional, refused when ``required``."""
    for position, test in enumerate(tests):
        if not _asserts_on_call(test, name):
            if not required:  # its own tests are optional: one that tests nothing goes
                parts[position] = ""
                continue
            raise CandidateRejected(
                "check",
                f"`{test.name}` does not assert on a result of `{name}`. Each test must call "
                f"`{name}` and check what it returns, e.g. `assert {name}(...) == ...`.",
            )
    kept = [t for t, part in zip(tests, parts, strict=True) if part]
    return kept, [part for part in parts if part]


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


# -- the examples: executable checks ---------------------------------------------------------


class ExampleRejected(ValueError):
    """An example that is not a check of the tool (says why, for the requester)."""


@dataclass(frozen=True)
class Example:
    """One example as a check: ``call == expected`` (``expected`` None: ``call`` must be
    true)."""

    text: str
    call: str
    expected: str | None


def parse_example(name: str, text: str) -> Example:
    """Read ``text`` (e.g. ``word_count(text="a b") == 2``) as a check of ``name``. Parsed
    only (``ast``), never run here: it runs in the sandbox with the candidates."""
    text = " ".join(text.strip().rstrip(";").splitlines()).strip()
    text = text.removeprefix("assert ").strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ExampleRejected(
            f"The example {text!r} is not a Python expression ({exc.msg}). Write it as "
            f"`{name}(...) == expected`."
        ) from None
    if not _calls(tree, name):
        raise ExampleRejected(
            f"The example {text!r} does not call {name}. Write it as `{name}(...) == expected`."
        )
    if isinstance(tree, ast.Compare) and len(tree.ops) == 1 and isinstance(tree.ops[0], ast.Eq):
        left, right = tree.left, tree.comparators[0]
        if _calls(right, name) and not _calls(left, name):
            left, right = right, left
        return Example(text, ast.unparse(left), ast.unparse(right))
    return Example(text, ast.unparse(tree), None)


_JSON_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"),
               (dict, "dict"))  # fmt: skip


def _json_type(node: ast.expr) -> str | None:
    """The JSON type name of a literal (``None`` when it is not one)."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if value is None:
        return "None"
    return next((label for kind, label in _JSON_TYPES if isinstance(value, kind)), None)


def signature(name: str, examples: list[Example]) -> str:
    """The ``def`` line the examples imply: their keyword names in order, each with the
    type of its value, e.g. ``def add_days(date: str, n: int):`` (no result type: an example
    does not show every type a result may have, e.g. ``None``).
    ``""`` when no example calls ``name`` with keywords only. A model told this line uses the
    examples' parameter names instead of guessing its own."""
    for example in examples:
        call = ast.parse(example.call, mode="eval").body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            continue
        if call.func.id != name or call.args or not call.keywords:
            continue
        if any(k.arg is None for k in call.keywords):
            continue
        params = []
        for keyword in call.keywords:
            kind = _json_type(keyword.value)
            params.append(f"{keyword.arg}: {kind}" if kind and kind != "None" else str(keyword.arg))
        return f"def {name}({', '.join(params)}):"
    return ""


def select_tests(tests: str, names: list[str]) -> str:
    """Only the test functions named ``names`` out of ``tests`` (a candidate's own tests that
    agreed with the examples)."""
    if not tests.strip() or not names:
        return ""
    lines = tests.splitlines(keepends=True)
    kept = [
        "".join(lines[_first_line(node) - 1 : node.end_lineno]).rstrip("\n") + "\n"
        for node in ast.parse(tests).body
        if isinstance(node, ast.FunctionDef) and node.name in names
    ]
    return "\n\n".join(kept)


def examples_tests(name: str, examples: list[Example]) -> str:
    """The examples as test functions, stored with the tool."""
    return "\n\n".join(
        f"def test_example_{i}():\n    assert {e.text}\n" for i, e in enumerate(examples, 1)
    )


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


_CANDIDATES = """\
import math, signal
def same(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a == b and type(a) is type(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b

class Slow(BaseException):
    pass

def alarm(signum, frame):
    raise Slow("it took longer than " + str(PER) + " s")

signal.signal(signal.SIGALRM, alarm)

def shown(value):
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."

def number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)

def kin(got, want):
    # types that ``same`` compares by value: numbers, and lists with tuples
    return (number(got) and number(want)) or (
        isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)))

def differ(got, want):
    # where the result first departs from the expected value, in words (the first 10,000
    # items or characters are looked at: the candidate's time limit covers this too)
    if type(got) is not type(want) and not kin(got, want):
        return "expected type " + type(want).__name__ + ", got " + type(got).__name__
    if isinstance(want, (str, list, tuple)):
        for i, (a, b) in enumerate(zip(got[:10000], want[:10000])):
            if not same(a, b):
                where = "character" if isinstance(want, str) else "item"
                return where + " " + str(i) + ": expected " + shown(b) + ", got " + shown(a)
        if len(got) != len(want):
            return "expected length " + str(len(want)) + ", got " + str(len(got))
    if isinstance(want, dict):
        missing = [k for k in want if k not in got]
        extra = [k for k in got if k not in want]
        if missing or extra:
            return "; ".join(([("keys missing: " + shown(missing))] if missing else [])
                             + ([("keys not expected: " + shown(extra))] if extra else []))
        for key in want:
            if not same(got[key], want[key]):
                return ("at key " + shown(key) + ": expected " + shown(want[key]) + ", got "
                        + shown(got[key]))
    return ""

def check(space, example):
    call, expected, text = example
    try:
        got = eval(call, space)
        if expected is None:
            return {"example": text, "ok": bool(got), "got": shown(got)}
        want = eval(expected, {"__builtins__": __builtins__})
        if same(got, want):
            return {"example": text, "ok": True, "got": shown(got)}
        return {"example": text, "ok": False, "got": shown(got), "why": differ(got, want)}
    except BaseException as exc:
        return {"example": text, "ok": False, "got": "raised " + trace(exc).strip()[-600:]}

def run(index, source, tests):
    mod = types.ModuleType("tool")
    outcome = {"candidate": index, "load": "", "examples": [], "tests": []}
    signal.setitimer(signal.ITIMER_REAL, PER)
    try:
        sys.modules[NAME] = sys.modules["tool"] = mod
        load(source, "tool.py", mod.__dict__)
        for example in EXAMPLES:
            outcome["examples"].append(check(dict(mod.__dict__), example))
        if tests:
            space = dict(mod.__dict__)
            load(tests, "test_tool.py", space)
            for test in [n for n, v in list(space.items())
                         if n.startswith("test") and callable(v) and n not in mod.__dict__]:
                try:
                    space[test]()
                    outcome["tests"].append({"test": test, "ok": True})
                except BaseException as exc:
                    outcome["tests"].append({"test": test, "ok": False, "error": trace(exc)})
    except BaseException as exc:
        outcome["load"] = trace(exc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return outcome

out, sys.stdout = sys.stdout, sys.stderr
outcomes = [run(i, src, tests) for i, (src, tests) in enumerate(CANDIDATES, 1)]
out.flush()
out.write(MARK + json.dumps(outcomes) + "\\n")
"""


def candidates_program(
    name: str, candidates: list[tuple[str, str]], examples: list[Example], per_candidate_s: float
) -> str:
    """Runs every candidate ``(source, tests)`` against every example, then its own tests, in
    one sandboxed run: a fresh module each, ``per_candidate_s`` seconds each. Reports one JSON
    list with, per candidate, each example's outcome and what came out."""
    checks = [(e.call, e.expected, e.text) for e in examples]
    return (
        _PRELUDE.format(mark=RESULT_MARK)
        + (
            f"NAME = {name!r}\n"
            f"PER = {per_candidate_s!r}\n"
            f"EXAMPLES = json.loads({json.dumps(checks)!r})\n"
            f"CANDIDATES = json.loads({json.dumps(candidates)!r})\n"
        )
        + _CANDIDATES
    )
