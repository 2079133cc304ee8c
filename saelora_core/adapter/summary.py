"""The one summary of an adapter: :func:`adapter_info` gathers the facts from its metadata and
weights; ``saelora info`` prints them (:func:`info_text`, or the dict as JSON), the notebooks
show :func:`summary_line` and the HTML report :func:`summary_table`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from saelora_core.adapter.saving import LoadedLora, missing_behaviour
from saelora_core.io.format import MISSING, fmt_list, fmt_value

INFO_KEYS = (
    "preset",
    "sae",
    "layer",
    "hook_name",
    "mode",
    "d_sae",
    "rank",
    "l0",
    "config",
    "created",
    "updated",
    "version",
    "complete",
    "n_train",
    "n_eval",
    "dataset",
    "guideline",
    "detector",
)
"""The metadata fields the summary shows."""


def top_entries(v: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """(index, signed value) of the ``k`` largest |v|, exact zeros excluded."""
    top = v.abs().topk(min(k, v.numel()))
    return [
        (i, float(v[i]))
        for a, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        if a > 0
    ]


def adapter_info(loaded: LoadedLora, top: int = 5) -> dict[str, Any]:
    """The metadata fields of :data:`INFO_KEYS`, the last metrics, ``s`` and the ``top`` latents
    (largest |weight|) of each component's read and write unit vectors."""
    meta, lora = loaded.metadata, loaded.lora
    info: dict[str, Any] = {k: meta.get(k) for k in INFO_KEYS}
    info["last_eval"] = info["last_metrics"] = (meta.get("history") or [{}])[-1]
    read, write, scales = lora.read_dirs().detach(), lora.write_dirs().detach(), lora.s.detach()
    info["missing"] = missing_behaviour(meta)
    info["s"] = scales.tolist()
    info["top_latents"] = [
        {
            "component": j,
            "s": float(scales[j]),
            "read": top_entries(read[:, j].float(), top),
            "write": top_entries(write[j].float(), top),
        }
        for j in range(lora.rank)
    ]
    return info


def _fmt_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list) and len(value) <= 8:
        return "[" + ", ".join(_fmt_metric(v) for v in value) + "]"
    if isinstance(value, (list, dict)):
        return f"<{type(value).__name__} of {len(value)}>"
    return str(value)


def _fmt_l0(counts: Any) -> str:
    """One count per rank component; a single component's count without brackets."""
    return str(counts[0]) if isinstance(counts, list) and len(counts) == 1 else str(counts)


def info_text(path: Path, info: dict[str, Any]) -> str:
    """The human summary `saelora info` prints: one fact per line, top latents per component."""
    sae = info.get("sae") or {}
    sae_name = sae.get("path") or "/".join(str(sae[k]) for k in ("release", "sae_id") if sae.get(k))
    sae_bits = [sae.get("architecture"), f"d_sae {info.get('d_sae')}", f"hash {sae.get('hash')}"]
    l0 = info.get("l0") or {}
    cfg = info.get("config") or {}
    lines = [
        f"adapter  {path}",
        f"preset   {info.get('preset')} (layer {info.get('layer')}, {info.get('hook_name')})",
        f"SAE      {sae_name or '?'} ({', '.join(str(b) for b in sae_bits if b)})",
        f"mode     {info.get('mode')}",
        f"rank     {info.get('rank')}",
        f"L0       read {_fmt_l0(l0.get('read'))}, write {_fmt_l0(l0.get('write'))} "
        f"(of {info.get('d_sae')} latents)",
    ]
    if cfg:
        keys = ["sparsity", "sparsity_weight", "l1_weight", "init", "lr", "epochs", "batch_size"]
        if "topk" in str(cfg.get("sparsity")):
            keys.insert(1, "topk")
        shown = [f"{k}={cfg[k]}" for k in keys if cfg.get(k) is not None]
        if shown:
            lines.append("training " + ", ".join(shown))
    data = [f"{info[k]} {k[2:]} rows" for k in ("n_train", "n_eval") if info.get(k) is not None]
    if info.get("dataset"):
        data.insert(0, str(info["dataset"]))
    if data:
        lines.append("data     " + ", ".join(data))
    if info.get("guideline") or info.get("detector"):
        lines.append(f"behaviour {info.get('guideline')} (detector {info.get('detector')})")
    if info.get("missing"):
        lines.append(f"WARNING  {missing_text(info['missing'])}")
    state = "complete" if info.get("complete") else "incomplete (resumable)"
    lines.append(f"status   {state}; updated {info.get('updated')}")
    lines.append("top latents (latent:weight, largest |weight| of each unit vector):")
    for comp in info["top_latents"]:
        lines.append(f"  component {comp['component']} (s = {comp['s']:.4g})")
        for side in ("read", "write"):
            entries = " ".join(f"{lat}:{w:+.3f}" for lat, w in comp[side]) or "(all zero)"
            lines.append(f"    {side:<5} {entries}")
    last = info.get("last_metrics") or {}
    if last:
        metrics = ", ".join(f"{k} {_fmt_metric(v)}" for k, v in last.items())
        lines.append(f"last metrics  {metrics}")
    return "\n".join(lines)


