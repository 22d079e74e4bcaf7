"""Tests for the loaders added for issue #23: each format round-trips a small file built here (text, offsets,
pages, sections), and a bad file of each kind gives a one-line DocumentError."""

from __future__ import annotations

import io
import json
import zipfile

import openpyxl
import pytest
from pptx import Presentation
from pptx.util import Inches

from knowledge.errors import CorruptDocument, DocumentError, EmptyDocument, FileTooLarge
from knowledge.loaders import LoadedDocument, load_bytes, load_document
from knowledge.loaders.data import ROWS_PER_PAGE


def page_text(doc: LoadedDocument, number: int) -> str:
    page = next(p for p in doc.pages if p.number == number)
    return doc.text[page.start : page.end]


def section_text(doc: LoadedDocument, title: str) -> str:
    sec = next(s for s in doc.sections if s.title == title)
    return doc.text[sec.start : sec.end]


def one_line_error(kind: type[DocumentError], data: bytes, name: str) -> str:
    with pytest.raises(kind) as info:
        load_bytes(data, name)
    message = str(info.value)
    assert message.startswith(f"{name}: ") and "\n" not in message and "Traceback" not in message
    return message


# --------------------------------------------------------------------------- reStructuredText

RST = """\
=============
Field Manual
=============

Read this first.

Installing
----------

Run the installer.

Offline mode
~~~~~~~~~~~~

Works without a network.

Using
-----

Ask a question.
"""


def test_rst_keeps_source_and_headings_become_sections():
    doc = load_bytes(RST.encode(), "manual.rst")
    assert doc.text == RST and doc.mime == "text/x-rst" and doc.title == "Field Manual"
    assert [(s.title, s.level) for s in doc.sections] == [
        ("Field Manual", 1), ("Installing", 2), ("Offline mode", 3), ("Using", 2),
    ]
    top = doc.sections[0]
    assert (top.start, top.end) == (0, len(RST.rstrip()))  # the overline starts it
    assert section_text(doc, "Installing") == "Installing\n----------\n\nRun the installer.\n\n" \
        "Offline mode\n~~~~~~~~~~~~\n\nWorks without a network."
    assert section_text(doc, "Using") == "Using\n-----\n\nAsk a question."


def test_rst_with_markup_errors_is_still_text():
    source = "Title\n===\n\n.. include:: /etc/passwd\n\n`unclosed\n"
    doc = load_bytes(source.encode(), "broken.rst")
    assert doc.text == source and "root:" not in doc.text


def test_bad_rst():
    one_line_error(CorruptDocument, bytes(range(256)) * 4, "binary.rst")
    one_line_error(EmptyDocument, b"  \n\n", "blank.rst")


# --------------------------------------------------------------------------- CSV / TSV

def test_csv_rows_become_header_value_lines_with_row_range_pages():
    rows = ["name,city,age"] + [f"person {i},town {i % 3},{20 + i}" for i in range(1, ROWS_PER_PAGE + 3)]
    rows[2] = 'person 2,"Paris, France",'  # a quoted comma; an empty cell is left out
    doc = load_bytes("\r\n".join(rows).encode(), "people.csv")
    assert doc.mime == "text/csv" and doc.title == "people"
    assert doc.text.startswith("name: person 1\ncity: town 1\nage: 21\n\nname: person 2\ncity: Paris, France\n\n")
    assert [p.number for p in doc.pages] == [1, 2]
    assert page_text(doc, 2) == "name: person 51\ncity: town 0\nage: 71\n\nname: person 52\ncity: town 1\nage: 72"
    assert [s.title for s in doc.sections] == [f"rows 1–{ROWS_PER_PAGE}", f"rows {ROWS_PER_PAGE + 1}–{ROWS_PER_PAGE + 2}"]
    assert doc.page_at(doc.text.index("person 51")) == 2


def test_semicolon_csv_and_tsv():
    assert load_bytes(b"a;b\n1;x y\n", "semi.csv").text == "a: 1\nb: x y"
    doc = load_bytes(b"key\tvalue\nport\t8080\n", "settings.tsv")
    assert doc.text == "key: port\nvalue: 8080" and doc.mime == "text/tab-separated-values"


def test_bad_csv():
    one_line_error(CorruptDocument, b"a,b\n\x00\x01\x02" * 50, "junk.csv")
    one_line_error(EmptyDocument, b"\n\n", "empty.tsv")


