"""Which SAE latents the adapter reads and writes, and what it reads token by token.

Read vector ``Â[:, j]`` and write vector ``B̂[j, :]`` are unit vectors over the d_sae latents, so
the squared weight ``w²`` of a latent is its share of the vector's total mass.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch

from saelora_core.adapter.hooks import write_matrix
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.adapter.summary import top_entries
from saelora_core.analysis.activations import dataset_rows, sae_latents
from saelora_core.models.chat import format_turn, prompt_tokens
from saelora_core.models.presets import ModelAndSae

NEURONPEDIA = "https://www.neuronpedia.org"


def neuronpedia_id_for(mas: ModelAndSae) -> str | None:
    """The Neuronpedia id (e.g. ``gemma-2-2b/12-gemmascope-res-16k``) of a sae_lens registry
    SAE, from sae_lens's pretrained-SAE directory; None for SAEs loaded from a path (such as the
    default preset's) or when the registry has no id."""
    release, sae_id = mas.sae_identity.get("release"), mas.sae_identity.get("sae_id")
    if not release or not sae_id:
        return None
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        entry = get_pretrained_saes_directory().get(release)
    except Exception:  # the directory is packaged YAML; a broken install should not crash a table
        return None
    ids = getattr(entry, "neuronpedia_id", None) or {}
    return ids.get(sae_id)


@torch.no_grad()
def latent_fire_freq(mas: ModelAndSae, prompts: list[str], latents: list[int]) -> dict[int, float]:
    """Fraction of prompt tokens (formatted with ``chat.prompt_tokens``, BOS excluded) where each
    latent fires (``z > 0``); NaN when there are no prompts."""
    if not prompts or not latents:
        return dict.fromkeys(latents, math.nan)
    fired = torch.zeros(len(latents))
    n = 0
    for p in prompts:
        z = sae_latents(mas, prompt_tokens(mas.tokenizer, p, mas.chat_format))[1:, latents]
        fired += (z > 0).sum(0).float().cpu()
        n += z.shape[0]
    return {lat: float(f) / max(n, 1) for lat, f in zip(latents, fired.tolist(), strict=True)}


@torch.no_grad()
def top_feats_summary(
    lora: SaeLora,
    *,
    k: int = 10,
    mas: ModelAndSae | None = None,
    dataset: Any = None,
    neuronpedia_id: str | None = None,
    max_rows_for_freq: int = 200,
) -> pd.DataFrame:
    """The ``k`` largest-|weight| latents of every read vector ``Â[:, j]`` and write vector
    ``B̂[j, :]`` (exact zeros are left out, so a sparse vector may list fewer than ``k``).

    Columns: component, side ("read"/"write"), rank, latent, weight (signed), mass_share
    (``w² / ‖v‖²``, i.e. ``w²`` for a unit vector), freq_in_topic / freq_off_topic (fraction of
    prompt tokens of the first ``max_rows_for_freq`` in-topic / off-topic rows of ``dataset``
    where the latent fires; NaN without ``mas`` and ``dataset``), neuronpedia_url.
    """
    sides = {"read": lora.read_dirs().detach().T, "write": lora.write_dirs().detach()}
    rows = []
    for j in range(lora.rank):
        for side, mat in sides.items():
            v = mat[j].float().cpu()
            total = float((v**2).sum()) or 1.0
            for rank, (lat, w) in enumerate(top_entries(v, k)):
                rows.append(
                    {
                        "component": j,
                        "side": side,
                        "rank": rank,
                        "latent": lat,
                        "weight": w,
                        "mass_share": w * w / total,
                    }
                )
    df = pd.DataFrame(rows, columns=["component", "side", "rank", "latent", "weight", "mass_share"])
    lats = sorted(set(df["latent"].tolist()))
    freq_in: dict[int, float] = dict.fromkeys(lats, math.nan)
    freq_off = freq_in
    if mas is not None and dataset is not None:
        data = dataset_rows(dataset)[:max_rows_for_freq]
        ins = [r["prompt"] for r in data if r.get("in_topic") and r.get("prompt")]
        offs = [r["prompt"] for r in data if not r.get("in_topic") and r.get("prompt")]
        freq_in, freq_off = latent_fire_freq(mas, ins, lats), latent_fire_freq(mas, offs, lats)
    df["freq_in_topic"] = [freq_in[lat] for lat in df["latent"]]
    df["freq_off_topic"] = [freq_off[lat] for lat in df["latent"]]
    df["neuronpedia_url"] = [
        f"{NEURONPEDIA}/{neuronpedia_id}/{lat}" if neuronpedia_id else "" for lat in df["latent"]
    ]
    return df


@torch.no_grad()
def per_token_reads_writes(
    lora: SaeLora, mas: ModelAndSae, prompt: str, *, response: str | None = None, k_latents: int = 3
) -> pd.DataFrame:
    """What the adapter reads and writes at each token of a prompt (optionally with a response).

    One row per position (BOS excluded): pos (index in the token sequence; BOS is 0), token, assistant (True on response tokens),
    read_j = ``z @ Â[:, j]`` per component, write_norm = ``‖Δz @ W_dec‖`` with
    ``Δz = ((z @ Â) ⊙ s) @ B̂``, and top_read_latents: the ``k_latents`` latents with the
    largest ``max_j |z_i Â[i, j]|``, as "latent:contribution, ...". ``z`` is the SAE encoding of
    the clean residual, as in the ``resid_add`` hook.
    """
    tok = mas.tokenizer
    if response is None:
        ids = prompt_tokens(tok, prompt, mas.chat_format)
        assistant = torch.zeros(len(ids), dtype=torch.bool)
    else:
        turn = format_turn(tok, prompt, response, mas.chat_format)
        ids, assistant = turn.tokens, turn.assistant_mask
    z = sae_latents(mas, ids)[1:]
    a = lora.read_dirs().detach().to(z)
    b, s = lora.write_dirs().detach().to(z), lora.s.detach().to(z)
    reads = z @ a
    write = ((reads * s) @ b @ write_matrix(mas.sae).to(z)).norm(dim=-1)
    rows = []
    for p in range(z.shape[0]):
        contrib = z[p, :, None] * a  # (d_sae, r)
        best = contrib.abs().amax(1)
        top = best.topk(min(k_latents, best.numel()))
        parts = []
        for val, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            if val > 0:
                c = contrib[i, int(contrib[i].abs().argmax())]
                parts.append(f"{i}:{float(c):+.3g}")
        row = {
            "pos": p + 1,
            "token": tok.decode([int(ids[p + 1])]),
            "assistant": bool(assistant[p + 1]),
        }
        row.update({f"read_{j}": float(reads[p, j]) for j in range(lora.rank)})
        row.update({"write_norm": float(write[p]), "top_read_latents": ", ".join(parts)})
        rows.append(row)
    return pd.DataFrame(rows)
