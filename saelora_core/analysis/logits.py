"""Logit attribution: which output tokens a latent, a write direction, or the whole edit pushes.

Direct-path attribution. A residual direction ``d`` (d_model) is scored against the vocabulary as

    score = (d ⊙ w_ln) @ W_U

where ``w_ln`` is the final norm's learned scale (``ln_final.w``; TransformerLens folds Gemma's
``1 + w`` into it) when the model has one. The RMS normalization itself divides by a
position-dependent scalar that depends on the whole residual, so it is ignored: scores rank tokens
correctly but their absolute size is that of an un-normalized residual. The path through the
layers after the hook point is ignored too (that is what "direct" means); ``edit_logit_attribution``
measures the full effect on real prompts instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from saelora_core.adapter.generate import lora_on
from saelora_core.adapter.hooks import attach_lora, write_matrix
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.models.chat import prompt_tokens
from saelora_core.models.presets import ModelAndSae


def unembed_scores(
    mas: ModelAndSae, d: Float[Tensor, "... d_model"]
) -> Float[Tensor, "... d_vocab"]:
    """``(d ⊙ w_ln) @ W_U``: the direct-path logit change per unit of ``d`` (see module doc)."""
    model = mas.model
    w = getattr(getattr(model, "ln_final", None), "w", None)
    d = d.to(model.W_U)
    if w is not None:
        d = d * w
    return d @ model.W_U


def token_str(tokenizer, token_id: int) -> str:
    return tokenizer.decode([int(token_id)])


def _ranked(mas: ModelAndSae, scores: Tensor, k: int, source: str, latent: int) -> list[dict]:
    rows = []
    k = min(k, scores.numel())
    for direction, largest in (("promoted", True), ("suppressed", False)):
        top = scores.topk(k, largest=largest)
        for rank, (v, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
            rows.append(
                {
                    "source": source,
                    "latent": latent,
                    "direction": direction,
                    "rank": rank,
                    "token": token_str(mas.tokenizer, i),
                    "token_id": i,
                    "score": v,
                }
            )
    return rows


@torch.no_grad()
def latent_logits(
    mas: ModelAndSae, latent: int, *, k: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top and bottom tokens of ``W_dec[latent] @ W_U`` (with the final-norm scale); each a
    DataFrame with columns token, token_id, score."""
    scores = unembed_scores(mas, write_matrix(mas.sae)[latent])
    out = []
    for largest in (True, False):
        top = scores.topk(min(k, scores.numel()), largest=largest)
        out.append(
            pd.DataFrame(
                {
                    "token": [token_str(mas.tokenizer, i) for i in top.indices.tolist()],
                    "token_id": top.indices.tolist(),
                    "score": top.values.tolist(),
                }
            )
        )
    return out[0], out[1]


def top_write_latents(lora: SaeLora, k: int) -> list[int]:
    """The ``k`` latents with the largest ``max_j |B̂[j, i]|`` (zero entries excluded)."""
    w = lora.write_dirs().detach().abs().amax(0)
    top = w.topk(min(k, w.numel()))
    return [i for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True) if v > 0]


@torch.no_grad()
def top_toks_table(
    lora: SaeLora, mas: ModelAndSae, *, k_latents: int = 5, k_tokens: int = 10
) -> pd.DataFrame:
    """Direct-path logit attribution of the adapter's write side.

    Rows for each of the ``k_latents`` top write latents ``i`` (by ``max_j |B̂[j, i]|``), scoring
    its decoder direction ``W_dec[i]``, and for each component ``j`` the whole write direction
    ``sign(s_j) · B̂[j] @ W_dec`` (``sign(0)`` taken as +1). The sign of a latent's own weight is
    not applied to its row: a latent written with a negative weight suppresses its "promoted"
    tokens. The final RMSNorm is handled as in the module doc: ``(d ⊙ w_ln) @ W_U``.

    Columns: source ("latent {i}" | "write dir {j}"), latent (-1 for write dirs), direction
    ("promoted" | "suppressed"), rank, token, token_id, score.
    """
    w_dec = write_matrix(mas.sae)
    rows: list[dict] = []
    for i in top_write_latents(lora, k_latents):
        rows += _ranked(mas, unembed_scores(mas, w_dec[i]), k_tokens, f"latent {i}", i)
    b = lora.write_dirs().detach()
    for j in range(lora.rank):
        sign = 1.0 if float(lora.s[j]) >= 0 else -1.0
        d = sign * (b[j].to(w_dec) @ w_dec)
        rows += _ranked(mas, unembed_scores(mas, d), k_tokens, f"write dir {j}", -1)
    return pd.DataFrame(
        rows, columns=["source", "latent", "direction", "rank", "token", "token_id", "score"]
    )


@torch.no_grad()
def edit_logit_diffs(
    lora: SaeLora, mas: ModelAndSae, prompts: Sequence[str], *, mode: str = "resid_add"
) -> Float[Tensor, "n_prompts d_vocab"]:
    """Per prompt, last-position logits with the adapter − without (float32, on the CPU).

    "Without" is ``attach_lora(mas, None, mode)``: the plain model for ``resid_add``, the bare
    SAE splice for ``sae_replace``, so the difference is the adapter's edit alone.
    """
    if not prompts:
        raise ValueError("edit logit attribution needs at least one prompt")
    on_device = lora_on(lora, mas.model.cfg.device)
    rows = []
    for p in prompts:
        tokens = prompt_tokens(mas.tokenizer, p, mas.chat_format)[None].to(mas.model.cfg.device)
        with attach_lora(mas, None, mode):
            base = mas.model(tokens)[0, -1]
        with attach_lora(mas, on_device, mode):
            new = mas.model(tokens)[0, -1]
        rows.append((new - base).float().cpu())
    return torch.stack(rows)


