"""Mending a small model's import slips (``backend.forge.repair``): read with ``ast``, never
run; each mended source is then really run here to show the slip is gone."""

from __future__ import annotations

from typing import Any

from backend.forge.repair import repair


def run(source: str, name: str, **args: Any) -> Any:
    space: dict[str, Any] = {}
    exec(compile(source, "tool.py", "exec"), space)  # trusted: the test's own literal source
    return space[name](**args)


def test_a_class_imported_for_its_module_is_mended() -> None:
    """`from datetime import datetime` then `datetime.timedelta`: what Qwen2.5-Coder-1.5B
    wrote for add_days in all nine candidates of a benchmark forge."""
    source = (
        "from datetime import datetime\n\n"
        "def add_days(date: str, n: int):\n"
        "    d = datetime.strptime(date, '%Y-%m-%d')\n"
        "    return (d + datetime.timedelta(days=n)).strftime('%Y-%m-%d')\n"
    )
    mended = repair(source)
    assert mended.notes == ["datetime.timedelta -> timedelta (from datetime)"]
    assert run(mended.source, "add_days", date="2024-02-28", n=2) == "2024-03-01"


def test_unimported_standard_names_are_imported() -> None:
    source = (
        "def f(text):\n"
        "    words = re.findall(r'\\w+', text.lower())\n"
        "    return dict(Counter(words)), math.floor(2.5)\n"
    )
    mended = repair(source)
    assert sorted(mended.notes) == [
        "Counter was not imported: from collections import Counter",
        "math was not imported: import math",
        "re was not imported: import re",
    ]
    assert run(mended.source, "f", text="A a b") == ({"a": 2, "b": 1}, 2)


def test_a_module_used_as_its_class_is_mended() -> None:
    source = "import datetime\ndef year(s):\n    return datetime.strptime(s, '%Y-%m-%d').year\n"
    mended = repair(source)
    assert mended.notes == ["datetime.strptime -> datetime.datetime.strptime"]
    assert run(mended.source, "year", s="2024-05-06") == 2024


def test_future_imports_stay_first_and_sound_code_is_untouched() -> None:
    mended = repair("from __future__ import annotations\ndef f(x):\n    return math.sqrt(x)\n")
    assert mended.source.startswith("from __future__ import annotations\nimport math\n")
    assert run(mended.source, "f", x=9) == 3
    sound = "import re\n\ndef f(date, n):\n    items = [n]\n    return re.escape(date), items\n"
    assert repair(sound).source == sound and repair(sound).notes == []
    assert repair("def broken(:\n").source == "def broken(:\n"  # unparsable: left alone
    # a name that is a parameter, a local or a builtin is never "imported"
    local = "def f(date, Counter):\n    total = sum([1])\n    return date, Counter, total\n"
    assert repair(local).notes == []
