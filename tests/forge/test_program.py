"""Reading a candidate out of a model's reply, refusing empty tests, and the two programs that
run in a real sandbox (bubblewrap): the tests, and one tool call."""

from __future__ import annotations

import json

import pytest

from backend.forge.forge import judge
from backend.forge.program import (
    CandidateRejected,
    call_program,
    extract_code,
    parse_candidate,
    report,
    suite_program,
)
from backend.sandbox import SecureCodeExecutor
from tests.forge.scripts import NO_ASSERT, RIGHT, WRONG


def test_candidate_is_split_into_tool_and_tests() -> None:
    c = parse_candidate("add_numbers", RIGHT)
    assert c.test_names == ["test_adds", "test_adds_negatives"]
    assert c.params == ["a", "b"]
    assert "def add_numbers(a, b):" in c.source and "test_" not in c.source
    assert "def add_numbers" not in c.tests and "assert add_numbers(2, 3) == 5" in c.tests


def test_helpers_imports_and_decorators_stay_with_the_tool() -> None:
    reply = """```python
import functools
from math import sqrt

def _square(x):
    return x * x

@functools.lru_cache(None)
def hyp(a, b):
    return sqrt(_square(a) + _square(b))

def test_345():
    assert hyp(3, 4) == 5.0

if __name__ == "__main__":
    test_345()
```"""
    c = parse_candidate("hyp", reply)
    assert c.source.startswith("import functools\nfrom math import sqrt\n")
    assert "@functools.lru_cache(None)\ndef hyp(a, b):" in c.source
    assert "_square" in c.source and "__main__" not in c.source + c.tests
    assert c.test_names == ["test_345"]


@pytest.mark.parametrize(
    ("reply", "stage", "words"),
    [
        ("I cannot help with that.", "write", "SyntaxError"),
        ("```python\ndef add_numbers(a, b:\n```", "write", "SyntaxError"),
        ("```python\ndef plus(a, b):\n    return a + b\n```", "check", "def add_numbers"),
        ("```python\ndef add_numbers(a, b):\n    return a + b\n```", "check", "no tests"),
        (NO_ASSERT, "check", "test_exists` does not assert"),
        (
            "```python\ndef add_numbers(a, b):\n    return a+b\ndef test_t():\n    assert True\n```",
            "check",
            "does not assert",
        ),
        ("", "write", "no Python code"),
    ],
)
def test_unusable_replies_are_refused_with_a_reason(reply: str, stage: str, words: str) -> None:
    with pytest.raises(CandidateRejected) as info:
        parse_candidate("add_numbers", reply)
    assert info.value.stage == stage
    assert words in str(info.value)


def test_assert_through_a_variable_counts() -> None:
    reply = "def f(x):\n    return x\n\ndef test_f():\n    y: int = f(2)\n    assert y == 2\n"
    assert parse_candidate("f", reply).test_names == ["test_f"]


