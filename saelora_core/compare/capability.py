"""What an edit costs on text it was not trained for: CE and KL to the unedited model.

On general text (``data/heldout/general_text.jsonl``, ten genres in its ``kind`` field: prose,
news, dialogue, code, SQL, French, German, Spanish, ...) and optionally the SAE corpus's
held-out split (genre ``corpus``), each text is cut to ``max_tokens`` tokens (BOS included) and
run with and without the edit. At every position except the BOS (whose prediction no edit
should be judged on; the adapters leave it alone) it measures:

    CE  = −log p(next token)                        with and without the edit
    KL  = Σ_v p_base(v) · (log p_base(v) − log p_edit(v))   KL(base ‖ edited)

and reports, per genre, the token-weighted means: ``base_ce``, ``edited_ce``, ``delta_ce``
(edited − base, > 0 is a cost) and ``kl``, plus one ``all`` row over every token.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from saelora_core.compare.edits import Edit
from saelora_core.io.paths import REPO_ROOT
from saelora_core.models.presets import ModelAndSae

GENERAL_TEXT = REPO_ROOT / "data" / "heldout" / "general_text.jsonl"


def general_texts(
    path: str | Path = GENERAL_TEXT,
    *,
    corpus_heldout: str | Path | None = None,
    max_per_genre: int | None = None,
) -> list[dict]:
    """``{"text", "genre"}`` rows: the general text (genre from ``kind``/``genre``) and, when
    given, the corpus's held-out JSONL (genre ``corpus``, ``text`` field). ``max_per_genre``
    keeps that many rows per genre, evenly spaced through the file."""
    rows = []
    for p, default in ((path, "general"), (corpus_heldout, "corpus")):
        if p is None:
            continue
        p = Path(p)
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing (the general text, or --corpus-heldout)")
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                genre = r.get("genre") or r.get("kind") or default
                if default == "corpus":
                    genre = "corpus"
                if str(r.get("text", "")).strip():
                    rows.append({"text": r["text"], "genre": genre})
    if max_per_genre is not None:
        # Evenly spaced within each genre, in file order: the corpus's held-out split is
        # written source by source, so its first rows would all come from one source.
        by_genre: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_genre.setdefault(r["genre"], []).append(i)
        keep_idx: set[int] = set()
        for idx in by_genre.values():
            n = min(max_per_genre, len(idx))
            keep_idx.update(idx[(j * len(idx)) // n] for j in range(n))
        rows = [r for i, r in enumerate(rows) if i in keep_idx]
    return rows


@torch.no_grad()
def token_costs(mas: ModelAndSae, edit: Edit, text: str, max_tokens: int = 128):
    """(base CE, edited CE, KL) per scored position of one text (BOS's prediction excluded)."""
    toks = mas.model.to_tokens(text, prepend_bos=True)[:, :max_tokens]
    if toks.shape[1] < 3:
        empty = torch.zeros(0)
        return empty, empty, empty
    base = F.log_softmax(mas.model(toks)[0, 1:-1].float(), -1)
    with edit.attached(mas):
        new = F.log_softmax(mas.model(toks)[0, 1:-1].float(), -1)
    y = toks[0, 2:].to(base.device)
    ce_b = -base.gather(-1, y[:, None])[:, 0]
    ce_e = -new.gather(-1, y[:, None])[:, 0]
    kl = (base.exp() * (base - new)).sum(-1)
    return ce_b.cpu(), ce_e.cpu(), kl.cpu()


def capability_cost(
    mas: ModelAndSae, edit: Edit, texts: list[dict], *, max_tokens: int = 128
) -> pd.DataFrame:
    """Per genre (and ``all``): n_texts, n_tokens, base_ce, edited_ce, delta_ce, kl."""
    per: dict[str, list[torch.Tensor]] = {}
    counts: dict[str, int] = {}
    for r in texts:
        b, e, k = token_costs(mas, edit, r["text"], max_tokens)
        if not len(b):
            continue
        per.setdefault(r["genre"], []).append(torch.stack([b, e, k]))
        counts[r["genre"]] = counts.get(r["genre"], 0) + 1
    out = []
    groups = {g: torch.cat(v, 1) for g, v in per.items()}
    if groups:
        groups["all"] = torch.cat(list(groups.values()), 1)
        counts["all"] = sum(counts.values())
    for g, m in groups.items():
        b, e, k = m.double().mean(1).tolist()
        out.append(
            {
                "genre": g,
                "n_texts": counts[g],
                "n_tokens": int(m.shape[1]),
                "base_ce": b,
                "edited_ce": e,
                "delta_ce": e - b,
                "kl": k,
            }
        )
    return pd.DataFrame(
        out, columns=["genre", "n_texts", "n_tokens", "base_ce", "edited_ce", "delta_ce", "kl"]
    )
