"""Text out of documents a customer sends: PDF (pypdf) and plain text, cut at a length cap.

A document is untrusted input: every failure to read it becomes a reason (kept for operators and
turned into a placeholder for the agent), never an exception. Extraction stops as soon as the cap
is reached, so a 300-page PDF costs only the pages that fit. It is CPU work: callers run it in a
thread (:func:`asyncio.to_thread`).
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final, Literal

__all__ = ["Extracted", "document_kind", "extract_text"]

log = logging.getLogger("warelay.media")

_TEXT_TYPES: Final = frozenset(
    {
        "text/plain",
        "text/csv",
        "text/tab-separated-values",
        "text/markdown",
        "text/x-markdown",
        "application/json",
    }
)
_TEXT_SUFFIXES: Final = frozenset({".txt", ".csv", ".tsv", ".md", ".markdown", ".json", ".log"})
_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


@dataclass(frozen=True, slots=True)
class Extracted:
    """A document's text (None when there is none to give) and why not, or whether it was cut."""

    text: str | None
    truncated: bool = False
    reason: str | None = None


def document_kind(mime_type: str | None, filename: str | None) -> Literal["pdf", "text"] | None:
    """Which extractor reads a document: by MIME type, else (for a generic type) by the file's suffix."""
    base = (mime_type or "").split(";")[0].strip().lower()
    if base == "application/pdf":
        return "pdf"
    if base in _TEXT_TYPES:
        return "text"
    if base in ("", "application/octet-stream", "binary/octet-stream") and filename:
        suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
        if suffix == ".pdf":
            return "pdf"
        if suffix in _TEXT_SUFFIXES:
            return "text"
    return None


def extract_text(data: bytes, mime_type: str | None, filename: str | None, *, max_chars: int) -> Extracted:
    """The text of a document, at most ``max_chars`` characters."""
    kind = document_kind(mime_type, filename)
    if kind == "pdf":
        return _pdf_text(data, max_chars)
    if kind == "text":
        return _plain_text(data, max_chars)
    return Extracted(None, reason=f"no text extraction for {mime_type or 'files of unknown type'}")


def _tidy(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = _TRAILING_SPACE.sub("\n", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _cut(parts: list[str], max_chars: int, more: bool) -> Extracted:
    text = _tidy("\n\n".join(parts))
    if not text:
        return Extracted(None, reason="the document has no text")
    if len(text) > max_chars:
        return Extracted(text[:max_chars].rstrip(), truncated=True)
    return Extracted(text, truncated=more)


def _pdf_text(data: bytes, max_chars: int) -> Extracted:
    from pypdf import PdfReader  # imported on first use: most turns never read a PDF

    parts: list[str] = []
    total = 0
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                decrypted = bool(reader.decrypt(""))  # an owner password alone still opens the file
            except Exception:  # unsupported encryption: pypdf raises several kinds
                decrypted = False
            if not decrypted:
                return Extracted(None, reason="the PDF is password-protected")
        pages = reader.pages
        count = len(pages)
        for index in range(count):
            text = pages[index].extract_text() or ""
            parts.append(text)
            total += len(text)
            if total > max_chars:
                return _cut(parts, max_chars, more=index + 1 < count)
    except Exception as exc:  # a malformed file can fail anywhere inside the parser
        log.info("a PDF could not be read: %s: %s", type(exc).__name__, exc)
        if parts:  # the pages read before the broken one are still worth giving
            return _cut(parts, max_chars, more=True)
        return Extracted(None, reason="the PDF could not be read")
    extracted = _cut(parts, max_chars, more=False)
    if extracted.text is None:
        return Extracted(None, reason="the PDF has no text layer (a scan or images only)")
    return extracted


def _plain_text(data: bytes, max_chars: int) -> Extracted:
    # Enough bytes for max_chars characters in any encoding (UTF-8 uses at most 4 per character).
    head = data[: max_chars * 4 + 4]
    more = len(data) > len(head)
    text: str
    if head.startswith(codecs.BOM_UTF8):
        text = head[3:].decode("utf-8", "ignore" if more else "replace")
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = head.decode("utf-16", "replace")
    else:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if more and exc.start >= len(head) - 3:  # a character cut by the byte cap
                text = head[: exc.start].decode("utf-8")
            else:
                # Not UTF-8: Windows-1252 reads every byte and is the usual single-byte encoding.
                text = head.decode("cp1252", "replace")
    sample = text[:4096]
    controls = sum(1 for ch in sample if ch < " " and ch not in "\t\n\r\f")
    if controls > len(sample) // 20:  # a binary file, or UTF-16 without a BOM (a NUL every other byte)
        return Extracted(None, reason="the file is not text")
    return _cut([text], max_chars, more)
