"""Structure-aware chunking: boundaries follow each format's structure, offsets point at the
text, no chunk is longer than asked."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from backend.memory.chunking import chunk_text, format_of
from tests.memory.conftest import CODE_PY, FALCON_MD

MD = (
    """# Guide

Intro. It has two sentences.

## Install

"""
    + "Install things carefully. " * 60
    + """

```sh
# not a heading: inside a fence
make run
```

## Usage

Use it well.
"""
)


def test_markdown_splits_at_headings_and_keeps_fences_whole() -> None:
    chunks = chunk_text(MD, "markdown", 300)
    assert chunks[0].heading == "Guide"
    assert chunks[-1].heading == "Guide > Usage" and chunks[-1].text == "Use it well."
    fence = next(c for c in chunks if "make run" in c.text)
    assert "```sh" in fence.text and fence.text.rstrip().endswith("```")
    assert fence.heading == "Guide > Install"  # the fenced comment is no heading
    assert all(len(c.text) <= 300 for c in chunks)
    for c in chunks:
        assert MD[c.start : c.end].strip() == c.text
    # long sections split between sentences, never inside one
    assert all(c.text.endswith((".", "```", "Use it well.")) for c in chunks)


def test_python_splits_at_definitions_in_file_order() -> None:
    chunks = chunk_text(CODE_PY, "python", 200)
    headings = [c.heading for c in chunks]
    assert headings.index("def vat") < headings.index("class Ledger")
    vat = next(c for c in chunks if c.heading == "def vat")
    assert vat.text.startswith("def vat(") and "return round" in vat.text
    assert "module" in headings and chunks[0].text.startswith('"""Helpers')


def test_a_long_class_splits_at_its_methods() -> None:
    body = "".join(f"    def m{i}(self):\n        return {i}\n\n" for i in range(30))
    chunks = chunk_text(f"class Big:\n    x = 1\n\n{body}", "python", 200)
    assert {"class Big", "class Big > def m0", "class Big > def m29"} <= {c.heading for c in chunks}


def test_json_chunks_name_their_path() -> None:
    data = {"name": "shop", "items": [{"id": i, "title": f"Item {i}"} for i in range(30)]}
    chunks = chunk_text(json.dumps(data), "json", 200)
    items = [c for c in chunks if c.heading == "$.items"]
    assert items and all(c.text.startswith("$.items[") for c in items)
    assert any('"title": "Item 29"' in c.text for c in items)
    assert all(len(c.text) <= 200 for c in chunks)


def test_csv_chunks_repeat_the_header_and_keep_quoted_newlines() -> None:
    text = "id,note\n" + "".join(f'{i},"line one\nline two {i}"\n' for i in range(20))
    chunks = chunk_text(text, "csv", 150)
    assert len(chunks) > 1 and all(c.text.startswith("id,note\n") for c in chunks)
    assert chunks[0].heading.startswith("rows 2-")
    assert sum(c.text.count("line two") for c in chunks) == 20  # no row split or lost


def test_broken_json_and_python_fall_back_to_paragraphs() -> None:
    assert chunk_text("{not json\n\nsecond paragraph", "json")[0].text.startswith("{not json")
    assert chunk_text("def broken(:\n    pass", "python")[0].text.startswith("def broken")


def test_formats_by_suffix() -> None:
    assert [format_of(s) for s in (".md", ".PY", ".json", ".csv", ".txt", ".pdf")] == [
        "markdown", "python", "json", "csv", "text", "text",
    ]  # fmt: skip


def test_the_falcon_document_becomes_three_sections() -> None:
    chunks = chunk_text(FALCON_MD, "markdown", 600)
    assert [c.heading for c in chunks] == [
        "Project Falcon", "Project Falcon > Deadlines", "Project Falcon > Team",
    ]  # fmt: skip


@settings(max_examples=60, deadline=None, database=None)
@given(
    st.text(alphabet=st.sampled_from("ab .\n#`-,"), max_size=3000),
    st.sampled_from(["markdown", "text", "python", "csv", "json"]),
    st.integers(min_value=200, max_value=800),
)
def test_chunks_are_bounded_nonempty_and_located(text: str, fmt: str, size: int) -> None:
    chunks = chunk_text(text, fmt, size)  # type: ignore[arg-type]
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text.strip() and len(c.text) <= size + 200  # csv repeats its header
        if c.start >= 0:  # (a csv chunk is its header, then the rows its offsets locate)
            located = text[c.start : c.end].strip()
            assert located and (located == c.text or (fmt == "csv" and c.text.endswith(located)))
