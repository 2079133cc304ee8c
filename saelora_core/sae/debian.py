"""Corpus sources that Debian packages ship: man pages, manuals, help, dictionaries, quotes, code.

Each source reads files that its packages installed (``make sae`` installs them; ``apt-get`` is
never run from here) and returns documents as plain text, through the parsers in
:mod:`text_extract`. File lists are sorted and capped, so the same installed versions give the
same documents. :func:`package_versions` records which versions were read, for the manifest.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from saelora_core.sae.text_extract import (
    html_to_text,
    mallard_to_text,
    man_to_text,
    reflow,
    split_long,
)

MIN_CHARS = 200
"""Documents shorter than this (after extraction) are dropped: index pages, stubs."""


@dataclass(frozen=True)
class DebianSource:
    """A named source of documents, with the Debian packages it reads and its genre."""

    name: str
    genre: str
    """``prose``, ``dialogue``, ``technical`` or ``code``."""
    packages: tuple[str, ...]
    build: Callable[[], list[str]]


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each Debian package (``None`` if it is not installed)."""
    out: dict[str, str | None] = {}
    for pkg in packages:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Status}\t${Version}", pkg],
            capture_output=True,
            text=True,
            check=False,
        )
        status, _, version = res.stdout.partition("\t")
        out[pkg] = version if res.returncode == 0 and "installed" in status.split() else None
    return out


def package_files(packages: Iterable[str]) -> list[Path]:
    """Regular files that the given installed Debian packages own (``dpkg -L``), sorted."""
    files: set[Path] = set()
    for pkg in packages:
        res = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=False)
        if res.returncode == 0:
            files |= {Path(line) for line in res.stdout.splitlines() if line.strip()}
    return sorted(f for f in files if f.is_file())


def _files(root: str | Path, patterns: Iterable[str], limit: int) -> list[Path]:
    base = Path(root)
    found = sorted({p for pat in patterns for p in base.glob(pat) if p.is_file()})
    return found[:limit]


def _pieces(texts: Iterable[str]) -> list[str]:
    return [p for t in texts for p in split_long(t) if len(p) >= MIN_CHARS]


def man_pages(packages: Iterable[str], lang: str | None, limit: int = 1500) -> list[str]:
    """Prose of the man pages in sections 1, 5, 7 and 8 that ``packages`` own, in ``lang``
    (``None``: English, the untranslated ``/usr/share/man/manN`` pages)."""
    base = "/usr/share/man/" if lang is None else f"/usr/share/man/{lang}/"
    pattern = re.compile(re.escape(base) + r"man[1578]/")
    files = [f for f in package_files(packages) if pattern.match(str(f))][:limit]
    return _pieces(man_to_text(f) for f in files)


def html_pages(root: str | Path, patterns: Iterable[str], limit: int = 2000) -> list[str]:
    """Text of HTML pages under ``root`` (the encoding read from bytes, UTF-8 first)."""
    texts = []
    for f in _files(root, patterns, limit):
        raw = f.read_bytes()
        try:
            html = raw.decode("utf-8")
        except UnicodeDecodeError:
            html = raw.decode("latin-1")
        texts.append(html_to_text(html))
    return _pieces(texts)


def mallard_pages(root: str | Path, limit: int = 2000) -> list[str]:
    return _pieces(mallard_to_text(f) for f in _files(root, ["*/*.page"], limit))


def fortunes(packages: Iterable[str], limit: int = 200) -> list[str]:
    """Fortune cookies of ``packages``: ASCII art and the offensive (``off/``) files skipped."""
    names = [
        p
        for p in package_files(packages)
        if "/games/fortunes/" in str(p)
        and p.suffix not in (".dat", ".u8")
        and "art" not in p.name
        and "/off/" not in str(p)
        and not p.is_symlink()
    ][:limit]
    return fortune_documents(names)


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
    return _pieces(["\n\n".join(body)])


def python_source(root: str | Path = "/usr/lib/python3.11", limit: int = 400) -> list[str]:
    """Standard-library Python modules as code; leading licence comments removed."""
    docs = []
    for f in _files(root, ["*.py", "*/*.py"], limit * 3):
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


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MAN_EN_PACKAGES = (
    "manpages", "coreutils", "util-linux", "bash", "findutils", "grep", "sed", "tar", "gzip",
    "xz-utils", "diffutils", "procps", "iproute2", "openssh-client", "git", "make", "apt", "dpkg",
    "man-db", "less", "curl", "wget", "vim", "mandoc", "groff-base",
)  # fmt: skip
"""English man pages come from these packages only (not from whatever else is installed)."""
_LO = "/usr/share/libreoffice/help"
_REF = "/usr/share/debian-reference"


