"""Fixtures for the memory tests: a real MemoryService (LanceDB, MiniLM) on a temp folder,
and a few small documents with known facts in them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from backend.bus import EventBus
from backend.memory.config import MemoryConfig
from backend.memory.service import MemoryService
from shared_api.events import Event

FALCON_MD = """# Project Falcon

Project Falcon is the codename for the new billing engine. It replaces the legacy invoicing
system that has run since 2009.

## Deadlines

The Falcon launch date is the 14th of March. The migration of old invoices must finish two
weeks earlier, on the 28th of February.

## Team

Margaret Okafor leads Falcon. The database work is done by Tomasz Wren, and the reports by
Ines Barros.
"""

GARDEN_TXT = """Tomatoes need six to eight hours of direct sunlight every day.

Water the roots deeply twice a week rather than a little every day; shallow watering makes
shallow roots.

Basil grows well next to tomatoes and keeps some pests away.
"""

CODE_PY = '''"""Helpers for invoices."""

import math


def vat(amount: float, rate: float = 0.2) -> float:
    """The value added tax on an amount."""
    return round(amount * rate, 2)


class Ledger:
    """Keeps a running balance."""

    def __init__(self) -> None:
        self.balance = 0.0

    def post(self, amount: float) -> None:
        self.balance += amount
'''


@dataclass
class Opened:
    service: MemoryService
    events: list[Event] = field(default_factory=list)

    def progress(self, op: str) -> list[Any]:
        return [e for e in self.events if e.kind == "progress" and e.op == op]  # type: ignore[union-attr]


OpenMemory = Callable[..., Opened]


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


@pytest.fixture
def open_memory(tmp_path: Path) -> Iterator[OpenMemory]:
    """``open_memory(root=None, runtime=None, **config)``: a started, ready service."""
    opened: list[MemoryService] = []

    def make(root: Path | None = None, runtime: Any = None, **config: Any) -> Opened:
        bus = EventBus()
        result = Opened(MemoryService(root or tmp_path / "memory", MemoryConfig(**config), bus,
                                      runtime=runtime))  # fmt: skip
        bus.subscribe(lambda event, _parent: result.events.append(event))
        result.service.start()
        opened.append(result.service)
        assert result.service.wait_ready(90), result.service.error
        return result

    yield make
    for service in opened:
        service.close()


@pytest.fixture
def docs(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "docs"
    folder.mkdir()
    files = {"falcon.md": FALCON_MD, "garden.txt": GARDEN_TXT, "invoices.py": CODE_PY}
    out = {}
    for name, text in files.items():
        (folder / name).write_text(text)
        out[name] = folder / name
    return out
