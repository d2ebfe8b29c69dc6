"""Reading a candidate out of a model's reply and the requester's examples as checks, and the
programs that run in a real sandbox (bubblewrap): all candidates against the examples in one
run, and one tool call."""

from __future__ import annotations

import json

import pytest

from backend.forge.program import (
    CandidateRejected,
    Example,
    ExampleRejected,
    call_program,
    extract_code,
    parse_candidate,
    parse_example,
    report,
)
from backend.forge.trial import Trial, trial_candidates
from backend.sandbox import SecureCodeExecutor
from shared_api.sandbox import Limits
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


ADD = [parse_example("add_numbers", "add_numbers(a=1, b=2) == 3")]


def trial(sandbox: SecureCodeExecutor, name: str, replies: list[str], examples: list[Example],
          limits: Limits | None = None) -> Trial:  # fmt: skip
    parsed = [(i, parse_candidate(name, r, require_tests=False)) for i, r in enumerate(replies, 1)]
    return trial_candidates(sandbox, limits or Limits(), "bubblewrap", name, parsed, examples)


def test_examples_are_read_as_checks() -> None:
    e = parse_example("wc", "wc(text='a b') == 2")
    assert (e.call, e.expected) == ("wc(text='a b')", "2")
    assert parse_example("wc", "2 == wc(text='a b')").call == "wc(text='a b')"
    assert parse_example("ok", "assert ok(x=1) is True").expected is None
    for bad in ("wc text", "len('ab') == 2", "", "import os"):
        with pytest.raises(ExampleRejected):
            parse_example("wc", bad)


def test_a_right_candidate_passes_and_keeps_its_tests(bubblewrap: SecureCodeExecutor) -> None:
    t = trial(bubblewrap, "add_numbers", [RIGHT], ADD)
    assert t.winner is not None and t.winner[0] == 1 and t.feedback == ""
    assert t.outcomes[0].examples_passed == 1
    assert t.outcomes[0].tests_kept == ["test_adds", "test_adds_negatives"]
    assert t.winner[2].startswith("def test_adds():")


def test_a_failing_example_is_named_with_what_came_out(bubblewrap: SecureCodeExecutor) -> None:
    t = trial(bubblewrap, "add_numbers", [WRONG], ADD)
    assert t.winner is None and t.runtime == "bubblewrap"
    assert t.outcomes[0].failed_example == "add_numbers(a=1, b=2) == 3"
    assert t.outcomes[0].got == "-1" and "it returned -1" in t.feedback
    assert t.outcomes[0].tests_kept == []  # both of its own tests fail too


def test_the_feedback_says_where_the_result_departs_from_the_example(
    bubblewrap: SecureCodeExecutor,
) -> None:
    """A small model reads 'HelloWorld' for 'helloWorld' as right; it is told where."""
    camel = [parse_example("camel", "camel(name='hello_world') == 'helloWorld'")]
    pascal = "def camel(name):\n    return ''.join(w.capitalize() for w in name.split('_'))\n"
    t = trial(bubblewrap, "camel", [pascal], camel)
    assert t.outcomes[0].got == "'HelloWorld'"
    assert t.outcomes[0].differs == "character 0: expected 'h', got 'H'"
    assert "it returned 'HelloWorld' (character 0: expected 'h', got 'H')" in t.feedback
    cases = [
        ("f() == {'x': ['a', 'c'], 'y': ['b']}", "{'y': ['b'], 'x': ['c', 'a']}",
         "at key 'x': expected ['a', 'c'], got ['c', 'a']"),
        ("f() == {'flag': ''}", "{'other': ''}", "keys missing: ['flag']; keys not expected: "
         "['other']"),
        ("f() == ['a', 'b']", "['a']", "expected length 2, got 1"),
        ("f() == ['say \"hi\"', '2']", "['say', '2']", "item 0: expected 'say \"hi\"', got "
         "'say'"),
        ("f() == '3'", "3", "expected type str, got int"),
        ("f() == 4", "5", ""),  # two numbers: what came out says it all
        ("f() == [1, 2]", "(1, 3)", "item 1: expected 2, got 3"),  # a tuple is a list here
        ("f() == 'a' * 50_000", "'a' * 50_001", "expected length 50000, got 50001"),
        ("f() == 'a' * 50_000 + 'b'", "'a' * 50_001", ""),  # looked at: the first 10,000
    ]  # fmt: skip
    for example, returned, differs in cases:
        t = trial(bubblewrap, "f", [f"def f():\n    return {returned}\n"],
                  [parse_example("f", example)])  # fmt: skip
        assert t.winner is None and t.outcomes[0].differs == differs, example


