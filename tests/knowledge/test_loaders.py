"""Tests for knowledge.loaders: real small files of every supported type, good and bad."""

from __future__ import annotations

import io
import random
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from knowledge.errors import (
    CorruptDocument,
    DocumentError,
    EmptyDocument,
    EncryptedDocument,
    FileTooLarge,
    MissingFile,
    UnsupportedFileType,
)
from knowledge.loaders import (
    DEFAULT_MAX_BYTES,
    SUPPORTED_SUFFIXES,
    LoadedDocument,
    Page,
    Section,
    load_bytes,
    load_document,
)

# --------------------------------------------------------------------------- fixture builders


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]], title: str | None = None) -> bytes:
    """A genuine, minimal text PDF: one Helvetica font, each page's lines drawn with BT/Tf/Td/Tj/ET,
    and a byte-exact cross-reference table. An empty line list gives a page without any text."""
    n = len(pages)
    font_id, info_id = 3 + 2 * n, 4 + 2 * n
    objects: dict[int, str] = {
        1: "<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{' '.join(f'{3 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>",
        font_id: "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for i, lines in enumerate(pages):
        page_id, content_id = 3 + 2 * i, 4 + 2 * i
        ops = "".join(f"0 -16 Td {_pdf_string(line)} Tj\n" for line in lines)
        stream = f"BT\n/F1 12 Tf\n72 740 Td\n{ops}ET\n" if lines else "0 0 1 rg 72 72 200 200 re f\n"
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {content_id} 0 R >>"
        )
        objects[content_id] = f"<< /Length {len(stream.encode('latin-1'))} >>\nstream\n{stream}endstream"
    if title is not None:
        objects[info_id] = f"<< /Title {_pdf_string(title)} /Producer (tests) >>"
    size = max(objects) + 1

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += f"{num} 0 obj\n{objects[num]}\nendobj\n".encode("latin-1")
    xref_at = len(out)
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    for num in range(1, size):
        out += f"{offsets[num]:010d} 00000 n \n".encode() if num in offsets else b"0000000000 65535 f \n"
    info = f" /Info {info_id} 0 R" if title is not None else ""
    out += f"trailer\n<< /Size {size} /Root 1 0 R{info} >>\nstartxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


PDF_PAGES = [
    ["Annual Report 2024", "Revenue grew by twelve percent."],
    ["Second page begins here.", "The cafeteria (ground floor) opens at 8."],
]


def encrypt_pdf(data: bytes, user_password: str, owner_password: str | None = None) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password, owner_password)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def make_docx(path: Path, *, core_title: str | None = None) -> Path:
    document = docx.Document()
    if core_title is not None:
        document.core_properties.title = core_title
    document.add_paragraph("Employee Handbook", style="Title")
    document.add_paragraph("Welcome to the company.")
    document.add_heading("Holidays", level=1)
    document.add_paragraph("Staff get 25 days of paid leave.")
    document.add_paragraph("")  # empty paragraphs are skipped
    table = document.add_table(rows=2, cols=2)
    for r, (a, b) in enumerate([("Grade", "Days"), ("Senior", "30")]):
        table.cell(r, 0).text, table.cell(r, 1).text = a, b
    document.add_heading("Carry-over", level=2)
    document.add_paragraph("Up to five days may be carried over.")
    document.add_heading("Expenses", level=1)
    document.add_paragraph("Keep every receipt.")
    document.save(path)
    return path


def section(doc: LoadedDocument, title: str) -> Section:
    matches = [s for s in doc.sections if s.title == title]
    assert len(matches) == 1, [s.title for s in doc.sections]
    return matches[0]


def body(doc: LoadedDocument, sec: Section) -> str:
    return doc.text[sec.start : sec.end]


# --------------------------------------------------------------------------- public constants


def test_supported_suffixes_and_default_limit():
    assert set(SUPPORTED_SUFFIXES) == {
        ".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".rst", ".csv", ".tsv", ".json", ".jsonl",
        ".log", ".pptx", ".xlsx", ".epub", ".odt",
    }
    assert SUPPORTED_SUFFIXES[".pdf"] == "application/pdf"
    assert SUPPORTED_SUFFIXES[".md"] == SUPPORTED_SUFFIXES[".markdown"] == "text/markdown"
    assert DEFAULT_MAX_BYTES == 50 * 1024 * 1024


# --------------------------------------------------------------------------- plain text