def test_unterminated_fence_is_read_to_the_end() -> None:
    assert extract_code("Sure:\n```python\ndef f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("```py\na = 1\n```\ntext\n```python\nb = 2\n```") == "a = 1\n\nb = 2"


def test_passing_tests_pass_in_the_sandbox(bubblewrap: SecureCodeExecutor) -> None:
    c = parse_candidate("add_numbers", RIGHT)
    result = bubblewrap.run_python(suite_program("add_numbers", c.source, c.tests))
    assert judge(result) == (True, "")
    found, outcomes = report(result)
    assert found and [o["test"] for o in outcomes] == ["test_adds", "test_adds_negatives"]


def test_failing_test_is_reported_with_its_assertion(bubblewrap: SecureCodeExecutor) -> None:
    c = parse_candidate("add_numbers", WRONG)
    result = bubblewrap.run_python(suite_program("add_numbers", c.source, c.tests))
    passed, feedback = judge(result)
    assert not passed and result.exit_code == 1
    assert "test_adds failed" in feedback and "AssertionError" in feedback
    assert 'test_tool.py", line 2' in feedback  # the test's own line, not the wrapper's
    assert "assert add_numbers(2, 3) == 5" in feedback and "main.py" not in feedback


def test_script_calls_at_the_top_are_dropped(bubblewrap: SecureCodeExecutor) -> None:
    reply = RIGHT.replace("```python\n", "```python\nprint('loading')\n") + "\n"
    reply = reply.rstrip("`\n") + "\n\ntest_adds()\nprint('All passed')\n```"
    c = parse_candidate("add_numbers", reply)
    assert "print" not in c.source and "test_adds()" not in c.source + c.tests.replace(
        "def test_adds()", ""
    )
    result = bubblewrap.run_python(suite_program("add_numbers", c.source, c.tests))
    assert judge(result) == (True, "")


def test_tool_that_breaks_on_import_is_reported(bubblewrap: SecureCodeExecutor) -> None:
    source = "import numpy_that_does_not_exist\ndef f(x):\n    return x\n"
    result = bubblewrap.run_python(
        suite_program("f", source, "def test_f():\n    assert f(1) == 1\n")
    )
    passed, feedback = judge(result)
    assert not passed and "<load> failed" in feedback and "ModuleNotFoundError" in feedback


def test_tests_may_import_the_tool_as_a_module(bubblewrap: SecureCodeExecutor) -> None:
    tests = "from tool import f\nimport f as again\n\ndef test_f():\n    assert f(2) == again.f(2) == 4\n"
    result = bubblewrap.run_python(suite_program("f", "def f(x):\n    return 2 * x\n", tests))
    assert judge(result) == (True, "")


def test_a_test_that_hangs_is_stopped_by_the_wall_limit(bubblewrap: SecureCodeExecutor) -> None:
    from shared_api.sandbox import Limits

    c = parse_candidate(
        "f", "def f():\n    while True: pass\n\ndef test_f():\n    assert f() == 1\n"
    )
    result = bubblewrap.run_python(
        suite_program("f", c.source, c.tests), Limits(wall_s=1.5, cpu_s=1.0)
    )
    passed, feedback = judge(result)
    assert not passed and result.killed_reason in ("cpu_time", "wall_time")
    assert "limit" in feedback


def test_a_call_returns_json_and_prints_go_to_stderr(bubblewrap: SecureCodeExecutor) -> None:
    source = "def f(items, scale=1):\n    print('working')\n    return {'n': len(items) * scale}\n"
    result = bubblewrap.run_python(call_program("f", source, {"items": [1, "x", None], "scale": 2}))
    assert result.exit_code == 0
    assert report(result) == (True, {"n": 6})
    assert "working" in result.stderr and "working" not in result.stdout


def test_a_call_returning_null_is_a_result(bubblewrap: SecureCodeExecutor) -> None:
    result = bubblewrap.run_python(call_program("f", "def f():\n    return None\n", {}))
    assert report(result) == (True, None)


def test_a_failing_call_shows_only_the_tools_lines(bubblewrap: SecureCodeExecutor) -> None:
    result = bubblewrap.run_python(call_program("f", "def f(x):\n    return 1 / x\n", {"x": 0}))
    assert result.exit_code == 1 and report(result) == (False, None)
    assert 'tool.py", line 2' in result.stderr and "return 1 / x" in result.stderr
    assert "ZeroDivisionError" in result.stderr and "main.py" not in result.stderr


def test_a_call_with_a_non_json_result_exits_3(bubblewrap: SecureCodeExecutor) -> None:
    result = bubblewrap.run_python(call_program("f", "def f():\n    return {1, 2}\n", {}))
    assert result.exit_code == 3 and "not JSON" in result.stderr
    assert report(result) == (False, None)


def test_arguments_cannot_inject_code(bubblewrap: SecureCodeExecutor) -> None:
    nasty = {"s": "'''); import os; os._exit(7) #\"\"\"", "n": [json.dumps({"a": "\n"})]}
    result = bubblewrap.run_python(call_program("f", "def f(s, n):\n    return [s, n]\n", nasty))
    assert report(result) == (True, [nasty["s"], nasty["n"]])