# --------------------------------------------------------------------------- JSON / JSON Lines

def test_json_values_with_key_paths():
    data = {"name": "ChatQA", "version": 2, "offline": True, "missing": None,
            "authors": [{"name": "Ada", "role": "lead"}, {"name": "Lin"}], "notes": {"install": "pip install ."}}
    doc = load_bytes(json.dumps(data).encode(), "package.json")
    assert doc.mime == "application/json"
    assert doc.text == (
        "name: ChatQA\n\nversion: 2\n\noffline: true\n\n"
        "authors[0].name: Ada\nauthors[0].role: lead\nauthors[1].name: Lin\n\nnotes.install: pip install ."
    )
    assert [p.number for p in doc.pages] == [1] and doc.sections[0].title == "records 1–5"


def test_json_list_and_deep_nesting_without_recursion():
    assert load_bytes(b'[{"q": "why"}, "plain"]', "list.json").text == "[0].q: why\n\n[1]: plain"
    deep = b'{"a": ' * 500 + b'"bottom"' + b"}" * 500
    assert load_bytes(deep, "deep.json").text == ".".join(["a"] * 500) + ": bottom"


def test_jsonl_a_record_per_line():
    lines = [json.dumps({"id": i, "text": f"message {i}"}) for i in range(ROWS_PER_PAGE + 1)]
    doc = load_bytes(("\n".join(lines) + "\n\n").encode(), "log.jsonl")
    assert doc.text.startswith("id: 0\ntext: message 0\n\nid: 1\ntext: message 1")
    assert page_text(doc, 2) == f"id: {ROWS_PER_PAGE}\ntext: message {ROWS_PER_PAGE}"


def test_bad_json():
    assert "is not valid JSON" in one_line_error(CorruptDocument, b'{"a": 1,', "cut.json")
    assert "line 2 is not valid JSON" in one_line_error(CorruptDocument, b'{"a": 1}\n{oops}\n', "bad.jsonl")
    one_line_error(EmptyDocument, b'{"a": null, "b": ""}', "nothing.json")


# --------------------------------------------------------------------------- logs and extension-less text

def test_log_and_extensionless_text_are_sniffed(tmp_path):
    (tmp_path / "server.log").write_bytes(b"2026-01-01 INFO started\r\n2026-01-01 WARN disk 91%\n")
    assert load_document(tmp_path / "server.log").text == "2026-01-01 INFO started\n2026-01-01 WARN disk 91%\n"
    (tmp_path / "NOTES").write_text("Meeting on Friday.\n", encoding="utf-8")
    doc = load_document(tmp_path / "NOTES")
    assert (doc.text, doc.title, doc.mime) == ("Meeting on Friday.\n", "NOTES", "text/plain")


def test_binary_log_and_extensionless_files_are_refused():
    elf = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8
    assert "binary" in one_line_error(CorruptDocument, elf, "a.out.log")
    assert "binary" in one_line_error(CorruptDocument, elf, "program")


# --------------------------------------------------------------------------- PowerPoint