def test_txt_keeps_text_and_normalises_newlines(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"line one\r\nline two\rline three\n")
    doc = load_document(path)
    assert doc.text == "line one\nline two\nline three\n"
    assert doc.title == "notes"
    assert doc.mime == "text/plain"
    assert doc.pages == () and doc.sections == ()
    assert doc.page_at(3) is None


def test_suffix_is_case_insensitive(tmp_path):
    path = tmp_path / "SHOUT.TXT"
    path.write_text("hello", encoding="utf-8")
    assert load_document(str(path)).text == "hello"


def test_utf8_bom_is_stripped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfna\xc3\xafve r\xc3\xa9sum\xc3\xa9")
    assert load_document(path).text == "naïve résumé"


def test_utf16_with_bom_is_decoded(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes("Grüße aus Köln\r\n".encode("utf-16"))
    assert load_document(path).text == "Grüße aus Köln\n"


def test_cp1252_text_is_decoded(tmp_path):
    text = "Un café, une crème brûlée et un sentiment de déjà vu à Noël.\n" * 20
    path = tmp_path / "latin.txt"
    path.write_bytes(text.encode("cp1252"))
    doc = load_document(path)
    assert doc.text == text
    assert "\ufffd" not in doc.text


def test_load_bytes_matches_load_document(tmp_path):
    data = b"# Hello\n\nWorld\n"
    path = tmp_path / "same.md"
    path.write_bytes(data)
    from_upload = load_bytes(data, "same.md")
    assert from_upload == load_document(path)
    assert load_bytes(data, "uploads/dir/Same.MD").title == "Hello"


# --------------------------------------------------------------------------- Markdown

MARKDOWN = """\
# Installation Guide

Intro paragraph.

## Requirements

Python 3.11 or newer.

```bash
# not a heading, just a shell comment
pip install chatqa
```

### Optional extras ###

GPU support.

## Usage

Run `chatqa ask`.

# Appendix

The end.
"""


def test_markdown_keeps_source_and_finds_atx_sections(tmp_path):
    path = tmp_path / "guide.markdown"
    path.write_text(MARKDOWN, encoding="utf-8")
    doc = load_document(path)
    assert doc.text == MARKDOWN
    assert doc.title == "Installation Guide"
    assert doc.mime == "text/markdown"
    assert [(s.title, s.level) for s in doc.sections] == [
        ("Installation Guide", 1),
        ("Requirements", 2),
        ("Optional extras", 3),
        ("Usage", 2),
        ("Appendix", 1),
    ]
    # a section starts at its heading line and runs to the next heading of the same or a higher level
    req = section(doc, "Requirements")
    assert body(doc, req).startswith("## Requirements\n\nPython 3.11")
    assert body(doc, req).endswith("GPU support.")
    assert "# not a heading" in body(doc, req)
    assert body(doc, section(doc, "Optional extras")) == "### Optional extras ###\n\nGPU support."
    assert body(doc, section(doc, "Installation Guide")).endswith("Run `chatqa ask`.")
    assert body(doc, section(doc, "Appendix")) == "# Appendix\n\nThe end."


def test_markdown_without_h1_falls_back_to_stem(tmp_path):
    path = tmp_path / "todo-list.md"
    path.write_text("## Monday\n\n- laundry\n", encoding="utf-8")
    doc = load_document(path)
    assert doc.title == "todo-list"
    assert [(s.title, s.level, s.start) for s in doc.sections] == [("Monday", 2, 0)]


# --------------------------------------------------------------------------- HTML

HTML = """<!DOCTYPE html>
<html><head><title>Caf&eacute; Menu &amp; Prices</title>
<style>body { color: red; }</style>
<script>var secret = "do not index";</script></head>
<body>
<header><h1>Site Banner</h1></header>
<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
<div role="navigation">Breadcrumbs here</div>
<main>
  <h1>Our   Menu</h1>
  <p>Fresh coffee &amp; tea,
     served   daily &ndash; from 7&nbsp;am.</p>
  <!-- a comment that must not appear -->
  <h2>Drinks</h2>
  <ul><li>Espresso</li><li>Flat <b>white</b></li></ul>
  <table><tr><th>Item</th><th>Price</th></tr><tr><td>Latte</td><td>&euro;3</td></tr></table>
  <h2>Food</h2>
  <div>Croissant<br>Bagel</div>
  <pre>  def keep():
      return   "spacing"</pre>
  <noscript>Enable JavaScript</noscript>
  <form><input name="q"> Search the site</form>
</main>
<aside>Related links</aside>
<footer>Copyright 2024</footer>
</body></html>
"""


def test_html_main_text_blocks_entities_and_sections(tmp_path):
    path = tmp_path / "menu.htm"
    path.write_text(HTML, encoding="utf-8")
    doc = load_document(path)
    assert doc.mime == "text/html"
    assert doc.title == "Café Menu & Prices"
    assert doc.text == (
        "Our Menu\n\n"
        "Fresh coffee & tea, served daily – from 7 am.\n\n"
        "Drinks\n\nEspresso\n\nFlat white\n\n"
        "Item | Price\n\nLatte | €3\n\n"
        "Food\n\nCroissant\nBagel\n\n"
        '  def keep():\n      return   "spacing"'
    )
    for dropped in ("secret", "color", "Home", "About us", "Breadcrumbs", "Site Banner", "comment",
                    "JavaScript", "Search", "Related", "Copyright"):  # fmt: skip
        assert dropped not in doc.text
    assert [(s.title, s.level) for s in doc.sections] == [("Our Menu", 1), ("Drinks", 2), ("Food", 2)]
    drinks = section(doc, "Drinks")
    assert body(doc, drinks).startswith("Drinks\n\nEspresso")
    assert body(doc, drinks).endswith("Latte | €3")
    assert body(doc, section(doc, "Food")).startswith("Food\n\nCroissant")
    assert body(doc, section(doc, "Our Menu")).endswith('"spacing"')


def test_html_without_title_or_main_uses_body_and_first_h1(tmp_path):
    path = tmp_path / "page.html"
    path.write_text("<body><h1>Hello &lt;World&gt;</h1><p>Text <i>here</i>.</p><script>x()</script></body>",
                    encoding="utf-8")  # fmt: skip
    doc = load_document(path)
    assert doc.title == "Hello <World>"
    assert doc.text == "Hello <World>\n\nText here."
    assert body(doc, doc.sections[0]).startswith("Hello <World>")


def test_html_unclosed_head_nested_boilerplate_and_article_root(tmp_path):
    html = (
        "<html><head><title>Blog</title><meta charset='utf-8'>"  # <head> never closed: body must survive
        "<body><div class='site'>Site chrome outside the article</div>"
        "<article><h2>Post &#8212; one</h2><p>First&nbsp;para.</p>"
        "<footer><nav>Prev | Next</nav></footer>"
        "<svg><style>.a{}</style><text>logo</text></svg></article>"
    )
    doc = load_bytes(html.encode("utf-8"), "blog.html")
    assert doc.title == "Blog"
    assert doc.text == "Post — one\n\nFirst para."
    assert [(s.title, s.level, s.start, s.end) for s in doc.sections] == [("Post — one", 2, 0, len(doc.text))]


def test_html_with_only_boilerplate_is_empty(tmp_path):
    path = tmp_path / "shell.html"
    path.write_text("<html><body><nav>Menu</nav><script>app()</script></body></html>", encoding="utf-8")
    with pytest.raises(EmptyDocument, match="shell.html.*contains no text"):
        load_document(path)


# --------------------------------------------------------------------------- PDF


def test_pdf_pages_text_and_title(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(PDF_PAGES, title="Annual Report"))
    doc = load_document(path)
    assert doc.mime == "application/pdf"
    assert doc.title == "Annual Report"
    assert [p.number for p in doc.pages] == [1, 2]
    p1, p2 = doc.pages
    assert p1.start == 0 and p2.start == p1.end + 2
    assert doc.text[p1.end : p2.start] == "\n\n"
    assert p2.end == len(doc.text)
    page1, page2 = doc.text[p1.start : p1.end], doc.text[p2.start : p2.end]
    assert "Annual Report 2024" in page1 and "twelve percent" in page1
    assert page2.startswith("Second page begins here.")
    assert "The cafeteria (ground floor) opens at 8." in page2
    inside_page2 = doc.text.index("cafeteria")
    assert doc.page_at(inside_page2) == 2
    assert doc.page_at(doc.text.index("twelve")) == 1
    assert doc.page_at(0) == 1
    assert doc.page_at(p1.end) == 1  # separator belongs to the earlier page
    assert doc.page_at(len(doc.text)) is None
    assert doc.page_at(-1) is None
    assert doc.sections == ()


def test_pdf_without_title_metadata_uses_stem(tmp_path):
    doc = load_bytes(make_pdf(PDF_PAGES), "Q3-results.pdf")
    assert doc.title == "Q3-results"
    assert len(doc.pages) == 2


def test_pdf_encrypted_with_empty_user_password_opens(tmp_path):
    data = encrypt_pdf(make_pdf(PDF_PAGES), user_password="", owner_password="owner-secret")
    assert PdfReader(io.BytesIO(data)).is_encrypted
    doc = load_bytes(data, "locked-for-editing.pdf")
    assert "cafeteria" in doc.text
    assert doc.page_at(doc.text.index("cafeteria")) == 2


def test_encrypted_pdf(tmp_path):
    path = tmp_path / "secret-plans.pdf"
    path.write_bytes(encrypt_pdf(make_pdf(PDF_PAGES), "secret"))
    with pytest.raises(EncryptedDocument) as info:
        load_document(path)
    assert "secret-plans.pdf" in str(info.value)
    assert "password-protected" in str(info.value)


def test_pdf_encryption_needing_a_missing_library(tmp_path, monkeypatch):
    from pypdf.errors import DependencyError

    def needs_cryptography(self, password):
        raise DependencyError("cryptography>=3.1 is required for AES algorithm")

    monkeypatch.setattr(PdfReader, "decrypt", needs_cryptography)
    data = encrypt_pdf(make_pdf(PDF_PAGES), user_password="", owner_password="owner-secret")
    with pytest.raises(EncryptedDocument) as info:
        load_bytes(data, "aes.pdf")
    assert str(info.value).startswith("aes.pdf: is encrypted in a way this installation cannot open")


def test_scanned_pdf_without_text_layer(tmp_path):
    path = tmp_path / "scan.pdf"
    path.write_bytes(make_pdf([[], []]))
    with pytest.raises(EmptyDocument) as info:
        load_document(path)
    assert "scan.pdf" in str(info.value)
    assert "no text layer" in str(info.value) and "OCR" in str(info.value)


def test_pdf_with_a_blank_page_keeps_numbering(tmp_path):
    doc = load_bytes(make_pdf([["First"], [], ["Third"]]), "gaps.pdf")
    assert [(p.number, doc.text[p.start : p.end]) for p in doc.pages] == [(1, "First"), (2, ""), (3, "Third")]
    assert doc.page_at(doc.text.index("Third")) == 3


def test_corrupt_pdf_random_bytes(tmp_path):
    path = tmp_path / "garbage.pdf"
    path.write_bytes(random.Random(1).randbytes(4000))
    with pytest.raises(CorruptDocument) as info:
        load_document(path)
    assert "garbage.pdf" in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_pdf(tmp_path):
    data = make_pdf(PDF_PAGES)
    path = tmp_path / "cut-off.pdf"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDocument) as info:
        load_document(path)
    assert "cut-off.pdf" in str(info.value)


