"""Reading a document dropped on a persona: plain text or PDF, checked, hashed, ready to send.

The backend reads a dropped file (``ask_document``) and an ingested one with it, off the UI
thread. Every problem with the file itself is a ``DocumentError`` whose message
says what to do; nothing else escapes for a bad file.
"""

from __future__ import annotations

import hashlib
import io
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shared_api.errors import DocumentError

TEXT_SUFFIXES = (".txt", ".md", ".py", ".json", ".csv")
PDF_SUFFIX = ".pdf"
SUPPORTED_SUFFIXES = (*TEXT_SUFFIXES, PDF_SUFFIX)
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
#: The configuration key that sets the size limit, named in the "too large" message.
MAX_DOCUMENT_KEY = "ui.max_document_mb"
#: The PDF header must start within the first 1024 bytes (PDF 1.7, annex H).
_PDF_HEADER_WINDOW = 1024

DocumentKind = Literal["text", "pdf"]


@dataclass(frozen=True)
class Document:
    """A readable document: its text (line endings normalised to ``\\n``), its size on disk in
    ``bytes`` and the ``sha256`` of those bytes."""

    path: Path
    name: str
    kind: DocumentKind
    text: str
    bytes: int
    sha256: str


def read_document(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """Read ``path`` as a document to hand to a persona.

    Raises ``DocumentError`` for anything wrong with the file: an unsupported type, a missing
    or unreadable file, an empty or oversized one, binary or non-UTF-8 text, a broken PDF or
    one without extractable text.
    """
    path = Path(path)
    kind = _kind_of(path)
    data = _read_bytes(path, max_bytes)
    text = _pdf_text(path, data) if kind == "pdf" else _plain_text(path, data)
    return Document(
        path=path,
        name=path.name,
        kind=kind,
        text=text,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def prompt_for(document: Document, budget_chars: int) -> str:
    """The text to send to a persona: a header naming the document, then its text.

    When the whole would exceed ``budget_chars``, the middle of the text is replaced with an
    ``[... N characters omitted ...]`` marker so that the result fits the budget (beginning
    and end are usually what matter most). A budget too small for even the header and the
    marker gives the header and the marker alone.
    """
    if budget_chars < 1:
        raise ValueError(f"budget_chars must be positive, not {budget_chars}")
    text = document.text
    header = f"Document: {document.name} ({len(text)} chars)\n\n"
    if len(header) + len(text) <= budget_chars:
        return header + text
    # The marker for len(text) omitted characters is at least as long as the real one.
    keep = max(budget_chars - len(header) - len(_omitted(len(text))), 0)
    head = text[: keep - keep // 2]
    tail = text[len(text) - keep // 2 :]
    return header + head + _omitted(len(text) - len(head) - len(tail)) + tail


def _omitted(count: int) -> str:
    noun = "character" if count == 1 else "characters"
    return f"\n\n[... {count} {noun} omitted ...]\n\n"


def _kind_of(path: Path) -> DocumentKind:
    suffix = path.suffix.lower()
    if suffix == PDF_SUFFIX:
        return "pdf"
    if suffix in TEXT_SUFFIXES:
        return "text"
    what = f"'{suffix}' files" if suffix else "files without an extension"
    raise DocumentError(
        f"Cannot read {path.name}: {what} are not supported. "
        f"Drop one of: {', '.join(SUPPORTED_SUFFIXES)} "
        "(text files must be UTF-8; save other formats as PDF or plain text first).",
        path=str(path),
        reason="unsupported_type",
    )


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    name = path.name
    try:
        # stat first: opening a FIFO or a device could block or never end.
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise DocumentError(
                f"{name} is not a regular file (it is a folder, a pipe or a device). "
                "Drop a single document file.",
                path=str(path),
                reason="not_a_file",
            )
        if info.st_size > max_bytes:
            raise _too_large(path, info.st_size, max_bytes)
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise DocumentError(
            f"{name} no longer exists at {path}. It may have been moved or deleted; "
            "drop it again from where it is now.",
            path=str(path),
            reason="missing",
        ) from None
    except PermissionError:
        raise DocumentError(
            f"{name} cannot be read: permission denied. Give yourself read access "
            f"(chmod u+r '{path}') or copy it somewhere readable, then drop it again.",
            path=str(path),
            reason="unreadable",
        ) from None
    except OSError as exc:
        raise DocumentError(
            f"{name} cannot be read ({exc.strerror or exc.__class__.__name__}). "
            "Check that the file is accessible, then drop it again.",
            path=str(path),
            reason="unreadable",
        ) from None
    if len(data) > max_bytes:  # it grew between stat and read
        raise _too_large(path, len(data), max_bytes)
    if not data:
        raise _empty(path)
    return data


def _too_large(path: Path, size: int, max_bytes: int) -> DocumentError:
    return DocumentError(
        f"{path.name} is {_size(size)}, over the {_size(max_bytes)} limit for documents. "
        f"Drop a smaller file (or split this one), or raise {MAX_DOCUMENT_KEY} in config.toml.",
        path=str(path),
        reason="too_large",
        size=size,
        limit=max_bytes,
    )


def _empty(path: Path) -> DocumentError:
    name = path.name
    return DocumentError(
        f"{name} is empty: there is no text to send. Drop a file with some text in it.",
        path=str(path),
        reason="empty",
    )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.1f} MB"


def _plain_text(path: Path, data: bytes) -> str:
    name = path.name
    if b"\x00" in data:
        raise DocumentError(
            f"{name} contains binary data (NUL bytes), so it is not a plain text file. "
            "If it is UTF-16 text, save it as UTF-8; otherwise drop a real text file or a PDF.",
            path=str(path),
            reason="binary",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{name} is not UTF-8 text (undecodable byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}). Convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 '{name}'` "
            "or 'Save as UTF-8' in your editor, then drop it again.",
            path=str(path),
            reason="not_utf8",
            offset=exc.start,
        ) from None
    if not text.strip():
        raise _empty(path)
    return text.replace("\r\n", "\n")


def _pdf_text(path: Path, data: bytes) -> str:
    name = path.name
    if b"%PDF-" not in data[:_PDF_HEADER_WINDOW]:
        raise _broken_pdf(path, "there is no %PDF- header")
    from pypdf import PdfReader  # a second of imports: only once a PDF is dropped
    from pypdf.errors import DependencyError, FileNotDecryptedError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() for page in reader.pages]
    except (FileNotDecryptedError, DependencyError):
        raise DocumentError(
            f"{name} is password-protected, so its text cannot be read. Save an unprotected "
            "copy (for instance with 'Print to PDF') and drop that.",
            path=str(path),
            reason="encrypted",
        ) from None
    except Exception as exc:  # pypdf raises arbitrary exceptions on broken input
        raise _broken_pdf(path, f"{exc.__class__.__name__}: {exc}") from None
    # Lone surrogates or NULs from odd font encodings would break the wire encoding later.
    texts = [p.replace("\x00", "").encode("utf-8", "replace").decode("utf-8") for p in pages]
    text = "\n\n".join(t.strip() for t in texts if t.strip())
    if not text:
        raise DocumentError(
            f"{name} has no extractable text (it may be a scanned image or contain only "
            "drawings). Run it through OCR, or paste its text into a .txt file and drop that.",
            path=str(path),
            reason="no_text",
        )
    return text


def _broken_pdf(path: Path, why: str) -> DocumentError:
    name = path.name
    if len(why) > 200:
        why = why[:200] + "..."
    return DocumentError(
        f"{name} is not a readable PDF ({why}). The file may be damaged or only partly "
        "downloaded: open it in a PDF viewer to check, re-save or re-download it, "
        "then drop it again.",
        path=str(path),
        reason="broken_pdf",
    )
