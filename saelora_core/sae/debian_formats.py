"""Readers for the plain-text formats of Debian's data packages: fortune files, dictd
databases (GCIDE), WordNet's data files, the Jargon File, and Python source as code."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable
from pathlib import Path

from saelora_core.sae.text_extract import MIN_CHARS, files_under, pieces, reflow

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def fortune_documents(paths: Iterable[Path]) -> list[str]:
    """Cookies (``%``-separated) of fortune files, ten to a document; a UTF-8 ``.u8`` twin is
    read in place of a legacy-encoded file."""
    docs = []
    for path in paths:
        u8 = path.with_name(path.name + ".u8")
        raw = (u8 if u8.exists() else path).read_bytes()
        text = raw.decode("utf-8", errors="replace")
        cookies = [reflow(c) for c in re.split(r"\n%\n", text) if c.strip()]
        for i in range(0, len(cookies), 10):
            docs.append("\n\n".join(cookies[i : i + 10]))
    return [d for d in docs if len(d) >= MIN_CHARS]


def dictd_entries(
    index: str | Path, data: str | Path, every: int = 8, limit: int = 20000
) -> list[str]:
    """Dictionary entries of a dictd database (index + dictzip data), one in ``every``,
    grouped twenty to a document."""
    with gzip.open(data, "rb") as fh:
        blob = fh.read()

    def b64(s: str) -> int:  # dictd's offsets: base64 digits, most significant first
        n = 0
        for ch in s:
            n = n * 64 + _B64.index(ch)
        return n

    lines = Path(index).read_text(encoding="utf-8", errors="replace").splitlines()
    entries = []
    for line in lines[::every][:limit]:
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database"):
            continue
        off, size = b64(parts[1]), b64(parts[2])
        text = blob[off : off + size].decode("utf-8", errors="replace")
        entries.append(reflow(re.sub(r"[<>{}]", "", text)))
    return [
        "\n\n".join(entries[i : i + 20])
        for i in range(0, len(entries), 20)
        if sum(map(len, entries[i : i + 20])) >= MIN_CHARS
    ]


def wordnet_glosses(root: str | Path = "/usr/share/wordnet", per_doc: int = 40) -> list[str]:
    """``word (pos): gloss`` lines from WordNet's data files, forty to a document."""
    glosses = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = Path(root) / f"data.{pos}"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue  # licence header lines start with spaces
            head, gloss = line.split("|", 1)
            fields = head.split()
            if len(fields) < 5:
                continue
            n_words = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            glosses.append(f"{', '.join(words)} ({pos}): {gloss.strip()}")
    return [
        "\n".join(glosses[i : i + per_doc]) for i in range(0, len(glosses), per_doc * 5)
    ]  # one block in five: WordNet alone would outweigh every other prose source


def jargon_entries(path: str | Path = "/usr/share/doc/jargon-text/jargon.txt.gz") -> list[str]:
    """The Jargon File's entries (``:Entry: text``), reflowed, in documents of ~4k chars."""
    p = Path(path)
    if not p.exists():
        return []
    with gzip.open(p, "rt", encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    paras = [reflow(b) for b in re.split(r"\n\s*\n", text)]
    body = [q for q in paras if len(q) > 80]  # drop the entry index and headings
    return pieces(["\n\n".join(body)])


def python_source(root: str | Path = "/usr/lib/python3.11", limit: int = 400) -> list[str]:
    """Standard-library Python modules as code; leading licence comments removed."""
    docs = []
    for f in files_under(root, ["*.py", "*/*.py"], limit * 3):
        if any(part in ("test", "tests", "idlelib", "lib2to3", "turtledemo") for part in f.parts):
            continue
        code = f.read_text(encoding="utf-8", errors="replace")
        lines = code.splitlines()
        while lines and (lines[0].startswith("#") or not lines[0].strip()):
            lines.pop(0)  # shebang, licence and copyright header
        code = "\n".join(lines)
        docs += [c for c in _code_chunks(code) if len(c) >= MIN_CHARS]
        if len(docs) >= limit * 4:
            break
    return docs


def _code_chunks(code: str, max_chars: int = 3000) -> list[str]:
    """Cut source at top-level definitions into pieces of about ``max_chars``."""
    blocks = re.split(r"\n(?=(?:def |class |@))", code)
    out, cur = [], ""
    for b in blocks:
        if cur and len(cur) + len(b) > max_chars:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n{b}" if cur else b
    if cur:
        out.append(cur)
    return out
