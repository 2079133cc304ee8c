"""Plain text out of documentation formats, with real parsers and without boilerplate.

- troff man pages: rendered by ``mandoc -T utf8`` (overstrikes removed by ``col -b``), then split
  into sections; sections that are boilerplate in any of the corpus's languages (synopsis,
  option lists, files, authors, copyright, bug reports, see-also, translation credits) are
  dropped, and so are paragraphs that are mostly option lines.
- HTML: ``html.parser`` from the standard library; text inside navigation, headers, footers,
  sidebars, scripts and styles is dropped; block elements become paragraph breaks; ``<pre>``
  keeps its lines.
- Mallard (``.page``, GNOME help): ``xml.etree``; ``<info>`` (credits, licence, links) dropped.
- Line-wrapped text is reflowed: a paragraph becomes one line, so the model sees prose as prose.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

BOILERPLATE_SECTIONS = {
    # English
    "SYNOPSIS", "OPTIONS", "FILES", "AUTHOR", "AUTHORS", "COPYRIGHT", "REPORTING BUGS", "BUGS",
    "SEE ALSO", "COLOPHON", "LICENSE", "EXIT STATUS", "ENVIRONMENT", "VERSIONS", "STANDARDS",
    "HISTORY", "ATTRIBUTES", "RETURN VALUE", "ERRORS", "CONFORMING TO", "LIBRARY",
    # French
    "SYNOPSIS", "OPTIONS", "FICHIERS", "AUTEUR", "AUTEURS", "VOIR AUSSI", "TRADUCTION",
    "SIGNALER DES BOGUES", "BOGUES", "DROITS D'AUTEUR", "LICENCE", "STATUT DE SORTIE",
    "VALEUR RENVOYÉE", "ERREURS", "ENVIRONNEMENT", "HISTORIQUE", "STANDARDS", "BIBLIOTHÈQUE",
    # German
    "ÜBERSICHT", "OPTIONEN", "DATEIEN", "AUTOR", "AUTOREN", "SIEHE AUCH", "ÜBERSETZUNG",
    "FEHLER BERICHTEN", "FEHLER", "URHEBERRECHT", "LIZENZ", "EXIT-STATUS", "RÜCKGABEWERT",
    "UMGEBUNG", "GESCHICHTE", "STANDARDS", "BIBLIOTHEK", "ATTRIBUTE", "VERSIONEN",
    # Spanish, Italian, Portuguese, Dutch, Polish
    "SINOPSIS", "OPCIONES", "ARCHIVOS", "FICHEROS", "VÉASE TAMBIÉN", "VEA TAMBIÉN", "TRADUCCIÓN",
    "SINTASSI", "OPZIONI", "VEDERE ANCHE", "TRADUZIONE", "AUTORE", "SINOPSE", "OPÇÕES",
    "VEJA TAMBÉM", "TRADUÇÃO", "OVERZICHT", "OPTIES", "ZIE OOK", "VERTALING", "AUTEUR",
    "SKŁADNIA", "OPCJE", "ZOBACZ TAKŻE", "TŁUMACZENIE", "AUTORZY", "PLIKI",
}  # fmt: skip
"""Man-page section titles whose body is boilerplate or reference lists, not prose."""

MIN_CHARS = 200
"""Documents shorter than this (after extraction) are dropped: index pages, stubs."""

_OPTION_LINE = re.compile(r"^\s*(--?[\w#?][\w-]*|[+]\w)")


def reflow(text: str) -> str:
    """Join hard-wrapped lines into one line per paragraph; collapse spaces; NFC-normalize."""
    paras = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        if lines:
            paras.append(" ".join(lines))
    # runs of spaces collapse, except indentation at the start of a <pre> line (after U+E000)
    out = "\n\n".join(re.sub(r"(?<![\ue000 \t])[ \t]+", " ", p) for p in paras)
    return unicodedata.normalize("NFC", out).strip()


def render_man(path: str | Path, width: int = 200) -> str:
    """Render a (possibly gzipped) troff man page to plain UTF-8 text with mandoc."""
    rendered = subprocess.run(
        ["mandoc", "-T", "utf8", "-O", f"width={width}", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    if rendered.returncode > 2 or not rendered.stdout:  # mandoc: 1-2 are warnings/errors, kept
        return ""
    plain = subprocess.run(
        ["col", "-b", "-x"], input=rendered.stdout, capture_output=True, timeout=60, check=True
    )
    return plain.stdout.decode("utf-8", errors="replace")


def man_sections(rendered: str) -> list[tuple[str, str]]:
    """(title, body) per section of a rendered man page; the header and footer lines dropped."""
    lines = rendered.splitlines()
    if lines:
        lines = lines[1:]  # "LS(1)  User Commands  LS(1)"
    if lines and lines[-1].strip():
        lines = lines[:-1]  # "GNU coreutils 9.1  2023-01-01  LS(1)"
    sections: list[tuple[str, list[str]]] = []
    for line in lines:
        if line and not line[0].isspace():
            sections.append((line.strip().upper(), []))
        elif sections:
            sections[-1][1].append(line)
    return [(t, "\n".join(body)) for t, body in sections]


def man_to_text(path: str | Path) -> str:
    """Prose of a man page: its name line and non-boilerplate sections, option lists dropped."""
    parts = []
    for title, body in man_sections(render_man(path)):
        if title in BOILERPLATE_SECTIONS:
            continue
        keep = []
        for para in re.split(r"\n\s*\n", body):
            lines = [ln for ln in para.splitlines() if ln.strip()]
            if not lines:
                continue
            if sum(bool(_OPTION_LINE.match(ln)) for ln in lines) * 2 >= len(lines):
                continue  # an option table or a list of flags
            keep.append("\n".join(lines))
        text = reflow("\n\n".join(keep))
        if text:
            parts.append(text)
    return "\n\n".join(parts)


_SKIP_TAGS = {"script", "style", "nav", "header", "footer", "aside", "head", "noscript", "button"}
_BLOCK_TAGS = {
    "p", "div", "li", "dt", "dd", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "br", "table",
    "section", "article", "blockquote", "pre", "ul", "ol", "dl", "title", "td", "th",
}  # fmt: skip
_NAV_CLASS = re.compile(
    r"\b(nav\w*|related|sphinxsidebar\w*|footer|header\w*|breadcrumb\w*|toc\w*|"
    r"headerlink|menu\w*|sidebar|search\w*|copyright|legalnotice|footnotes?)\b",
    re.IGNORECASE,
)
_VOID = {"br", "img", "hr", "meta", "link", "input", "base", "col", "area", "wbr", "source"}


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, skipping)
        self.in_pre = 0

    @property
    def skipping(self) -> bool:
        return bool(self.stack) and self.stack[-1][1]

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            if tag == "br" and not self.skipping:
                self.out.append("\n")
            return
        cls = " ".join(v or "" for k, v in attrs if k in ("class", "id", "role"))
        skip = self.skipping or tag in _SKIP_TAGS or bool(_NAV_CLASS.search(cls))
        self.stack.append((tag, skip))
        if tag == "pre" and not skip:
            self.in_pre += 1
        if tag in _BLOCK_TAGS and not skip:
            self.out.append("\n\n")

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):  # tolerate unclosed tags
            if self.stack[i][0] == tag:
                skipped = self.stack[i][1]
                del self.stack[i:]
                if tag == "pre" and not skipped:
                    self.in_pre = max(0, self.in_pre - 1)
                if tag in _BLOCK_TAGS and not skipped:
                    self.out.append("\n\n")
                return

    def handle_data(self, data):
        if self.skipping:
            return
        if self.in_pre:
            # keep code lines: mark line breaks so reflow leaves them apart
            self.out.append(data.replace("\n", "\ue000"))
        else:
            self.out.append(data.replace("\n", " "))


def html_to_text(html: str) -> str:
    """Visible prose of an HTML page, navigation and boilerplate dropped, paragraphs reflowed."""
    parser = _TextCollector()
    parser.feed(html)
    parser.close()
    return reflow("".join(parser.out)).replace("\ue000", "\n")


_MALLARD_SKIP = {"info", "credit", "license", "desc", "link", "media"}
_MALLARD_BLOCK = {"p", "title", "item", "code", "screen", "note", "td", "section", "steps"}


def mallard_to_text(path: str | Path) -> str:
    """Text of a Mallard ``.page`` (GNOME help), its ``<info>`` block dropped."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return ""
    out: list[str] = []

    def walk(el: ET.Element) -> None:
        tag = el.tag.rsplit("}", 1)[-1]
        if tag in _MALLARD_SKIP:
            if el.tail:
                out.append(el.tail)
            return
        if tag in _MALLARD_BLOCK:
            out.append("\n\n")
        if el.text:
            out.append(el.text)
        for child in el:
            walk(child)
        if tag in _MALLARD_BLOCK:
            out.append("\n\n")
        if el.tail:
            out.append(el.tail)

    walk(root)
    return reflow("".join(out))


def split_long(text: str, max_chars: int = 4000) -> list[str]:
    """Cut a long document at paragraph breaks into pieces of at most about ``max_chars``."""
    pieces, cur = [], ""
    for para in text.split("\n\n"):
        if cur and len(cur) + len(para) > max_chars:
            pieces.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    if cur:
        pieces.append(cur)
    return pieces


def files_under(root: str | Path, patterns: Iterable[str], limit: int) -> list[Path]:
    """The first ``limit`` files under ``root`` matching ``patterns``, sorted."""
    base = Path(root)
    found = sorted({p for pat in patterns for p in base.glob(pat) if p.is_file()})
    return found[:limit]


def pieces(texts: Iterable[str]) -> list[str]:
    """``texts`` cut at paragraphs into documents of about 4k characters; short ones dropped."""
    return [p for t in texts for p in split_long(t) if len(p) >= MIN_CHARS]
