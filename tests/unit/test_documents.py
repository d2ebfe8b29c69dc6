"""Reading documents dropped on a persona: real files, a real hand-made PDF, fuzzed bytes."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pypdf import PdfWriter

from backend.documents import (
    DEFAULT_MAX_BYTES,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    Document,
    prompt_for,
    read_document,
)
from shared_api.errors import DocumentError, EntropicError, ErrorCode

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def minimal_pdf(*pages: str) -> bytes:
    """A valid PDF with one page per text, each drawn in Type1 Helvetica; xref offsets exact."""
    pages = pages or ("Hello PDF",)
    first_page = 4  # 1 catalog, 2 page tree, 3 font, then a page and its content per text
    kids = " ".join(f"{first_page + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids.encode(), len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = b"BT /F1 12 Tf 72 720 Td (%s) Tj ET" % text.encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (first_page + 2 * i + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


HELLO_PDF = minimal_pdf()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def rejected(path: Path, **kwargs: int) -> str:
    with pytest.raises(DocumentError) as info:
        read_document(path, **kwargs)
    assert info.value.code is ErrorCode.DOCUMENT_REJECTED
    return info.value.message


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
def test_text_files_are_read(tmp_path: Path, suffix: str) -> None:
    data = "Grüße, BRICK.\nline two\n".encode()
    path = write(tmp_path, f"notes{suffix}", data)
    doc = read_document(path)
    assert doc == Document(
        path=path,
        name=f"notes{suffix}",
        kind="text",
        text="Grüße, BRICK.\nline two\n",
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_bom_is_dropped_crlf_normalised_and_suffix_case_ignored(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "README.MD", b"\xef\xbb\xbf# Title\r\nbody\r\n"))
    assert doc.text == "# Title\nbody\n"
    assert doc.kind == "text"


def test_hand_made_pdf_text_is_extracted(tmp_path: Path) -> None:
    assert len(HELLO_PDF) < 1024
    doc = read_document(write(tmp_path, "hello.pdf", HELLO_PDF))
    assert doc.kind == "pdf"
    assert doc.text == "Hello PDF"
    assert doc.bytes == len(HELLO_PDF)
    assert doc.sha256 == hashlib.sha256(HELLO_PDF).hexdigest()


def test_pdf_pages_are_joined_with_blank_lines(tmp_path: Path) -> None:
    doc = read_document(write(tmp_path, "three.pdf", minimal_pdf("One", "Two", "Three")))
    assert doc.text == "One\n\nTwo\n\nThree"


# --- refusals: each message says what to do -------------------------------------------------


@pytest.mark.parametrize("name", ["report.docx", "photo.png", "Makefile"])
def test_unsupported_types_list_the_supported_ones(tmp_path: Path, name: str) -> None:
    message = rejected(write(tmp_path, name, b"data"))
    assert name in message and "not supported" in message
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in message


def test_non_utf8_text_names_the_file_and_suggests_converting(tmp_path: Path) -> None:
    message = rejected(write(tmp_path, "latin.txt", "café".encode("latin-1")))
    assert "latin.txt" in message
    assert "not UTF-8" in message and "Convert it to UTF-8" in message
    assert "0xe9" in message


@pytest.mark.parametrize("data", [b"", b"  \n\t\r\n"])
def test_empty_files_are_refused(tmp_path: Path, data: bytes) -> None:
    message = rejected(write(tmp_path, "empty.md", data))
    assert "empty.md is empty" in message


def test_oversized_file_names_size_limit_and_config_key(tmp_path: Path) -> None:
    message = rejected(write(tmp_path, "big.txt", b"x" * 150), max_bytes=100)
    assert "150 bytes" in message and "100 bytes limit" in message
    assert "ui.max_document_mb" in message


def test_default_limit_is_five_megabytes(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:  # sparse: the size check must not read the file
        f.truncate(DEFAULT_MAX_BYTES + 1)
    message = rejected(path)
    assert "5.0 MB limit" in message and "ui.max_document_mb" in message
    read_document(write(tmp_path, "exact.txt", b"y" * DEFAULT_MAX_BYTES))


def test_nul_bytes_mean_binary(tmp_path: Path) -> None:
    message = rejected(write(tmp_path, "utf16.txt", "hi".encode("utf-16")))
    assert "binary data (NUL bytes)" in message and "UTF-8" in message


def test_missing_file(tmp_path: Path) -> None:
    message = rejected(tmp_path / "gone.pdf")
    assert "gone.pdf no longer exists" in message and "drop it again" in message


def test_folder_and_fifo_are_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "folder.txt").mkdir()
    assert "not a regular file" in rejected(tmp_path / "folder.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    assert "not a regular file" in rejected(tmp_path / "pipe.txt")


def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.txt", b"text")
    path.chmod(0)
    if os.geteuid() != 0:
        assert "permission denied" in rejected(path)
        return
    # root reads any file: read it as the unprivileged user nobody, in a forked child
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent == Path(tempfile.gettempdir()):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, try to read, report, exit without cleanup
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                read_document(path)
                message = "read it!"
            except DocumentError as exc:
                message = exc.message
            os.write(w, message.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        reported = pipe.read().decode()
    os.waitpid(pid, 0)
    assert "permission denied" in reported, reported


def test_pdf_without_text_says_so(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buffer = io.BytesIO()
    writer.write(buffer)
    message = rejected(write(tmp_path, "blank.pdf", buffer.getvalue()))
    assert "blank.pdf has no extractable text" in message and "OCR" in message


def test_password_protected_pdf(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.encrypt("secret", algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    assert "password-protected" in rejected(write(tmp_path, "locked.pdf", buffer.getvalue()))


@pytest.mark.parametrize(
    "data",
    [b"not a pdf at all", HELLO_PDF[: len(HELLO_PDF) // 2], b"%PDF-1.4\n%%EOF\n"],
    ids=["no-header", "truncated", "header-only"],
)
def test_broken_pdfs(tmp_path: Path, data: bytes) -> None:
    message = rejected(write(tmp_path, "broken.pdf", data))
    assert "broken.pdf is not a readable PDF" in message and "re-download" in message


def test_document_error_crosses_the_wire_typed(tmp_path: Path) -> None:
    with pytest.raises(EntropicError) as info:
        read_document(tmp_path / "x.exe")
    reply = info.value.to_reply()
    assert reply.code == "document_rejected"
    assert reply.detail["reason"] == "unsupported_type"


# --- fuzz: a bad file never raises anything but DocumentError -------------------------------


def _read_or_reject(path: Path) -> Document | None:
    try:
        doc = read_document(path)
    except DocumentError as exc:
        assert exc.message
        return None
    assert doc.text.strip()
    doc.text.encode("utf-8")  # no lone surrogates: the text must survive the wire
    return doc


@FUZZ
@given(data=st.binary(max_size=512), suffix=st.sampled_from(SUPPORTED_SUFFIXES))
def test_fuzz_random_bytes(tmp_path: Path, data: bytes, suffix: str) -> None:
    _read_or_reject(write(tmp_path, f"fuzz{suffix}", data))


@FUZZ
@given(data=st.binary(max_size=512))
def test_fuzz_pdf_header_then_garbage(tmp_path: Path, data: bytes) -> None:
    _read_or_reject(write(tmp_path, "fuzz.pdf", b"%PDF-1.4\n" + data))


@FUZZ
@given(cut=st.integers(min_value=0, max_value=len(HELLO_PDF)))
@example(cut=len(HELLO_PDF) - 7)
def test_fuzz_truncated_pdf(tmp_path: Path, cut: int) -> None:
    _read_or_reject(write(tmp_path, "cut.pdf", HELLO_PDF[:cut]))


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(HELLO_PDF) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_corrupted_pdf(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    data = bytearray(HELLO_PDF)
    for offset, value in edits:
        data[offset] = value
    _read_or_reject(write(tmp_path, "corrupt.pdf", bytes(data)))


# --- prompt_for -----------------------------------------------------------------------------


def _doc(text: str, name: str = "notes.md") -> Document:
    return Document(Path(name), name, "text", text, len(text.encode()), "0" * 64)


def test_prompt_fits_budget_whole() -> None:
    assert prompt_for(_doc("hello"), 1000) == "Document: notes.md (5 chars)\n\nhello"


def test_prompt_truncates_the_middle_with_a_marker() -> None:
    text = "A" * 500 + "B" * 1000 + "C" * 500
    prompt = prompt_for(_doc(text), 400)
    assert len(prompt) <= 400
    assert prompt.startswith("Document: notes.md (2000 chars)\n\nAAAA")
    assert prompt.endswith("CCCC")
    match = re.search(r"\n\n\[\.\.\. (\d+) characters omitted \.\.\.\]\n\n", prompt)
    assert match is not None
    omitted = int(match[1])
    kept = prompt.count("A") + prompt.count("B") + prompt.count("C")
    assert kept + omitted == 2000


def test_prompt_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        prompt_for(_doc("x"), 0)


@settings(max_examples=200, deadline=None, database=None)
@given(text=st.text(min_size=1, max_size=400), budget=st.integers(min_value=1, max_value=600))
def test_prompt_property(text: str, budget: int) -> None:
    prompt = prompt_for(_doc(text), budget)
    header = f"Document: notes.md ({len(text)} chars)\n\n"
    assert prompt.startswith(header)
    if len(header) + len(text) <= budget:
        assert prompt == header + text
        return
    body = prompt[len(header) :]
    match = re.search(r"\n\n\[\.\.\. (\d+) characters? omitted \.\.\.\]\n\n", body)
    assert match is not None
    head, tail = body[: match.start()], body[match.end() :]
    assert text.startswith(head) and text.endswith(tail)
    assert len(head) + int(match[1]) + len(tail) == len(text)
    if budget >= len(header) + len(match[0]) + len(str(len(text))):
        assert len(prompt) <= budget
