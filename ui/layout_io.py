"""Loading, saving and replaying workbench layouts (``shared_api.layout``) from JSON files.

Pure Python (no Kivy): the app turns the operations ``apply_layout`` returns into morphs.
Problems with the file as a whole raise ``LayoutError``; problems with single operations
(unknown ops, personas that no longer exist) only skip those operations, with a warning.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from shared_api.connection import write_private
from shared_api.errors import LayoutError
from shared_api.layout import CreateInspector, CreatePersonaMorph, Layout, Operation, decode_layout

#: The layout the workbench starts with when the user has none.
DEFAULT_LAYOUT = Path(__file__).resolve().parent.parent / "layouts" / "default.json"


def load_layout(path: Path) -> tuple[Layout, list[str]]:
    """Read the layout at ``path``; returns it with warnings for the operations skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayoutError(
            f"There is no layout file at {path}. Save a layout there first, or open "
            f"the default one ({DEFAULT_LAYOUT}).",
            path=str(path),
        ) from None
    except UnicodeDecodeError:
        raise LayoutError(
            f"The layout {path} is not UTF-8 text, so it is not a layout file. "
            "Delete it (the default layout will be used) or choose another file.",
            path=str(path),
        ) from None
    except OSError as exc:
        raise LayoutError(
            f"The layout {path} cannot be read ({exc.strerror or exc.__class__.__name__}). "
            "Check that it is a readable file.",
            path=str(path),
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LayoutError(
            f"The layout {path} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}). Fix it, or delete it to start from the default layout.",
            path=str(path),
            line=exc.lineno,
            column=exc.colno,
        ) from None
    except RecursionError:
        raise LayoutError(
            f"The layout {path} is nested too deeply to be a layout. Delete it to start "
            "from the default layout.",
            path=str(path),
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise LayoutError(
            f"The layout {path} holds a value JSON cannot give us ({exc}). Fix it, or "
            "delete it to start from the default layout.",
            path=str(path),
        ) from None
    return decode_layout(data, source=f"The layout {path}")


def load_startup_layout(path: Path) -> tuple[Layout, list[str]]:
    """The layout to open the workbench with: the user's at ``path``, the default one if
    there is none, and also the default one if it cannot be used. Then the bad file is moved
    aside (``NAME.bad-TIME``), so that saving the layout at exit does not overwrite it, and
    the first warning says what happened."""
    path = Path(path)
    if not path.exists():
        return load_layout(DEFAULT_LAYOUT)
    try:
        return load_layout(path)
    except LayoutError as exc:
        aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(path, aside)
            kept = f"the file was kept as {aside}"
        except OSError as move:
            kept = f"it could not be moved aside ({move.strerror})"
        layout, warnings = load_layout(DEFAULT_LAYOUT)
        return layout, [f"{exc.message} Opened the default layout instead; {kept}.", *warnings]


def save_layout(path: Path, layout: Layout) -> None:
    """Write ``layout`` to ``path`` atomically (temp file, fsync, rename), mode 0600."""
    path = Path(path)
    data = layout.model_dump_json(indent=2).encode() + b"\n"
    try:
        write_private(path, data)
    except OSError as exc:
        raise LayoutError(
            f"Cannot save the layout to {path} ({exc.strerror or exc.__class__.__name__}). "
            "Check that the folder exists and is writable, or save it somewhere else.",
            path=str(path),
        ) from None


def apply_layout(layout: Layout, known_personas: set[str]) -> tuple[list[Operation], list[str]]:
    """The operations to execute, in order, and a warning for each persona that the layout
    names but that no longer exists (its morphs and inspectors are skipped)."""
    operations: list[Operation] = []
    missing: list[str] = []
    for op in layout.operations:
        if isinstance(op, CreatePersonaMorph | CreateInspector) and (
            op.persona not in known_personas
        ):
            if op.persona not in missing:
                missing.append(op.persona)
            continue
        operations.append(op)
    return operations, [f"skipped: persona {name!r} no longer exists" for name in missing]
