"""``saelora describe <lora dir>``: write an adapter's card, checked on fresh prompts.

It loads the adapter and its model + SAE, builds the card (``analysis.card``) from the fresh
prompts of ``data/heldout/prompts.jsonl`` (firing rates, signed writes) and the held-out general
text next to them (top activating snippets), labels the latents (by rule, or by an LLM when
``SAELORA_LABEL_MODEL`` is set: ``analysis.labels.labeller_from_env``), runs the faithfulness
checks (``analysis.faithfulness``), measures the rate on the near-miss prompts
(``analysis.near_miss``; flagged in the first line above 20 %) and writes ``card.md``, ``card.html`` and ``card.json`` to
``<lora dir>/card/`` (or ``out``).

The dense reference of a compressed adapter is its ``distill_from`` (from its metadata) unless
given; the detector is the adapter's (or the reference's) ``detector`` metadata, e.g. "french".
The faithfulness result is cached in ``faithfulness.json`` next to the card, keyed by a hash of
the adapter's and the reference's weights and the settings, so re-rendering a card (new labels,
say) does not generate again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saelora_core.adapter.saving import load_lora
from saelora_core.data.heldout import EVAL_NEW_TOKENS, GENERAL_TEXT, heldout_prompts
from saelora_core.io.atomic import atomic_write_json
from saelora_core.io.paths import REPO_ROOT, repo_relative

logger = logging.getLogger(__name__)


@dataclass
class DescribeResult:
    out_dir: Path
    files: list[Path]
    first_line: str
    summary: str


def _weights_hash(lora_dir: Path) -> str:
    return hashlib.sha256((lora_dir / "params.pt").read_bytes()).hexdigest()[:16]


def _meta(lora_dir: Path) -> dict[str, Any]:
    return json.loads((lora_dir / "metadata.json").read_text())


def resolve_reference(lora_dir: Path, reference: str | Path | None) -> Path | None:
    """The dense adapter ``lora_dir`` was distilled from (``reference`` if given; "none": no
    reference). Relative paths are tried from the working directory, then the repository."""
    if reference is not None:
        return None if str(reference) == "none" else Path(reference)
    src = (_meta(lora_dir).get("config") or {}).get("distill_from")
    if not src:
        return None
    for p in (Path(src), REPO_ROOT / src):
        if (p / "params.pt").exists():
            return p
    logger.warning("the reference %s named in the metadata is missing; no reference", src)
    return None


def resolve_detector(lora_dir: Path, reference: Path | None, detector: str | None) -> str:
    if detector:
        return detector
    for d in (lora_dir, reference):
        if d is not None and (found := _meta(d).get("detector")):
            return found
    raise ValueError(
        f"{lora_dir} names no behaviour detector in its metadata (nor does its reference); "
        "pass --detector (one of analysis.DETECTORS: french, uppercase)"
    )


def describe(
    lora_dir: str | Path,
    *,
    out: str | Path | None = None,
    reference: str | Path | None = None,
    detector: str | None = None,
    max_latents: int = 16,
    max_prompts: int | None = None,
    per_latent_prompts: int = 40,
    per_latent_tokens: int = 16,
    faithfulness: bool = True,
    edges: bool = True,
    near_miss: bool = True,
    mas=None,
    progress: bool = True,
) -> DescribeResult:
    """Write the card of the adapter in ``lora_dir`` (see the module doc). ``max_prompts``: fresh
    prompts per side (None: all 80 + 80)."""
    from saelora_core.analysis.card import build_card
    from saelora_core.analysis.card_render import write_card
    from saelora_core.analysis.faithfulness import Faithfulness, check_faithfulness
    from saelora_core.analysis.labels import labeller_from_env
    from saelora_core.models.presets import load_model_and_sae

    d = Path(lora_dir)
    if not (d / "params.pt").exists():
        raise FileNotFoundError(f"{d} holds no adapter (params.pt + metadata.json)")
    meta = _meta(d)
    ref_dir = resolve_reference(d, reference)
    mas = mas or load_model_and_sae(meta.get("preset", "gemma-3-270m"))
    lora = load_lora(d, sae_identity=mas.sae_identity).lora
    ref = load_lora(ref_dir, sae_identity=mas.sae_identity).lora if ref_dir else None
    out_dir = Path(out) if out else d / "card"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = heldout_prompts()
    if max_prompts is not None:
        rows = [r for r in rows if r["in_topic"]][:max_prompts] + [
            r for r in rows if not r["in_topic"]
        ][:max_prompts]
    ins = [r["prompt"] for r in rows if r["in_topic"]]
    offs = [r["prompt"] for r in rows if not r["in_topic"]]
    from datasets import load_dataset

    general_ds: Any = load_dataset("json", data_files=str(GENERAL_TEXT), split="train")
    general = [str(t) for t in general_ds["text"]]
    texts = ins + offs + general
    mode = meta.get("mode", "resid_add")
    card = build_card(
        mas,
        lora,
        name=d.name,
        in_prompts=ins,
        off_prompts=offs,
        texts=texts,
        max_latents=max_latents,
        labeller=labeller_from_env(out_dir / "label_cache", str(mas.sae_identity.get("hash"))),
        info={
            "source": repo_relative(d),
            "mode": mode,
            "reference": repo_relative(ref_dir) if ref_dir else None,
            "command": f"saelora describe {repo_relative(d)}",
            "guideline": meta.get("guideline")
            or (_meta(ref_dir).get("guideline") if ref_dir else None),
            "detector": detector or meta.get("detector"),
        },
    )
    if faithfulness:
        det = resolve_detector(d, ref_dir, detector)
        read, write = card.listed
        settings = {
            "adapter": _weights_hash(d),
            "reference": _weights_hash(ref_dir) if ref_dir else None,
            "read": read,
            "write": write,
            "detector": det,
            "prompts": hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16],
            "per_latent": [per_latent_prompts, per_latent_tokens],
            "max_new_tokens": EVAL_NEW_TOKENS,
            "mode": mode,
        }
        cache = out_dir / "faithfulness.json"
        cached = json.loads(cache.read_text()) if cache.exists() else None
        if cached and cached.get("key") == settings:
            card.faithfulness = Faithfulness.from_dict(cached["result"])
        else:
            card.faithfulness = check_faithfulness(
                mas,
                lora,
                rows,
                read=read,
                write=write,
                detector=det,
                reference=ref,
                mode=mode,
                max_new_tokens=EVAL_NEW_TOKENS,
                per_latent_prompts=per_latent_prompts,
                per_latent_tokens=per_latent_tokens,
                progress=progress,
            )
            atomic_write_json(cache, {"key": settings, "result": card.faithfulness.to_dict()})
    if faithfulness and edges:
        card.edges = cached_edges(mas, lora, rows, out_dir, _weights_hash(d), det, mode)
    if faithfulness and near_miss:
        card.near_miss = cached_near_miss(mas, lora, out_dir, _weights_hash(d), det, mode)
    files = write_card(card, out_dir)
    return DescribeResult(out_dir, files, card.first_line, card.summary)


def cached_edges(mas, lora, rows, out_dir: Path, weights: str, detector: str, mode: str):
    """The card's edge checks (``analysis.edges``) for an adapter of at most 16 + 16 latents
    (None for a larger one), cached in ``edges.json`` by the weights, prompts and detector."""
    from saelora_core.analysis.edges import MAX_LATENTS, EdgeChecks, check_edges

    read, write = lora.distinct_latents()
    if len(read) > MAX_LATENTS or len(write) > MAX_LATENTS:
        return None
    key = {
        "adapter": weights,
        "detector": detector,
        "prompts": hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16],
        "mode": mode,
    }
    return cached_result(
        out_dir / "edges.json",
        key,
        lambda: check_edges(mas, lora, rows, detector=detector, mode=mode),
        EdgeChecks.from_dict,
    )


def cached_near_miss(mas, lora, out_dir: Path, weights: str, detector: str, mode: str):
    """The adapter's rate on the near-miss prompts (``analysis.near_miss``), cached in
    ``near_miss.json`` by the weights, prompts and detector."""
    from saelora_core.analysis.near_miss import NearMissRate, near_miss_rate
    from saelora_core.data.heldout import near_miss_prompts

    rows = near_miss_prompts()
    key = {
        "adapter": weights,
        "detector": detector,
        "prompts": hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16],
        "max_new_tokens": EVAL_NEW_TOKENS,
        "mode": mode,
        "dtype": str(mas.model.cfg.dtype),
    }
    return cached_result(
        out_dir / "near_miss.json",
        key,
        lambda: near_miss_rate(mas, lora, rows, detector=detector, mode=mode),
        NearMissRate.from_dict,
    )


def cached_result(cache: Path, key: dict, compute, load):
    """``load(result)`` from ``cache`` when it was written for ``key``, else ``compute()``,
    written there (atomically) with its key; the result has ``to_dict()``."""
    cached = json.loads(cache.read_text()) if cache.exists() else None
    if cached and cached.get("key") == key:
        return load(cached["result"])
    result = compute()
    atomic_write_json(cache, {"key": key, "result": result.to_dict()})
    return result