# --------------------------------------------------------------------------- DOCX


def test_docx_paragraphs_tables_title_and_sections(tmp_path):
    doc = load_document(make_docx(tmp_path / "handbook.docx"))
    assert doc.mime == SUPPORTED_SUFFIXES[".docx"]
    assert doc.title == "Employee Handbook"
    assert doc.text == (
        "Employee Handbook\n\nWelcome to the company.\n\n"
        "Holidays\n\nStaff get 25 days of paid leave.\n\n"
        "Grade | Days\n\nSenior | 30\n\n"
        "Carry-over\n\nUp to five days may be carried over.\n\n"
        "Expenses\n\nKeep every receipt."
    )
    assert [(s.title, s.level) for s in doc.sections] == [
        ("Employee Handbook", 1),
        ("Holidays", 1),
        ("Carry-over", 2),
        ("Expenses", 1),
    ]
    holidays = section(doc, "Holidays")
    assert body(doc, holidays).startswith("Holidays\n\nStaff get 25 days")
    assert body(doc, holidays).endswith("carried over.")
    assert body(doc, section(doc, "Carry-over")) == "Carry-over\n\nUp to five days may be carried over."
    assert body(doc, section(doc, "Expenses")) == "Expenses\n\nKeep every receipt."
    assert doc.pages == () and doc.page_at(5) is None


