"""What the forge tells the author (BRICK): the task, the rules, and what went wrong."""

from __future__ import annotations

FEEDBACK_LIMIT = 3000

RULES = """\
Rules:
- Use only the Python standard library. No network, no input(), no files outside the current
  directory.
- `{name}` takes JSON values (str, int, float, bool, list, dict or None) as arguments and
  returns a JSON value.
- Below the function, write at least two test functions named test_..., each calling `{name}`
  and asserting on what it returns, for example: assert {name}(...) == ...
Reply with one ```python code block holding the function and its tests, and nothing else."""


def task_prompt(name: str, description: str, examples: list[str]) -> str:
    lines = [f"Write a Python function named `{name}`.", f"What it must do: {description}"]
    if examples:
        lines.append("Examples:")
        lines += [f"- {example}" for example in examples]
    lines.append(RULES.format(name=name))
    return "\n".join(lines)


def retry_prompt(name: str, description: str, examples: list[str], code: str, problem: str) -> str:
    return (
        f"{task_prompt(name, description, examples)}\n\n"
        f"Your previous attempt was:\n```python\n{code.strip()}\n```\n"
        f"It failed:\n{clip(problem)}\n"
        "Fix the function (or a wrong test) and reply with the whole corrected code block."
    )


def clip(text: str, limit: int = FEEDBACK_LIMIT) -> str:
    """The end of a long error text, where the exception is."""
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
