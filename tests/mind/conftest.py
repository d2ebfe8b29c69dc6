"""For the ``slow`` tests that judge what the mind produces with the capable default model
(its fixtures and set-ups are shared by the whole suite, in ``tests/conftest.py``)."""

from __future__ import annotations

import re
from collections import Counter

from tests.forge.conftest import bubblewrap, require, runtimes

__all__ = ["bubblewrap", "degenerate", "require", "runtimes"]


def degenerate(text: str) -> bool:
    """Any 4-word sequence more than 3 times (issue 12's definition of a degenerate loop)."""
    words = re.findall(r"\w+", text.lower())
    grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    return any(n > 3 for n in grams.values())
