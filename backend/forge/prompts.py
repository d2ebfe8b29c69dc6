"""What the forge tells the author (BRICK): the task, the rules, and what went wrong."""

from __future__ import annotations

FEEDBACK_LIMIT = 3000

RULES = """\
Rules:
- Use only the Python standard library. No network, no input(), no files.
- `{name}` takes plain Python values (str, int, float, bool, list, dict or None) as
  arguments and returns one such value itself (never a JSON string of it). It must satisfy
  every example exactly.
- Handle every case the description states.
- Import modules, not names from them (`import datetime`, then `datetime.date(...)`), so that
  no parameter hides an import.
Reply with one ```python code block holding only the function (with any imports or helpers
it needs) and nothing else: no tests, no prints, no explanations."""

EXAMPLES_PROMPT = """\
A Python function `{name}` is to be written. What it must do: {description}

Give {count} examples of calls to it with their exact results, each as one Python expression
of the form `{name}(arg=value, ...) == result`, using keyword arguments and JSON values
(str, int, float, bool, list, dict, None). Cover an ordinary case and an edge case."""


def task_prompt(name: str, description: str, examples: list[str], signature: str = "") -> str:
    lines = [f"Write a Python function named `{name}`.", f"What it must do: {description}"]
    if signature:
        lines.append(f"Its signature, exactly (the examples call it so): `{signature}`")
    if examples:
        lines.append("Examples (each must hold):")
        lines += [f"- {example}" for example in examples]
    lines.append(RULES.format(name=name))
    return "\n".join(lines)


PROBES_PROMPT = """\
A Python function `{name}` is to be written. What it must do: {description}
{signature}Given examples:
{given}

Give {count} more examples with their exact results, each as one Python expression of the form
`{name}(arg=value, ...) == result`, with the same keyword arguments as the given examples and
JSON values. Each must test something different: one for every special case or rule the
description states (read it phrase by phrase), one for an empty input, one ordinary case.
Work each result out exactly from the description."""


def examples_prompt(name: str, description: str, count: int = 3) -> str:
    return EXAMPLES_PROMPT.format(name=name, description=description, count=count)


def probes_prompt(
    name: str, description: str, examples: list[str], signature: str = "", count: int = 4
) -> str:
    shape = f"Its signature: `{signature}`\n" if signature else ""
    given = "\n".join(f"- {example}" for example in examples)
    return PROBES_PROMPT.format(
        name=name, description=description, signature=shape, given=given, count=count
    )


def retry_prompt(
    name: str, description: str, examples: list[str], code: str, problem: str, signature: str = ""
) -> str:
    return (
        f"{task_prompt(name, description, examples, signature)}\n\n"
        f"Your previous attempt was:\n```python\n{code.strip()}\n```\n"
        f"It failed:\n{clip(problem)}\n"
        "Fix the function and reply with the whole corrected code block."
    )


def anew_prompt(
    name: str, description: str, examples: list[str], signature: str, failure: str
) -> str:
    """For the sampled candidates: the task without the previous code. Shown its own code, a
    small model copies it: all candidates of a retry came out the same (measured), so they
    write from the description, told only what went wrong before."""
    prompt = task_prompt(name, description, examples, signature)
    if failure:
        prompt += (
            f"\n\nAn earlier version failed:\n{clip(failure, 600)}\n"
            "Write the function anew from the description; do not repeat that mistake."
        )
    return prompt


def probe_retry_prompt(
    name: str,
    description: str,
    examples: list[str],
    code: str,
    missed: tuple[str, str],
    signature: str = "",
) -> str:
    """After a candidate passed the examples but missed a proposed check: the check may be
    wrong, so the author is asked to follow the description, not the check blindly."""
    check, got = missed
    return (
        f"{task_prompt(name, description, examples, signature)}\n\n"
        f"Your previous attempt was:\n```python\n{code.strip()}\n```\n"
        f"It passes the examples, but for the check `{check}` it gave: {clip(got, 600)}\n"
        "Read the description again. If the description says what that check expects, fix "
        "the function (keep the examples passing); otherwise keep it as it is. Reply with the "
        "whole code block."
    )


def clip(text: str, limit: int = FEEDBACK_LIMIT) -> str:
    """The end of a long error text, where the exception is."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