def test_own_tests_that_disagree_with_the_examples_are_dropped(
    bubblewrap: SecureCodeExecutor,
) -> None:
    reply = RIGHT.replace("assert add_numbers(2, 3) == 5", "assert add_numbers(2, 3) == 6")
    t = trial(bubblewrap, "add_numbers", [reply], ADD)
    assert t.winner is not None and t.outcomes[0].tests_kept == ["test_adds_negatives"]
    assert "== 6" not in t.winner[2] and "test_adds_negatives" in t.winner[2]


def test_first_passing_candidate_wins_in_one_run(bubblewrap: SecureCodeExecutor) -> None:
    t = trial(bubblewrap, "add_numbers", [WRONG, NO_ASSERT, RIGHT], ADD)
    assert t.winner is not None and t.winner[0] == 2  # NO_ASSERT's function is right
    assert [o.passed for o in t.outcomes] == [False, True, True]
    assert t.outcomes[1].tests_kept == []  # its test asserted nothing: dropped when parsed


def test_script_calls_at_the_top_are_dropped(bubblewrap: SecureCodeExecutor) -> None:
    reply = RIGHT.replace("```python\n", "```python\nprint('loading')\n") + "\n"
    reply = reply.rstrip("`\n") + "\n\ntest_adds()\nprint('All passed')\n```"
    c = parse_candidate("add_numbers", reply)
    assert "print" not in c.source and "test_adds()" not in c.source + c.tests.replace(
        "def test_adds()", ""
    )
    assert trial(bubblewrap, "add_numbers", [reply], ADD).winner is not None


def test_tool_that_breaks_on_import_is_reported(bubblewrap: SecureCodeExecutor) -> None:
    reply = "import numpy_that_does_not_exist\ndef f(x):\n    return x\n"
    t = trial(bubblewrap, "f", [reply], [parse_example("f", "f(x=1) == 1")])
    assert t.winner is None and t.outcomes[0].failed_example == "(load)"
    assert "ModuleNotFoundError" in t.feedback


def test_an_exception_is_shown_with_the_tools_own_line(bubblewrap: SecureCodeExecutor) -> None:
    t = trial(
        bubblewrap, "f", ["def f(x):\n    return 1 / x\n"], [parse_example("f", "f(x=0) == 0")]
    )
    assert t.outcomes[0].got.startswith("raised") and "ZeroDivisionError" in t.feedback
    assert 'tool.py", line 2' in t.feedback and "main.py" not in t.feedback


def test_tests_may_import_the_tool_as_a_module(bubblewrap: SecureCodeExecutor) -> None:
    reply = (
        "def f(x):\n    return 2 * x\n\nfrom tool import f as same\n\n"
        "def test_f():\n    import f as again\n    assert f(2) == again.f(2) == same(2) == 4\n"
    )
    t = trial(bubblewrap, "f", [reply], [parse_example("f", "f(x=1) == 2")])
    assert t.winner is not None and t.outcomes[0].tests_kept == ["test_f"]


def test_values_compare_as_json_would(bubblewrap: SecureCodeExecutor) -> None:
    examples = [
        parse_example("f", "f() == (0.1 + 0.2, [1, 2])"),  # float tolerance, tuple == list
        parse_example("g", "g() == 1"),
    ]
    t = trial(bubblewrap, "f", ["def f():\n    return [0.3, (1, 2)]\n"], examples[:1])
    assert t.winner is not None
    t = trial(bubblewrap, "g", ["def g():\n    return True\n"], examples[1:])
    assert t.winner is None and t.outcomes[0].got == "True"  # True is not 1


def test_a_hanging_candidate_loses_its_turn_not_the_run(bubblewrap: SecureCodeExecutor) -> None:
    hang = "def add_numbers(a, b):\n    while True:\n        pass\n"
    limits = Limits(wall_s=1.5, cpu_s=1.5)
    t = trial(bubblewrap, "add_numbers", [hang, RIGHT], ADD, limits)
    assert t.winner is not None and t.winner[0] == 2
    assert "longer than 1.5 s" in t.outcomes[0].got


def test_an_example_cannot_break_out_of_the_program(bubblewrap: SecureCodeExecutor) -> None:
    nasty = parse_example("f", 'f(s=\'"""); import os; os._exit(7) #\') == 1')
    t = trial(bubblewrap, "f", ["def f(s):\n    return len(s)\n"], [nasty])
    assert t.winner is None and t.outcomes[0].got == str(len('"""); import os; os._exit(7) #'))


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