def edit_logit_diff(
    lora: SaeLora, mas: ModelAndSae, prompts: Sequence[str], *, mode: str = "resid_add"
) -> Float[Tensor, " d_vocab"]:
    """Mean over prompts of :func:`edit_logit_diffs`."""
    return edit_logit_diffs(lora, mas, prompts, mode=mode).mean(0)


def top_changed_tokens(
    diff: Float[Tensor, " d_vocab"],
    k: int,
    direction: Literal["raised", "lowered"] = "raised",
) -> list[int]:
    """The ids of the ``k`` tokens whose logit ``diff`` raised (or lowered) most, in order."""
    if direction not in ("raised", "lowered"):
        raise ValueError(f"direction={direction!r}; use 'raised' or 'lowered'")
    return diff.topk(min(k, diff.numel()), largest=direction == "raised").indices.tolist()


def edit_logit_attribution(
    lora: SaeLora,
    mas: ModelAndSae,
    prompts: list[str],
    *,
    mode: str = "resid_add",
    k_tokens: int = 10,
    direction: Literal["raised", "lowered"] = "raised",
) -> pd.DataFrame:
    """The output tokens whose next-token logit the adapter's edit raised (or lowered) most at
    the last prompt position, averaged over ``prompts`` (formatted with ``chat.prompt_tokens``).

    This is the full causal effect through all later layers, not a direct-path estimate.
    Columns: token, token_id, mean_logit_diff (sorted by it, descending for "raised").
    """
    diff = edit_logit_diff(lora, mas, prompts, mode=mode)
    ids = top_changed_tokens(diff, k_tokens, direction)
    return pd.DataFrame(
        {
            "token": [token_str(mas.tokenizer, i) for i in ids],
            "token_id": ids,
            "mean_logit_diff": diff[ids].tolist(),
        }
    )


TOPICS = ("in-topic", "off-topic")
"""The values of :func:`prompt_logit_attribution`'s ``topic`` column (with "all" when the
prompts are not split)."""


def prompt_logit_attribution(
    lora: SaeLora,
    mas: ModelAndSae,
    prompts: Sequence[str],
    *,
    in_topic: Sequence[bool] | None = None,
    mode: str = "resid_add",
    k_tokens: int = 10,
    direction: Literal["raised", "lowered"] = "raised",
) -> pd.DataFrame:
    """The edit's effect on each prompt's next-token logits, for the ``k_tokens`` tokens it
    raised (or lowered) most on average over all ``prompts`` (the tokens of
    :func:`edit_logit_attribution`, in its order).

    The full causal effect at the last prompt position, as in :func:`edit_logit_attribution`.
    ``in_topic`` (one flag per prompt) names each prompt's group. Long format, prompts in
    order, then tokens: columns prompt, topic ("in-topic" | "off-topic", or "all" without
    ``in_topic``), token, token_id, logit_diff (logit with the adapter − without).
    """
    if in_topic is not None and len(in_topic) != len(prompts):
        raise ValueError(
            f"in_topic has {len(in_topic)} flags for {len(prompts)} prompts; give one per prompt"
        )
    diffs = edit_logit_diffs(lora, mas, prompts, mode=mode)
    ids = top_changed_tokens(diffs.mean(0), k_tokens, direction)
    tokens = [token_str(mas.tokenizer, i) for i in ids]
    rows = []
    for n, prompt in enumerate(prompts):
        topic = "all" if in_topic is None else TOPICS[0 if in_topic[n] else 1]
        for tok, i, v in zip(tokens, ids, diffs[n, ids].tolist(), strict=True):
            rows.append(
                {"prompt": prompt, "topic": topic, "token": tok, "token_id": i, "logit_diff": v}
            )
    return pd.DataFrame(rows, columns=["prompt", "topic", "token", "token_id", "logit_diff"])


def topic_logit_attribution(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """:func:`prompt_logit_attribution` averaged per token within each topic: columns token,
    token_id, then the mean logit change on "in-topic" and "off-topic" prompts (NaN for a topic
    with no prompt), their difference "in − off", and "all" (every prompt), tokens in the order
    given."""
    means = per_prompt.pivot_table(
        index="token_id", columns="topic", values="logit_diff", aggfunc="mean", sort=False
    )
    order = list(dict.fromkeys(per_prompt["token_id"]))
    first = per_prompt.drop_duplicates("token_id").set_index("token_id")["token"]
    out = pd.DataFrame({"token": first.loc[order].to_list(), "token_id": order})
    for topic in TOPICS:
        out[topic] = means[topic].loc[order].to_list() if topic in means else float("nan")
    out["in − off"] = out["in-topic"] - out["off-topic"]
    out["all"] = per_prompt.groupby("token_id", sort=False)["logit_diff"].mean().loc[order].values
    return out