def test_docx_core_title_wins(tmp_path):
    doc = load_document(make_docx(tmp_path / "h.docx", core_title="HR Handbook v2"))
    assert doc.title == "HR Handbook v2"


def test_docx_not_a_zip(tmp_path):
    path = tmp_path / "letter.docx"
    path.write_text("this is plain text pretending to be Word", encoding="utf-8")
    with pytest.raises(CorruptDocument) as info:
        load_document(path)
    assert "letter.docx" in str(info.value)
    assert "docx" in info.value.reason


def test_docx_zip_without_word_content(tmp_path):
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "not a word document")
    with pytest.raises(CorruptDocument, match="archive.docx"):
        load_bytes(buf.getvalue(), "archive.docx")


def test_empty_docx(tmp_path):
    path = tmp_path / "blank.docx"
    docx.Document().save(path)
    with pytest.raises(EmptyDocument, match="blank.docx: contains no text"):
        load_document(path)


# --------------------------------------------------------------------------- bad inputs


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(EmptyDocument) as info:
        load_document(path)
    assert str(info.value) == "empty.txt: contains no text"


def test_whitespace_only_file(tmp_path):
    path = tmp_path / "blank.md"
    path.write_text("  \n\t\r\n   \n", encoding="utf-8")
    with pytest.raises(EmptyDocument) as info:
        load_document(path)
    assert "blank.md" in str(info.value) and "contains no text" in str(info.value)


