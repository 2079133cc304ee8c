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
import importlib
import inspect
import json
import random
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from saelora_core.models.chat import prompt_text
from saelora_core.sae.debian import debian_sources, package_versions

SEED_DIR = Path(__file__).resolve().parents[2] / "data" / "seed"


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


def _qa(q: str, a: str) -> str:
    return f"{prompt_text(q.strip(), 'qa')} {a.strip()}"


def seed_documents(seed_dir: Path = SEED_DIR) -> list[str]:
    docs = []
    for path in sorted(seed_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            docs.append(_qa(row["prompt"], row["response"]))
            if row.get("response_fr"):
                docs.append(_qa(row["prompt"], row["response_fr"]))
    return docs


def math_documents(n: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        kind, fr = rng.randrange(5), i % 3 == 0
        if kind == 0:
            q, ans = (
                (f"Combien font {a} plus {b} ?", f"{a} plus {b} font {a + b}.")
                if fr
                else (f"What is {a} plus {b}?", f"{a} plus {b} equals {a + b}.")
            )
        elif kind == 1:
            q, ans = (
                (f"Combien font {a} fois {b} ?", f"{a} fois {b} font {a * b}.")
                if fr
                else (f"What is {a} times {b}?", f"{a} times {b} is {a * b}.")
            )
        elif kind == 2:
            c = a * b + rng.randint(1, 50)
            q, ans = (
                (
                    f"Résous {a}x + {c - a * b} = {c}.",
                    f"On soustrait {c - a * b} des deux côtés : {a}x = {a * b}. Donc x = {b}.",
                )
                if fr
                else (
                    f"Solve {a}x + {c - a * b} = {c}.",
                    f"Subtract {c - a * b} from both sides: {a}x = {a * b}, so x = {b}.",
                )
            )
        elif kind == 3:
            p = rng.choice([5, 10, 15, 20, 25, 50])
            v = rng.randint(1, 40) * 20
            q, ans = (
                (
                    f"Quel est {p} % de {v} ?",
                    f"{p} % de {v} vaut {v * p // 100}, car {v} × {p}/100 = {v * p // 100}.",
                )
                if fr
                else (
                    f"What is {p}% of {v}?",
                    f"{p}% of {v} is {v * p // 100}, because {v} × {p}/100 = {v * p // 100}.",
                )
            )
        else:
            q, ans = (
                (
                    f"Quelle est l'aire d'un rectangle de {a} cm sur {b} cm ?",
                    f"L'aire est la longueur fois la largeur : {a} × {b} = {a * b} cm².",
                )
                if fr
                else (
                    f"What is the area of a {a} cm by {b} cm rectangle?",
                    f"Area is length times width: {a} × {b} = {a * b} square centimetres.",
                )
            )
        docs.append(_qa(q, ans))
    return docs


def dialogue_documents(
    languages: Iterable[str] = ("english", "french", "spanish", "german", "italian", "portuguese"),
) -> list[str]:
    import chatterbot_corpus
    import yaml

    root = Path(chatterbot_corpus.__file__).parent / "data"
    docs = []
    for lang in languages:
        for path in sorted((root / lang).glob("*.yml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            for conv in data.get("conversations") or []:
                turns = [str(t) for t in conv if t]
                pairs = [_qa(q, a) for q, a in zip(turns[::2], turns[1::2], strict=False)]
                if pairs:
                    docs.append("\n\n".join(pairs))
    return docs


_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtledemo", "test", "turtle", "lib2to3"}


def _module_docs(mod) -> str:
    parts = [inspect.getdoc(mod) or ""]
    for _, obj in inspect.getmembers(mod):
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and getattr(
            obj, "__module__", ""
        ) == mod.__name__:
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 80:
                parts.append(doc)
    return "\n\n".join(p for p in parts if p)


def docstring_documents(
    packages: Iterable[str] = ("numpy", "torch", "pandas"), max_modules: int = 4000
) -> list[str]:
    import pkgutil

    names = sorted(m for m in sys.stdlib_module_names if not m.startswith("_") and m not in _SKIP)
    for pkg in packages:
        try:
            mod = importlib.import_module(pkg)
        except ImportError:
            continue
        names.append(pkg)
        names += sorted(
            m.name
            for m in pkgutil.walk_packages(mod.__path__, pkg + ".")
            if "test" not in m.name and "._" not in m.name
        )
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names[:max_modules]:
            try:
                mod = importlib.import_module(name)
            except BaseException:  # some modules exit or need optional dependencies
                continue
            text = _module_docs(mod)
            if len(text) > 200:
                docs.append(text)
    return docs


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


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def is_heldout(text: str, frac: float) -> bool:
    """The train/held-out split: a fixed function of the text alone."""
    return int(text_hash(text)[:8], 16) / 0xFFFFFFFF < frac


def normalize(text: str) -> str:
    """Whitespace collapsed per line, blank-line runs cut to one, NFC; stripped."""
    import unicodedata

    lines = [" ".join(line.split()) if line.strip() else "" for line in text.splitlines()]
    out = "\n".join(lines)
    while "\n\n\n" in out:
        out = out.replace("\n\n\n", "\n\n")
    return unicodedata.normalize("NFC", out).strip()


def shingles(text: str, n: int = 5) -> set[bytes]:
    words = text.lower().split()
    if len(words) <= n:
        return {" ".join(words).encode()}
    return {" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)}


def near_duplicates(docs: list[str], threshold: float = 0.8, num_perm: int = 64) -> set[int]:
    """Indices of documents whose estimated Jaccard similarity (word 5-grams, MinHash LSH) to an
    earlier document reaches ``threshold``; the first of each group is kept."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dup: set[int] = set()
    for i, doc in enumerate(docs):
        mh = MinHash(num_perm=num_perm, seed=1)
        mh.update_batch(list(shingles(doc)))
        if lsh.query(mh):
            dup.add(i)
        else:
            lsh.insert(str(i), mh)
    return dup


def identify_language(texts: list[str]) -> list[str]:
    """ISO 639-1 code per text (``py3langid``, on its first 2,000 characters)."""
    import py3langid

    return [py3langid.classify(t[:2000])[0] for t in texts]


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
