"""The project's own text for the SAE corpus: the seed set's question-and-answer turns, templated
math in English and French, ``chatterbot-corpus`` dialogue, and library docstrings.

Each builder returns a list of documents and is deterministic for the same inputs (the
docstrings depend on the installed library versions, which the corpus manifest records).
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path

from saelora_core.models.chat import prompt_text

SEED_DIR = Path(__file__).resolve().parents[2] / "data" / "seed"


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