def test_binary_junk_as_txt(tmp_path):
    path = tmp_path / "photo.txt"
    path.write_bytes(random.Random(7).randbytes(3000))
    with pytest.raises(CorruptDocument) as info:
        load_document(path)
    assert str(info.value) == "photo.txt: looks like binary data, not text"


def test_binary_junk_without_nul_bytes(tmp_path):
    junk = bytes(b for b in random.Random(3).randbytes(3000) if b)
    path = tmp_path / "program.md"
    path.write_bytes(junk)
    with pytest.raises(CorruptDocument) as info:
        load_document(path)
    assert "program.md" in str(info.value)


def test_unsupported_type(tmp_path):
    path = tmp_path / "setup.exe"
    path.write_bytes(b"MZ\x90\x00")
    with pytest.raises(UnsupportedFileType) as info:
        load_document(path)
    message = str(info.value)
    assert "setup.exe" in message and ".exe" in message
    for suffix in SUPPORTED_SUFFIXES:
        assert suffix in message
    assert load_bytes(b"Read me first.", "README").text == "Read me first."  # extension-less text is sniffed


def test_file_over_max_bytes(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 2048)
    with pytest.raises(FileTooLarge) as info:
        load_document(path, max_bytes=1024)
    message = str(info.value)
    assert "big.txt" in message
    assert "0.00 MB (2,048 bytes)" in message and "0.00 MB (1,024 bytes) limit" in message
    assert load_document(path, max_bytes=2048).text == "x" * 2048  # the limit itself is allowed
    with pytest.raises(FileTooLarge, match=r"^upload.pdf: is 0\.3 MB, larger than the 0\.1 MB limit"):
        load_bytes(b"%" * (300 * 1024), "upload.pdf", max_bytes=150 * 1024)


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere" / "ghost.pdf"
    with pytest.raises(MissingFile) as info:
        load_document(path)
    assert "ghost.pdf" in str(info.value) and "does not exist" in str(info.value)


def test_directory(tmp_path):
    folder = tmp_path / "reports.txt"
    folder.mkdir()
    with pytest.raises(MissingFile) as info:
        load_document(folder)
    assert "reports.txt" in str(info.value) and "folder" in str(info.value)


def test_all_errors_are_document_errors_with_one_line_messages(tmp_path):
    cases = {
        "a.exe": b"x",
        "b.txt": b"",
        "c.pdf": b"%PDF-1.4 nonsense",
        "d.docx": b"PK nonsense",
        "e.txt": b"\x00\x01\x02",
    }
    for name, data in cases.items():
        with pytest.raises(DocumentError) as info:
            load_bytes(data, name)
        assert info.value.name == name
        assert "\n" not in str(info.value)


def test_dataclasses_are_frozen():
    doc = LoadedDocument(text="abc", title="t", mime="text/plain", pages=(Page(1, 0, 3),))
    with pytest.raises(AttributeError):
        doc.text = "x"  # type: ignore[misc]
    assert Section("s", 0, 1).level == 1
    assert doc.page_at(2) == 1
