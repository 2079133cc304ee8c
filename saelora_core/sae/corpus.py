"""The SAE corpus: broad, multilingual text that needs no hub, mixed by stated weights.

Sources (each a list of documents, see :class:`CorpusSource`):

- the project's own: ``seed`` (the offline seed set as question-and-answer turns), ``math``
  (templated arithmetic in English and French), ``dialogue`` (the PyPI package
  ``chatterbot-corpus``) and ``docstrings`` (the Python standard library, numpy, torch, pandas);
- Debian's packages (:mod:`debian`): man pages in eight languages, the Debian reference and FAQ,
  the Python, PostgreSQL and SQLite manuals, GNOME and LibreOffice help in several languages,
  GCIDE, WordNet, the Jargon File, fortune cookies and standard-library source code.

:func:`build_corpus` removes exact and near duplicates (MinHash over word 5-grams, across all
sources), identifies each document's language (``py3langid``), splits train and held-out by a
hash of the text (so the split does not depend on order or on the other documents), then mixes
the train split to stated token shares: a source with more text than its share is subsampled in
hash order, one with less is repeated (at most ``max_repeat`` times). The manifest records, per
source, its Debian packages and their versions, documents, duplicates, tokens and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from saelora_core.sae.debian import debian_sources, package_versions
from saelora_core.sae.project_sources import (
    dialogue_documents,
    docstring_documents,
    math_documents,
    seed_documents,
)
from saelora_core.sae.text_hygiene import (
    identify_language,
    is_heldout,
    near_duplicates,
    normalize,
    text_hash,
)


@dataclass(frozen=True)
class CorpusSource:
    """One source of the corpus and its place in the mix."""

    name: str
    build: Callable[[], list[str]]
    genre: str = "prose"
    """``prose``, ``dialogue``, ``technical``, ``code`` or ``qa``."""
    weight: float | None = None
    """Share of the train tokens (relative to the other sources' weights) when the corpus is
    built to a token budget; ``None`` keeps every train document ``repeat`` times."""
    repeat: int = 1
    packages: tuple[str, ...] = ()
    """Debian packages the documents come from (their versions go in the manifest)."""
    max_repeat: int = 8


@dataclass
class CorpusResult:
    train_path: Path
    heldout_path: Path
    manifest: dict = field(default_factory=dict)


PROJECT_SOURCES = [
    CorpusSource("seed", seed_documents, "qa", weight=2.0),
    CorpusSource("math", math_documents, "qa", weight=3.0),
    CorpusSource("dialogue", dialogue_documents, "dialogue", weight=4.0),
    CorpusSource("docstrings", docstring_documents, "technical", weight=3.0),
]

DEBIAN_WEIGHTS = {
    "man-en": 5.0, "man-fr": 3.0, "man-de": 3.0, "man-es": 2.0, "man-it": 1.0, "man-pt_BR": 1.0,
    "man-nl": 0.5, "man-pl": 1.0,
    "debian-reference-en": 2.0, "debian-reference-fr": 2.0, "debian-reference-de": 2.0,
    "debian-reference-es": 2.0, "debian-reference-it": 1.5, "debian-faq": 1.0,
    "debian-dev-guides": 1.0, "python-docs": 6.0, "postgresql-docs": 4.0, "sqlite-docs": 2.0,
    "gnome-help-C": 2.0, "gnome-help-fr": 2.0, "gnome-help-de": 2.0, "gnome-help-es": 2.0,
    "gnome-help-it": 1.0, "gnome-help-pt_BR": 1.0,
    "libreoffice-help-en-US": 2.0, "libreoffice-help-fr": 2.0, "libreoffice-help-de": 2.0,
    "libreoffice-help-es": 2.0,
    "gcide": 2.5, "wordnet": 2.0, "jargon": 2.0,
    "fortunes-en": 4.0, "fortunes-de": 2.0, "fortunes-es": 1.0, "fortunes-it": 1.0,
    "fortunes-pt": 0.5, "python-source": 8.0,
}  # fmt: skip
"""Relative token shares of the Debian sources. With the project's sources this gives about 37 %
prose, 33 % technical, 19 % dialogue and question-answer, 8 % code (the manifest records the
shares reached)."""


def default_sources() -> list[CorpusSource]:
    """The default SAE corpus: the project's sources plus Debian's, with their weights."""
    deb = [
        CorpusSource(d.name, d.build, d.genre, weight=DEBIAN_WEIGHTS[d.name], packages=d.packages)
        for d in debian_sources()
    ]
    return PROJECT_SOURCES + deb


def as_sources(
    sources: list[CorpusSource] | dict[str, tuple[Callable[[], list[str]], int]],
) -> list[CorpusSource]:
    """Accept ``{name: (builder, repeat)}`` as well as a list of :class:`CorpusSource`."""
    if isinstance(sources, dict):
        return [CorpusSource(n, b, repeat=r) for n, (b, r) in sources.items()]
    return list(sources)


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    tmp = path.with_suffix(".tmp")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass
class _Pool:
    """The unique documents of one source, after deduplication."""

    src: CorpusSource
    docs: list[str]
    langs: list[str]
    exact_dups: int
    near_dups: int


def _dedupe(sources: list[CorpusSource], threshold: float) -> list[_Pool]:
    seen: set[str] = set()
    raw: list[tuple[CorpusSource, list[str], int]] = []
    for src in sources:
        docs, exact = [], 0
        for d in sorted(normalize(t) for t in src.build()):
            if not d:
                continue
            h = text_hash(d)
            if h in seen:
                exact += 1
                continue
            seen.add(h)
            docs.append(d)
        raw.append((src, docs, exact))
    flat = [d for _, docs, _ in raw for d in docs]
    near = near_duplicates(flat, threshold) if threshold < 1 else set()
    langs = identify_language(flat)
    pools, i = [], 0
    for src, docs, exact in raw:
        idx = range(i, i + len(docs))
        keep = [j for j in idx if j not in near]
        pools.append(
            _Pool(
                src, [flat[j] for j in keep], [langs[j] for j in keep], exact, len(docs) - len(keep)
            )
        )
        i += len(docs)
    return pools


def _mix(pool: _Pool, train_idx: list[int], sizes: list[int], target: float | None) -> list[int]:
    """Train document indices in mix order: ``repeat`` copies, or enough (in hash order,
    repeated up to ``max_repeat``) to reach ``target`` size units."""
    if target is None:
        return train_idx * pool.src.repeat
    ordered = sorted(train_idx, key=lambda j: text_hash(pool.docs[j]))
    total = sum(sizes[j] for j in ordered)
    if total == 0:
        return []
    full = min(int(target // total), pool.src.max_repeat)
    out = ordered * full
    if full < pool.src.max_repeat:
        acc = 0
        for j in ordered:
            if acc >= target - full * total:
                break
            out.append(j)
            acc += sizes[j]
    return out


def build_corpus(
    out_dir: str | Path,
    *,
    sources: list[CorpusSource] | dict[str, tuple[Callable[[], list[str]], int]] | None = None,
    heldout_frac: float = 0.03,
    seed: int = 0,
    tokenizer=None,
    train_tokens: int | None = None,
    near_dup_threshold: float = 0.8,
) -> CorpusResult:
    """Build ``train.jsonl`` / ``heldout.jsonl`` (rows ``{"text", "source", "genre", "lang"}``)
    and ``manifest.json``.

    With ``train_tokens``, sources with a ``weight`` are mixed to that many train tokens in
    proportion to their weights (tokens counted with ``tokenizer``, or characters / 4 without
    one); otherwise each train document appears ``repeat`` times. The same sources, seed and
    package versions give byte-identical files (the manifest records their SHA-256).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    srcs = as_sources(sources if sources is not None else default_sources())
    names = [s.name for s in srcs]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique; got {names}")
    pools = _dedupe(srcs, near_dup_threshold)
    weights = [p.src.weight for p in pools]
    if train_tokens is not None and any(w is None for w in weights):
        missing = [p.src.name for p in pools if p.src.weight is None]
        raise ValueError(f"a token budget needs a weight on every source; none on {missing}")
    total_w = sum(w or 0 for w in weights) or 1.0

    def size(texts: list[str]) -> list[int]:
        if tokenizer is None:
            return [max(1, len(t) // 4) for t in texts]
        return [len(ids) for ids in tokenizer(texts)["input_ids"]] if texts else []

    train, held, stats = [], [], {}
    for pool in pools:
        sizes = size(pool.docs)
        is_held = [is_heldout(d, heldout_frac) for d in pool.docs]
        tr = [j for j, h in enumerate(is_held) if not h]
        he = [j for j, h in enumerate(is_held) if h]
        target = None if train_tokens is None else train_tokens * (pool.src.weight or 0) / total_w
        mixed = _mix(pool, tr, sizes, target)
        row = {"source": pool.src.name, "genre": pool.src.genre}
        train += [{"text": pool.docs[j], **row, "lang": pool.langs[j]} for j in mixed]
        held += [{"text": pool.docs[j], **row, "lang": pool.langs[j]} for j in he]
        langs: dict[str, int] = {}
        for lang in pool.langs:
            langs[lang] = langs.get(lang, 0) + 1
        stats[pool.src.name] = {
            "genre": pool.src.genre,
            "packages": package_versions(pool.src.packages) if pool.src.packages else {},
            "documents": len(pool.docs),
            "exact_duplicates_removed": pool.exact_dups,
            "near_duplicates_removed": pool.near_dups,
            "train_documents": len(tr),
            "heldout_documents": len(he),
            "languages": dict(sorted(langs.items(), key=lambda kv: -kv[1])),
            "weight": pool.src.weight,
            "repeat": pool.src.repeat if train_tokens is None else None,
            "train_rows_after_mix": len(mixed),
            ("tokens" if tokenizer is not None else "size_units"): sum(sizes),
            ("train_tokens_after_mix" if tokenizer is not None else "train_units_after_mix"): sum(
                sizes[j] for j in mixed
            ),
            "heldout_tokens" if tokenizer is not None else "heldout_units": sum(
                sizes[j] for j in he
            ),
            "sha256": hashlib.sha256("\0".join(pool.docs).encode()).hexdigest(),
        }
    random.Random(seed).shuffle(train)
    unit = "train_tokens_after_mix" if tokenizer is not None else "train_units_after_mix"
    total = sum(s[unit] for s in stats.values()) or 1
    shares: dict[str, dict[str, float]] = {"genre": {}, "lang": {}}
    for s in stats.values():
        shares["genre"][s["genre"]] = shares["genre"].get(s["genre"], 0) + s[unit] / total
    for r in train:
        shares["lang"][r["lang"]] = shares["lang"].get(r["lang"], 0) + 1 / max(1, len(train))
    manifest = {
        "seed": seed,
        "heldout_frac": heldout_frac,
        "near_dup_threshold": near_dup_threshold,
        "train_tokens_target": train_tokens,
        "sources": stats,
        "genre_token_shares": {k: round(v, 4) for k, v in sorted(shares["genre"].items())},
        "language_row_shares": {
            k: round(v, 4) for k, v in sorted(shares["lang"].items(), key=lambda kv: -kv[1])[:20]
        },
        "train_sha256": _write_jsonl(out / "train.jsonl", train),
        "heldout_sha256": _write_jsonl(out / "heldout.jsonl", held),
        "python": sys.version.split()[0],
        "library_versions": {
            p: getattr(sys.modules.get(p), "__version__", None)
            for p in ("numpy", "torch", "pandas", "py3langid", "datasketch")
        },
    }
    if tokenizer is not None:
        manifest["train_tokens"] = sum(s["train_tokens_after_mix"] for s in stats.values())
    from saelora_core.io.atomic import atomic_write_json

    atomic_write_json(out / "manifest.json", manifest)
    return CorpusResult(out / "train.jsonl", out / "heldout.jsonl", manifest)


DEFAULT_TRAIN_TOKENS = 16_000_000
"""Train tokens of the default corpus: room for a 12M-token SAE run without repeating a mix."""


def build_default_corpus(
    out_dir: str | Path, tokenizer, train_tokens: int = DEFAULT_TRAIN_TOKENS
) -> CorpusResult:
    """The default SAE corpus (``saelora sae corpus``); needs the Debian packages that
    ``make sae-corpus`` installs, and refuses to build without them."""
    srcs = default_sources()
    missing = sorted(
        pkg
        for s in srcs
        for pkg, version in package_versions(s.packages).items()
        if version is None
    )
    if missing:
        raise RuntimeError(
            "the SAE corpus reads text from Debian packages that are not installed: "
            + ", ".join(missing)
            + ". Install them with `make sae-corpus` (or apt-get install them), then re-run."
        )
    return build_corpus(out_dir, sources=srcs, tokenizer=tokenizer, train_tokens=train_tokens)


def corpus_stats_json(result: CorpusResult) -> str:
    return json.dumps(asdict(result), default=str, indent=1)