def missing_text(missing: list[str]) -> str:
    """What a reader should know about an adapter whose metadata lacks behaviour fields."""
    return (
        f"the metadata records no {', '.join(missing)}: which texts and detector belong to this "
        "adapter is unknown; choose them by hand, or add them to its metadata.json"
    )


DENSE_L0 = 100
"""Latents per read or write vector from which an adapter is dense: too many to read as a
description of what it does."""
SPARSE_RECIPE = "sparse (distilled, rank 8, top-16)"
"""The recipe (``training.recipes.RECIPES``) that compresses a dense adapter into a few latents."""


def dense_note(info: dict[str, Any]) -> str | None:
    """A sentence saying the adapter is dense (some vector has at least :data:`DENSE_L0`
    nonzero latents) and how to get a sparse one; None when it is sparse."""
    l0 = info.get("l0") or {}
    read, write = l0.get("read") or [0], l0.get("write") or [0]
    if max(read + write) < DENSE_L0:
        return None
    return (
        f"This adapter is dense: it reads {fmt_list(read)} and writes {fmt_list(write)} of "
        f"{info.get('d_sae')} latents per vector, too many to read as a description. For a "
        f"sparse one, distil it with the recipe `{SPARSE_RECIPE}` (training.recipes: 16 "
        "latents per vector, about 10 minutes on 2 CPU cores), setting its `distill_from` and "
        "`init_from` to this adapter."
    )


def summary_line(info: dict[str, Any]) -> str:
    """``rank 1, s = 0.873, L0 read 682 · write 1303 of 4096 per vector, sparsity
    `proximal_l1`, behaviour "respond in French" (detector french)``, and a warning when the
    metadata lacks the behaviour."""
    l0 = info.get("l0") or {}
    out = (
        f"rank {info.get('rank')}, s = {fmt_list(info.get('s') or [], digits=3)}, "
        f"L0 read {fmt_list(l0.get('read') or [])} · write {fmt_list(l0.get('write') or [])} "
        f"of {info.get('d_sae')} per vector, "
        f"sparsity `{(info.get('config') or {}).get('sparsity')}`"
    )
    if info.get("guideline"):
        out += f', behaviour "{info["guideline"]}" (detector {info.get("detector") or MISSING})'
    if info.get("missing"):
        out += f". **Warning:** {missing_text(info['missing'])}"
    return out


def summary_table(info: dict[str, Any]) -> pd.DataFrame:
    """The summary as a two-column table (``field``, ``value``): what the HTML report shows."""
    sae, l0 = info.get("sae") or {}, info.get("l0") or {}
    items = {
        "name": (info.get("config") or {}).get("name"),
        "preset": info.get("preset"),
        "sae": sae.get("path") or f"{sae.get('release')}/{sae.get('sae_id')}",
        "sae hash": sae.get("hash"),
        "d_sae": info.get("d_sae"),
        "rank": info.get("rank"),
        "hook": info.get("hook_name"),
        "mode": info.get("mode"),
        "s": fmt_list(info.get("s") or []),
        "L0 read / write": f"{fmt_list(l0.get('read') or [])} / {fmt_list(l0.get('write') or [])}",
        "dataset": info.get("dataset"),
        "guideline": info.get("guideline"),
        "detector": info.get("detector"),
        "n_train / n_eval": f"{info.get('n_train')} / {info.get('n_eval')}",
        "complete": info.get("complete"),
        "created": info.get("created"),
        "updated": info.get("updated"),
        "library version": info.get("version"),
    }
    return pd.DataFrame({"field": list(items), "value": [fmt_value(v) for v in items.values()]})