def make_pptx(title: str | None = "Quarterly review") -> bytes:
    deck = Presentation()
    if title:
        deck.core_properties.title = title
    s1 = deck.slides.add_slide(deck.slide_layouts[1])  # title and content
    s1.shapes.title.text = "Results"
    s1.placeholders[1].text_frame.text = "Revenue grew 12%"
    s1.notes_slide.notes_text_frame.text = "Mention the new office."
    s2 = deck.slides.add_slide(deck.slide_layouts[5])  # title only
    s2.shapes.title.text = "Team"
    table = s2.shapes.add_table(2, 2, Inches(1), Inches(2), Inches(4), Inches(1)).table
    for r, row in enumerate([("Name", "Role"), ("Ada", "Lead")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    deck.slides.add_slide(deck.slide_layouts[6])  # blank: an empty page keeps its number
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def test_pptx_a_page_per_slide_with_notes_and_tables():
    doc = load_bytes(make_pptx(), "review.pptx")
    assert doc.title == "Quarterly review"
    assert [p.number for p in doc.pages] == [1, 2, 3]
    assert page_text(doc, 1) == "Results\nRevenue grew 12%\nNotes: Mention the new office."
    assert page_text(doc, 2) == "Team\nName | Role\nAda | Lead"
    assert page_text(doc, 3) == ""
    assert [s.title for s in doc.sections] == ["Results", "Team"]
    assert section_text(doc, "Team") == page_text(doc, 2)
    assert load_bytes(make_pptx(title=None), "untitled.pptx").title == "Results"


def test_bad_pptx():
    assert "not a valid PowerPoint .pptx" in one_line_error(CorruptDocument, b"PK\x03\x04 not really", "cut.pptx")
    other = io.BytesIO()
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("hello.txt", "no presentation here")
    assert "not a valid PowerPoint .pptx" in one_line_error(CorruptDocument, other.getvalue(), "other.pptx")


# --------------------------------------------------------------------------- Excel

def make_xlsx() -> bytes:
    book = openpyxl.Workbook()
    book.properties.title = "Inventory"
    prices = book.active
    prices.title = "Prices"
    prices.append(["item", "qty", "price", "total"])
    prices.append(["apple", 3, 2.5, "=B2*C2"])
    prices.append(["pear", None, 4, None])
    staff = book.create_sheet("Staff")
    staff.append(["name", "desk"])
    staff.append(["Ada", 12])
    out = io.BytesIO()
    book.save(out)
    # openpyxl does not compute formulas; give the cell the value Excel would have saved with it
    src = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    patched = io.BytesIO()
    with zipfile.ZipFile(patched, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                assert b"<f>B2*C2</f><v></v>" in data
                data = data.replace(b"<f>B2*C2</f><v></v>", b"<f>B2*C2</f><v>7.5</v>")
            dst.writestr(item, data)
    return patched.getvalue()


def test_xlsx_a_page_per_sheet_and_formulas_as_values():
    doc = load_bytes(make_xlsx(), "stock.xlsx")
    assert doc.title == "Inventory"
    assert page_text(doc, 1) == "Prices\n\nitem: apple\nqty: 3\nprice: 2.5\ntotal: 7.5\n\nitem: pear\nprice: 4"
    assert page_text(doc, 2) == "Staff\n\nname: Ada\ndesk: 12"
    assert [s.title for s in doc.sections] == ["Prices", "Staff"]
    assert "B2*C2" not in doc.text


def test_bad_xlsx():
    assert "not a valid Excel .xlsx" in one_line_error(CorruptDocument, b"not a zip at all", "cut.xlsx")


# --------------------------------------------------------------------------- EPUB

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def make_epub(chapters: dict[str, str], *, container: str = CONTAINER) -> bytes:
    manifest = "".join(f'<item id="c{i}" href="text/{n}" media-type="application/xhtml+xml"/>'
                       for i, n in enumerate(chapters))
    spine = "".join(f'<itemref idref="c{i}"/>' for i in reversed(range(len(chapters))))  # spine order wins
    opf = f"""<?xml version="1.0"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>A Small Book</dc:title></metadata>
  <manifest>{manifest}<item id="css" href="style.css" media-type="text/css"/></manifest>
  <spine>{spine}</spine>
</package>"""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        z.writestr("META-INF/container.xml", container)
        z.writestr("OEBPS/content.opf", opf)
        z.writestr("OEBPS/style.css", "p { color: red }")
        for name, body in chapters.items():
            z.writestr(f"OEBPS/text/{name}",
                       f'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head><title>x</title>'
                       f"</head><body>{body}</body></html>")
    return out.getvalue()


def test_epub_a_page_per_chapter_in_spine_order():
    data = make_epub({
        "two.xhtml": "<h1>Chapter Two</h1><p>The storm came.</p><h2>Aftermath</h2><p>Calm again.</p>",
        "cover.xhtml": "<div><img src='cover.png'/></div>",
        "one.xhtml": "<h1>Chapter One</h1><p>It began at sea.</p>",
    })
    doc = load_bytes(data, "book.epub")
    assert doc.title == "A Small Book" and doc.mime == "application/epub+zip"
    # the spine lists one, cover, two (reversed manifest); the cover has no text and is left out
    assert [p.number for p in doc.pages] == [1, 2]
    assert page_text(doc, 1) == "Chapter One\n\nIt began at sea."
    assert page_text(doc, 2) == "Chapter Two\n\nThe storm came.\n\nAftermath\n\nCalm again."
    assert [(s.title, s.level) for s in doc.sections] == [("Chapter One", 1), ("Chapter Two", 1), ("Aftermath", 2)]
    assert section_text(doc, "Aftermath") == "Aftermath\n\nCalm again."
    assert section_text(doc, "Chapter One") == page_text(doc, 1)


def test_bad_epub():
    no_package = make_epub({"a.xhtml": "<p>x</p>"}, container="<container/>")
    assert "not a valid EPUB" in one_line_error(CorruptDocument, no_package, "broken.epub")
    assert "not a valid EPUB" in one_line_error(CorruptDocument, b"\x00" * 64, "junk.epub")


# --------------------------------------------------------------------------- OpenDocument text

def make_odt(body: str, title: str = "Handbook") -> bytes:
    ns = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"')
    content = f'<?xml version="1.0"?><office:document-content {ns}><office:body><office:text>{body}' \
              "</office:text></office:body></office:document-content>"
    meta = ('<?xml version="1.0"?><office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
            f'xmlns:dc="http://purl.org/dc/elements/1.1/"><office:meta><dc:title>{title}</dc:title></office:meta>'
            "</office:document-meta>")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text", compress_type=zipfile.ZIP_STORED)
        z.writestr("content.xml", content)
        z.writestr("meta.xml", meta)
    return out.getvalue()


def test_odt_paragraphs_headings_tables():
    body = ('<text:h text:outline-level="1">Welcome</text:h>'
            "<text:p>First<text:s text:c=\"2\"/>day.<text:note><text:note-body><text:p>a footnote</text:p>"
            "</text:note-body></text:note></text:p>"
            '<text:h text:outline-level="2">Desks</text:h>'
            "<table:table><table:table-row><table:table-cell><text:p>Ada</text:p></table:table-cell>"
            "<table:table-cell><text:p>12</text:p></table:table-cell></table:table-row></table:table>"
            "<text:list><text:list-item><text:p>Bring a badge<text:line-break/>and a mug</text:p></text:list-item>"
            "</text:list>")
    doc = load_bytes(make_odt(body), "handbook.odt")
    assert doc.title == "Handbook"
    assert doc.text == "Welcome\n\nFirst  day.\n\nDesks\n\nAda | 12\n\nBring a badge\nand a mug"
    assert [(s.title, s.level) for s in doc.sections] == [("Welcome", 1), ("Desks", 2)]
    assert section_text(doc, "Desks") == "Desks\n\nAda | 12\n\nBring a badge\nand a mug"


def test_bad_odt():
    assert "not a valid OpenDocument .odt" in one_line_error(CorruptDocument, make_odt("<text:p>x"), "cut.odt")
    one_line_error(EmptyDocument, make_odt("<text:p> </text:p>"), "empty.odt")


# --------------------------------------------------------------------------- zip bombs

def declare_size(data: bytes, member: str, size: int) -> bytes:
    """The zip with `member`'s uncompressed size in the central directory changed to `size` (nothing inflated)."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at != -1:
        name_len = int.from_bytes(out[at + 28 : at + 30], "little")
        if out[at + 46 : at + 46 + name_len].decode() == member:
            out[at + 24 : at + 28] = size.to_bytes(4, "little")
            return bytes(out)
        at = out.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{member} not in the central directory")


@pytest.mark.parametrize("name, data, member", [
    ("bomb.docx", None, "word/document.xml"),
    ("bomb.pptx", "pptx", "ppt/presentation.xml"),
    ("bomb.xlsx", "xlsx", "xl/workbook.xml"),
    ("bomb.epub", "epub", "OEBPS/content.opf"),
    ("bomb.odt", "odt", "content.xml"),
])
def test_zip_bomb_is_refused_from_declared_sizes_without_reading_a_member(name, data, member, monkeypatch):
    import docx

    if data is None:
        d = docx.Document()
        d.add_paragraph("tiny")
        buf = io.BytesIO()
        d.save(buf)
        data = buf.getvalue()
    else:
        data = {"pptx": make_pptx, "xlsx": make_xlsx, "epub": lambda: make_epub({"a.xhtml": "<p>x</p>"}),
                "odt": lambda: make_odt("<text:p>x</text:p>")}[data]()
    bomb = declare_size(data, member, 2**30)  # a member that says it inflates to 1 GiB

    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy_open(self, target, *args, **kwargs):
        opened.append(getattr(target, "filename", target))
        return real_open(self, target, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy_open)
    message = one_line_error(FileTooLarge, bomb, name)
    assert "zip bomb" in message and "would unpack to 1,02" in message and "the 512 MB allowed" in message
    assert opened == []  # refused from the central directory alone: no member was read, nothing inflated
