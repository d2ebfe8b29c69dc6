"""Structure-aware chunking: a document's text -> chunks that end where its structure does.

Markdown splits at headings (each chunk knows its heading path) and never inside a fenced
code block; Python at top-level definitions (a long class at its methods); JSON at keys and
items (each chunk names its JSON path); CSV at rows, every chunk repeating the header; plain
text and PDF at paragraphs. A unit longer than a chunk is split at sentences, then lines,
then words. Chunks stay under ``max_chars`` (all-MiniLM-L6-v2 reads ~256 word pieces, about
1,000 characters of English; smaller chunks retrieve more precisely).
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Format = Literal["markdown", "python", "json", "csv", "text"]

FORMATS: dict[str, Format] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".py": "python",
    ".json": "json",
    ".csv": "csv",
}
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")
_BLANK = re.compile(r"\n\s*\n")
_NEWLINE = re.compile(r"\n+")
_SPACE = re.compile(r"\s+")
#: Where a unit longer than a chunk is split, first choice first.
_PROSE = (_SENTENCE, _NEWLINE, _SPACE)
_CODE = (_BLANK, _NEWLINE, _SPACE)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Chunk:
    """A piece of a document. ``start``/``end`` are character offsets into its text (-1 when
    the chunk is a re-serialised fragment, as for JSON); ``heading`` is its structural place:
    a heading path, ``class A > def f``, ``$.items[3]``, ``rows 2-40``."""

    position: int
    text: str
    heading: str
    start: int
    end: int


@dataclass(frozen=True)
class _Unit:
    text: str
    start: int
    end: int
    heading: str


def format_of(suffix: str) -> Format:
    return FORMATS.get(suffix.lower(), "text")


def chunk_text(text: str, fmt: Format, max_chars: int = 600) -> list[Chunk]:
    """Chunk ``text`` of format ``fmt``; never returns an empty chunk."""
    splitters = {
        "markdown": _markdown_units,
        "python": _python_units,
        "json": _json_units,
        "csv": _csv_units,
        "text": _text_units,
    }
    try:
        units = list(splitters[fmt](text, max_chars))
    except (SyntaxError, ValueError, csv.Error, RecursionError):
        units = list(_text_units(text, max_chars))  # not what its name says: plain text
    chunks: list[Chunk] = []
    splits = _PROSE if fmt in ("markdown", "text") else _CODE
    for unit in _pack(units, text, max_chars, splits):
        if unit.text.strip():
            chunks.append(Chunk(len(chunks), unit.text.strip(), unit.heading, unit.start, unit.end))
    return chunks


# -- packing and splitting ------------------------------------------------------------------
def _pack(
    units: Iterable[_Unit], text: str, max_chars: int, splits: tuple[re.Pattern[str], ...]
) -> Iterator[_Unit]:
    """Join neighbouring units of one heading while they fit; split units that do not.
    Joined units that came from one stretch of ``text`` keep its exact characters."""
    pending: _Unit | None = None
    for unit in units:
        for piece in _split(unit, max_chars, splits):
            if pending is None:
                pending = piece
            elif (
                pending.heading == piece.heading
                and len(pending.text) + 2 + len(piece.text) <= max_chars
            ):
                joined = pending.start >= 0 and piece.start >= pending.end
                if joined and piece.end - pending.start <= max_chars:
                    body = text[pending.start : piece.end]
                    pending = _Unit(body, pending.start, piece.end, piece.heading)
                elif not joined:
                    body = pending.text + "\n" + piece.text
                    pending = _Unit(body, -1, -1, piece.heading)
                else:
                    yield pending
                    pending = piece
            else:
                yield pending
                pending = piece
    if pending is not None:
        yield pending


def _split(unit: _Unit, max_chars: int, splits: tuple[re.Pattern[str], ...]) -> Iterator[_Unit]:
    if len(unit.text) <= max_chars:
        yield unit
        return
    for pattern in splits:
        pieces = _pieces(unit.text, pattern)
        if len(pieces) > 1:
            break
    else:
        pieces = [(i, unit.text[i : i + max_chars]) for i in range(0, len(unit.text), max_chars)]
    current, current_at = "", 0
    for at, piece in pieces:
        if current and len(current) + len(piece) > max_chars:
            yield from _sub(unit, current, current_at, max_chars, splits)
            current, current_at = "", at
        if not current:
            current_at = at
        current = unit.text[current_at : at + len(piece)]
    if current:
        yield from _sub(unit, current, current_at, max_chars, splits)


def _sub(
    unit: _Unit, text: str, offset: int, max_chars: int, splits: tuple[re.Pattern[str], ...]
) -> Iterator[_Unit]:
    start = unit.start + offset if unit.start >= 0 else -1
    end = start + len(text) if start >= 0 else -1
    piece = _Unit(text, start, end, unit.heading)
    if len(text) > max_chars:  # one sentence longer than a chunk: split it finer
        yield from _split(piece, max_chars, splits[1:] or splits)
    else:
        yield piece


def _pieces(text: str, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    """``text`` split after each match of ``pattern``, as (offset, piece) with separators kept."""
    out, at = [], 0
    for match in pattern.finditer(text):
        if match.end() > at:
            out.append((at, text[at : match.end()]))
            at = match.end()
    if at < len(text):
        out.append((at, text[at:]))
    return out


def _lines(text: str) -> list[tuple[int, str]]:
    out, at = [], 0
    for line in text.splitlines(keepends=True):
        out.append((at, line))
        at += len(line)
    return out


def _blocks(lines: list[tuple[int, str]], heading: str) -> Iterator[_Unit]:
    """Blank-line separated blocks of ``lines``."""
    block: list[tuple[int, str]] = []
    for at, line in [*lines, (-1, "")]:
        if line.strip():
            block.append((at, line))
        elif block:
            start = block[0][0]
            end = block[-1][0] + len(block[-1][1])
            yield _Unit("".join(line for _, line in block), start, end, heading)
            block = []


# -- formats --------------------------------------------------------------------------------
def _text_units(text: str, max_chars: int) -> Iterator[_Unit]:
    return _blocks(_lines(text), "")


def _markdown_units(text: str, max_chars: int) -> Iterator[_Unit]:
    path: list[tuple[int, str]] = []  # (level, title)
    section: list[tuple[int, str]] = []
    in_fence = False
    fence: list[tuple[int, str]] = []
    for at, line in _lines(text):
        if _FENCE.match(line):
            if not in_fence:
                yield from _blocks(section, _path(path))
                section, fence, in_fence = [], [(at, line)], True
                continue
            fence.append((at, line))
            end = at + len(line)
            yield _Unit("".join(line for _, line in fence), fence[0][0], end, _path(path))
            fence, in_fence = [], False
            continue
        if in_fence:
            fence.append((at, line))
            continue
        heading = _HEADING.match(line)
        if heading:
            yield from _blocks(section, _path(path))
            section = []
            level = len(heading.group(1))
            path = [(lv, title) for lv, title in path if lv < level] + [(level, heading.group(2))]
            continue
        section.append((at, line))
    if fence:  # an unclosed fence runs to the end
        yield _Unit("".join(line for _, line in fence), fence[0][0], len(text), _path(path))
    yield from _blocks(section, _path(path))


def _path(path: list[tuple[int, str]]) -> str:
    return " > ".join(title for _, title in path)


def _python_units(text: str, max_chars: int) -> Iterator[_Unit]:
    tree = ast.parse(text)
    lines = _lines(text)
    units = _python_body(tree.body, lines, 0, len(lines), "", max_chars)
    yield from sorted(units, key=lambda unit: unit.start)  # in the order of the file


def _python_body(
    nodes: list[ast.stmt],
    lines: list[tuple[int, str]],
    first: int,
    last: int,
    prefix: str,
    max_chars: int,
) -> Iterator[_Unit]:
    """Units for statements ``nodes`` spanning lines [first, last): one per definition (with
    the comments and decorators above it), the statements between them grouped."""
    cursor = first
    loose: list[tuple[int, str]] = []
    for node in nodes:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        begin = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        lead = begin
        while lead > cursor and lines[lead - 1][1].lstrip().startswith("#"):
            lead -= 1  # the comment block right above belongs to the definition
        loose += lines[cursor:lead]
        end = node.end_lineno or begin + 1
        kind = "class" if isinstance(node, ast.ClassDef) else "def"
        heading = f"{prefix}{kind} {node.name}"
        span = lines[lead:end]
        body_text = "".join(line for _, line in span)
        if len(body_text) > max_chars and isinstance(node, ast.ClassDef):
            yield from _python_body(node.body, lines, lead, end, heading + " > ", max_chars)
        elif span:
            yield _Unit(body_text, span[0][0], span[-1][0] + len(span[-1][1]), heading)
        cursor = end
    loose += lines[cursor:last]
    yield from _blocks(loose, prefix.removesuffix(" > ") or "module")


def _json_units(text: str, max_chars: int) -> Iterator[_Unit]:
    yield from _json_walk(json.loads(text), "$", max_chars)


def _json_walk(value: Any, path: str, max_chars: int) -> Iterator[_Unit]:
    dumped = json.dumps(value, ensure_ascii=False)
    items: Iterable[tuple[str, Any]]
    if isinstance(value, dict) and value and len(dumped) > max_chars:
        items = ((f"{path}.{key}", item) for key, item in value.items())
    elif isinstance(value, list) and value and len(dumped) > max_chars:
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    else:
        parent = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", path) or "$"
        yield _Unit(f"{path}: {dumped}", -1, -1, parent)
        return
    for child_path, item in items:
        yield from _json_walk(item, child_path, max_chars)


def _csv_units(text: str, max_chars: int) -> Iterator[_Unit]:
    lines = _lines(text)
    reader = csv.reader(io.StringIO(text, newline=""))
    header_row = next(reader, None)
    if header_row is None:
        return
    header_end = reader.line_num
    header = "".join(line for _, line in lines[:header_end]).rstrip("\n")
    budget = max(max_chars - len(header) - 1, max_chars // 2)
    rows: list[tuple[int, int, int]] = []  # (first line index, end line index, row number)
    done = header_end
    for number, _row in enumerate(reader, start=2):
        rows.append((done, reader.line_num, number))
        done = reader.line_num
    group: list[tuple[int, int, int]] = []
    size = 0
    for row in [*rows, None]:
        row_text = "" if row is None else "".join(line for _, line in lines[row[0] : row[1]])
        if group and (row is None or size + len(row_text) > budget):
            first, last = group[0], group[-1]
            body = "".join(line for _, line in lines[first[0] : last[1]])
            start = lines[first[0]][0]
            end = lines[last[1] - 1][0] + len(lines[last[1] - 1][1])
            span = f"rows {first[2]}-{last[2]}" if first is not last else f"row {first[2]}"
            yield _Unit(f"{header}\n{body}", start, end, span)
            group, size = [], 0
        if row is not None:
            group.append(row)
            size += len(row_text)
    if not rows:
        yield _Unit(header, 0, len(header), "header")