def debian_sources() -> list[DebianSource]:
    """The Debian part of the SAE corpus (the weights live in :mod:`corpus`)."""
    man_langs = {"fr": "fr", "de": "de", "es": "es", "it": "it", "pt_BR": "pt-br", "nl": "nl"}
    man_langs["pl"] = "pl"
    srcs = [
        DebianSource(
            "man-en", "technical", MAN_EN_PACKAGES, lambda: man_pages(MAN_EN_PACKAGES, None)
        ),
        *[
            DebianSource(
                f"man-{lang}",
                "technical",
                (f"manpages-{pkg}",),
                lambda lang=lang, pkg=pkg: man_pages([f"manpages-{pkg}"], lang),
            )
            for lang, pkg in man_langs.items()
        ],
        *[
            DebianSource(
                f"debian-reference-{lang}",
                "prose",
                (f"debian-reference-{lang}",),
                lambda lang=lang: html_pages(_REF, [f"*.{lang}.html"]),
            )
            for lang in ("en", "fr", "de", "es", "it")
        ],
        DebianSource(
            "debian-faq",
            "prose",
            ("debian-faq",),
            lambda: html_pages("/usr/share/doc/debian/FAQ", ["*.html"]),
        ),
        DebianSource(
            "debian-dev-guides",
            "technical",
            ("maint-guide", "developers-reference"),
            lambda: (
                html_pages("/usr/share/doc/maint-guide/html", ["*.en.html"])
                + html_pages("/usr/share/doc/developers-reference/docs", ["*.html"])
            ),
        ),
        DebianSource(
            "python-docs",
            "technical",
            ("python3.11-doc",),
            lambda: html_pages("/usr/share/doc/python3.11/html", ["*/*.html", "*/*/*.html"]),
        ),
        DebianSource(
            "postgresql-docs",
            "technical",
            ("postgresql-doc-15",),
            lambda: html_pages("/usr/share/doc/postgresql-doc-15/html", ["*.html"]),
        ),
        DebianSource(
            "sqlite-docs",
            "technical",
            ("sqlite3-doc",),
            lambda: html_pages("/usr/share/doc/sqlite3", ["*.html", "*/*.html"]),
        ),
        *[
            DebianSource(
                f"gnome-help-{lang}",
                "prose",
                ("gnome-user-docs",),
                lambda lang=lang: mallard_pages(f"/usr/share/help/{lang}"),
            )
            for lang in ("C", "fr", "de", "es", "it", "pt_BR")
        ],
        *[
            DebianSource(
                f"libreoffice-help-{lang}",
                "prose",
                (f"libreoffice-help-{pkg}",),
                lambda lang=lang: html_pages(f"{_LO}/{lang}/text", ["*/*.html", "*/*/*.html"]),
            )
            for lang, pkg in (("en-US", "en-us"), ("fr", "fr"), ("de", "de"), ("es", "es"))
        ],
        DebianSource(
            "gcide",
            "prose",
            ("dict-gcide",),
            lambda: dictd_entries("/usr/share/dictd/gcide.index", "/usr/share/dictd/gcide.dict.dz"),
        ),
        DebianSource("wordnet", "prose", ("wordnet-base",), wordnet_glosses),
        DebianSource("jargon", "prose", ("jargon-text",), jargon_entries),
        DebianSource(
            "fortunes-en",
            "dialogue",
            ("fortunes", "fortunes-min"),
            lambda: fortunes(["fortunes", "fortunes-min"]),
        ),
        DebianSource(
            "fortunes-pt",
            "dialogue",
            ("fortunes-br",),
            lambda: fortunes(["fortunes-br"]),
        ),
        *[
            DebianSource(
                f"fortunes-{lang}",
                "dialogue",
                (f"fortunes-{pkg}",),
                lambda pkg=pkg: fortunes([f"fortunes-{pkg}"]),
            )
            for lang, pkg in (("de", "de"), ("es", "es"), ("it", "it"))
        ],
        DebianSource("python-source", "code", ("libpython3.11-stdlib",), python_source),
    ]
    return srcs
