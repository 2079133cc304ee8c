"""A deterministic text corpus for training the default SAE, built from text that needs no hub.

Sources (each a list of documents):

- ``seed``: the project's offline seed set (``data/seed/*.jsonl``) as question-and-answer turns in
  the default preset's format, and every math row again with its French response.
- ``math``: templated arithmetic, percentage and equation questions with worked answers, in English
  and French (seeded, so the same every time).
- ``dialogue``: the PyPI package ``chatterbot-corpus`` (English, French, Spanish, German, Italian,
  Portuguese), pairs of consecutive lines as question-and-answer turns.
- ``prose``: docstrings of the Python standard library and of installed libraries (numpy, torch,
  pandas), one document per module. Exact content depends on those versions, which the manifest
  records.

Documents are split into train and held-out sets by a hash of their text (so the split does not
depend on order), then the small chat-like sources are repeated ``upsample`` times and the train
set is shuffled with a fixed seed.
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

SEED_DIR = Path(__file__).resolve().parents[2] / "data" / "seed"


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


def prose_documents(
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


DEFAULT_SOURCES: dict[str, tuple[Callable[[], list[str]], int]] = {
    "seed": (seed_documents, 6),
    "math": (math_documents, 2),
    "dialogue": (dialogue_documents, 3),
    "prose": (prose_documents, 1),
}
"""name -> (document builder, how many times its train documents repeat)."""


def _heldout(text: str, frac: float) -> bool:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < frac


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    tmp = path.with_suffix(".tmp")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.write_text(data, encoding="utf-8")
    tmp.replace(path)
    return hashlib.sha256(data.encode()).hexdigest()


def build_corpus(
    out_dir: str | Path,
    *,
    sources: dict[str, tuple[Callable[[], list[str]], int]] | None = None,
    heldout_frac: float = 0.03,
    seed: int = 0,
    tokenizer=None,
) -> CorpusResult:
    """Build ``train.jsonl`` / ``heldout.jsonl`` (rows ``{"text", "source"}``) and ``manifest.json``.

    The same sources, seed and library versions give byte-identical files (the manifest records
    their SHA-256). With a tokenizer, the manifest also counts tokens per source.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = sources if sources is not None else DEFAULT_SOURCES
    train, held, stats = [], [], {}
    for name, (builder, repeat) in sources.items():
        docs = sorted(set(builder()))
        tr = [d for d in docs if not _heldout(d, heldout_frac)]
        he = [d for d in docs if _heldout(d, heldout_frac)]
        train += [{"text": d, "source": name} for d in tr] * repeat
        held += [{"text": d, "source": name} for d in he]
        s = {
            "documents": len(docs),
            "train_documents": len(tr),
            "heldout_documents": len(he),
            "repeat": repeat,
            "chars": sum(map(len, docs)),
        }
        if tokenizer is not None:
            s["tokens"] = sum(len(tokenizer(d)["input_ids"]) for d in docs)
            s["train_tokens_after_repeat"] = (
                sum(len(tokenizer(d)["input_ids"]) for d in tr) * repeat
            )
        stats[name] = s
    random.Random(seed).shuffle(train)
    manifest = {
        "seed": seed,
        "heldout_frac": heldout_frac,
        "sources": stats,
        "train_sha256": _write_jsonl(out / "train.jsonl", train),
        "heldout_sha256": _write_jsonl(out / "heldout.jsonl", held),
        "python": sys.version.split()[0],
        "library_versions": {
            p: getattr(sys.modules.get(p), "__version__", None)
            for p in ("numpy", "torch", "pandas")
        },
    }
    if tokenizer is not None:
        manifest["train_tokens"] = sum(s["train_tokens_after_repeat"] for s in stats.values())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return CorpusResult(out / "train.jsonl", out / "heldout.jsonl", manifest)


def corpus_stats_json(result: CorpusResult) -> str:
    return json.dumps(asdict(result), default=str, indent=1)
