"""HTML: the main text, block by block, with sections from h1-h6."""

from __future__ import annotations

from .common import Heads, Loaded, collapse, decode, joined, newlines, sections_from

_DROP = ["title", "script", "style", "noscript", "template", "svg", "nav", "header", "footer", "aside", "form"]  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCKS = {"p", "li", "td", "th", "blockquote", "div", "section", "article", "main", "ul", "ol", "dl", "dt",
           "dd", "table", "thead", "tbody", "tfoot", "caption", "figure", "figcaption", "address", "hr",
           "body", "html", "details", "summary"}  # fmt: skip


def load_html(data: bytes, name: str) -> Loaded:
    """Main text only, block by block with blank lines between; sections from h1-h6; table rows as
    'cell | cell'; <pre> kept verbatim; the title from <title>, else the first h1."""
    from bs4 import BeautifulSoup, NavigableString, Tag
    from bs4.element import PreformattedString

    soup = BeautifulSoup(decode(data, name), "html.parser")
    title = collapse(soup.title.get_text()) if soup.title else ""
    for tag in soup.find_all(_DROP) + soup.find_all(attrs={"role": "navigation"}):
        if not tag.decomposed:
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup

    blocks: list[str] = []
    heads: Heads = []  # start = block index until the offsets are known
    lines: list[str] = []
    buf: list[str] = []

    def end_line() -> None:
        if line := collapse("".join(buf)):
            lines.append(line)
        buf.clear()

    def end_block(text: str = "") -> None:
        end_line()
        if lines:
            blocks.append("\n".join(lines))
            lines.clear()
        if text.strip():
            blocks.append(text)

    def walk(node: Tag) -> None:
        for child in node.children:
            if isinstance(child, PreformattedString):  # comments, CDATA, doctype, processing instructions
                continue
            if isinstance(child, NavigableString):
                buf.append(str(child))
            elif not isinstance(child, Tag):
                continue
            elif child.name == "br":
                end_line()
            elif child.name in _HEADINGS:
                if text := collapse(child.get_text(" ")):
                    end_block()
                    heads.append((text, len(blocks), _HEADINGS[child.name]))
                    end_block(text)
            elif child.name == "pre":
                end_block(newlines(child.get_text()).strip("\n").rstrip())
            elif child.name == "tr":
                cells = (collapse(c.get_text(" ")) for c in child.find_all(["td", "th"], recursive=False))
                end_block(" | ".join(c for c in cells if c))
            elif child.name in _BLOCKS:
                end_block()
                walk(child)
                end_block()
            else:
                walk(child)

    walk(root)
    end_block()
    text, starts = joined(blocks)
    title = title or next((t for t, _i, lv in heads if lv == 1), "")
    return Loaded(text, title, sections=sections_from(text, [(t, starts[i], lv) for t, i, lv in heads]))
