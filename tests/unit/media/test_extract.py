"""Document text: real PDFs (tests/data/media, made with groff and pypdf) and plain text in its encodings."""

from __future__ import annotations

from pathlib import Path

import pytest

from warelay.media.extract import document_kind, extract_text

DATA = Path(__file__).parents[2] / "data" / "media"


def pdf(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_pdf_text_is_extracted_whole_when_it_fits() -> None:
    result = extract_text(pdf("menu.pdf"), "application/pdf", "menu.pdf", max_chars=10_000)
    assert result.text == (
        "Sunrise Bakery price list\nSourdough loaf: 4.50 EUR\nAlmond croissant: 2.80 EUR\n"
        "Open Tuesday to Sunday, 7:00 to 14:00."
    )
    assert result.truncated is False
    assert result.reason is None


def test_every_page_is_read_in_order() -> None:
    text = extract_text(pdf("terms.pdf"), "application/pdf", None, max_chars=10_000).text
    assert text is not None
    one, two, three = (text.index(f"Page {n} of the catering terms.") for n in ("one", "two", "three"))
    assert one < two < three
    assert "Cancellations are free until the day before." in text


def test_pdf_text_is_cut_at_the_cap_and_says_so() -> None:
    result = extract_text(pdf("terms.pdf"), "application/pdf", None, max_chars=100)
    assert result.text is not None
    assert len(result.text) <= 100
    assert result.text.startswith("Page one of the catering terms.")
    assert "Page three" not in result.text
    assert result.truncated is True


def test_a_pdf_without_a_text_layer_gives_a_reason() -> None:
    result = extract_text(pdf("blank.pdf"), "application/pdf", None, max_chars=1000)
    assert result.text is None
    assert result.reason == "the PDF has no text layer (a scan or images only)"


def test_a_password_protected_pdf_gives_a_reason() -> None:
    result = extract_text(pdf("locked.pdf"), "application/pdf", None, max_chars=1000)
    assert result.text is None
    assert result.reason == "the PDF is password-protected"


@pytest.mark.parametrize("data", [b"%PDF-1.7\nnot really a pdf", b"", b"\x00\x01\x02" * 100])
def test_a_broken_pdf_gives_a_reason_not_an_exception(data: bytes) -> None:
    result = extract_text(data, "application/pdf", None, max_chars=1000)
    assert result.text is None
    assert result.reason == "the PDF could not be read"


def test_a_pdf_cut_short_still_gives_what_it_can_or_a_reason() -> None:
    data = pdf("terms.pdf")
    result = extract_text(data[: len(data) // 2], "application/pdf", None, max_chars=1000)
    assert (result.text is None) == (result.reason is not None)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Olá, queria encomendar 3 pães.".encode(), "Olá, queria encomendar 3 pães."),
        (b"\xef\xbb\xbfwith a BOM", "with a BOM"),
        ("UTF-16 café".encode("utf-16"), "UTF-16 café"),
        ("Windows café".encode("cp1252"), "Windows café"),
        (b"line one\r\nline two\r\n\r\n\r\n\r\nline three  \n", "line one\nline two\n\nline three"),
    ],
)
def test_plain_text_in_its_encodings(data: bytes, expected: str) -> None:
    result = extract_text(data, "text/plain", "note.txt", max_chars=1000)
    assert result.text == expected
    assert result.truncated is False


def test_plain_text_is_cut_at_the_cap() -> None:
    result = extract_text(("é" * 5000).encode(), "text/plain; charset=utf-8", None, max_chars=300)
    assert result.text == "é" * 300
    assert result.truncated is True


def test_a_binary_file_sent_as_text_is_refused() -> None:
    result = extract_text(bytes(range(256)) * 4, "text/plain", None, max_chars=1000)
    assert result.text is None
    assert result.reason == "the file is not text"


def test_an_empty_text_file_has_no_text() -> None:
    result = extract_text(b"  \n\n ", "text/plain", None, max_chars=1000)
    assert result.text is None
    assert result.reason == "the document has no text"


def test_other_formats_are_not_read() -> None:
    docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    result = extract_text(b"PK\x03\x04...", docx, "offer.docx", max_chars=1000)
    assert result.text is None
    assert result.reason == f"no text extraction for {docx}"


@pytest.mark.parametrize(
    ("mime", "filename", "kind"),
    [
        ("application/pdf", None, "pdf"),
        ("Application/PDF", "x.bin", "pdf"),
        ("text/csv", None, "text"),
        ("application/json", None, "text"),
        ("application/octet-stream", "Report.PDF", "pdf"),
        ("application/octet-stream", "notes.md", "text"),
        (None, "list.csv", "text"),
        ("application/octet-stream", "photo.jpg", None),
        ("application/msword", "old.doc", None),
        ("image/png", "menu.pdf", None),  # a declared type wins over the name
    ],
)
def test_document_kind(mime: str | None, filename: str | None, kind: str | None) -> None:
    assert document_kind(mime, filename) == kind
