"""Corpus sources that Debian packages ship: man pages, manuals, help, dictionaries, quotes, code.

Each source reads files that its packages installed (``make sae`` installs them; ``apt-get`` is
never run from here) and returns documents as plain text, through the parsers in
:mod:`text_extract`. File lists are sorted and capped, so the same installed versions give the
same documents. :func:`package_versions` records which versions were read, for the manifest.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from saelora_core.sae.debian_formats import (
    dictd_entries,
    fortune_documents,
    jargon_entries,
    python_source,
    wordnet_glosses,
)
from saelora_core.sae.text_extract import (
    files_under,
    html_to_text,
    mallard_to_text,
    man_to_text,
    pieces,
)


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


def packagefiles_under(packages: Iterable[str]) -> list[Path]:
    """Regular files that the given installed Debian packages own (``dpkg -L``), sorted."""
    files: set[Path] = set()
    for pkg in packages:
        res = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True, check=False)
        if res.returncode == 0:
            files |= {Path(line) for line in res.stdout.splitlines() if line.strip()}
    return sorted(f for f in files if f.is_file())


def man_pages(packages: Iterable[str], lang: str | None, limit: int = 1500) -> list[str]:
    """Prose of the man pages in sections 1, 5, 7 and 8 that ``packages`` own, in ``lang``
    (``None``: English, the untranslated ``/usr/share/man/manN`` pages)."""
    base = "/usr/share/man/" if lang is None else f"/usr/share/man/{lang}/"
    pattern = re.compile(re.escape(base) + r"man[1578]/")
    files = [f for f in packagefiles_under(packages) if pattern.match(str(f))][:limit]
    return pieces(man_to_text(f) for f in files)


def html_pages(root: str | Path, patterns: Iterable[str], limit: int = 2000) -> list[str]:
    """Text of HTML pages under ``root`` (the encoding read from bytes, UTF-8 first)."""
    texts = []
    for f in files_under(root, patterns, limit):
        raw = f.read_bytes()
        try:
            html = raw.decode("utf-8")
        except UnicodeDecodeError:
            html = raw.decode("latin-1")
        texts.append(html_to_text(html))
    return pieces(texts)


def mallard_pages(root: str | Path, limit: int = 2000) -> list[str]:
    return pieces(mallard_to_text(f) for f in files_under(root, ["*/*.page"], limit))


def fortunes(packages: Iterable[str], limit: int = 200) -> list[str]:
    """Fortune cookies of ``packages``: ASCII art and the offensive (``off/``) files skipped."""
    names = [
        p
        for p in packagefiles_under(packages)
        if "/games/fortunes/" in str(p)
        and p.suffix not in (".dat", ".u8")
        and "art" not in p.name
        and "/off/" not in str(p)
        and not p.is_symlink()
    ][:limit]
    return fortune_documents(names)


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
