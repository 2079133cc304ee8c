"""What does the adapter do? The base model's answer beside the adapter's, and, token by token
of the adapter's answer, which read latents fired and what the adapter wrote there; with a
batch of fresh prompts, the behaviour rate and its interval.

Both answers are greedy (``adapter.generate``, batched and KV-cached). The per-token view
re-runs the model once on prompt + adapter answer without the adapter: the hook point's
residual is upstream of the edit, so its SAE encoding ``z`` is the one the adapter read while
generating. At each answer position:

- ``reads``: the latents of the adapter's read support that fire (``z_i > 0``), largest
  ``max_j |z_i Â[i, j]|`` first, with their activation ``z_i``;
- ``edit_norm``: ``‖Δz @ W_dec‖`` with ``Δz = ((z @ Â) ⊙ s) @ B̂``, the norm of what the
  adapter adds to the residual there (in ``resid_add`` mode, the whole edit);
- ``writes``: the latents with the largest ``|Δz_i| · ‖W_dec[i]‖`` (their share of the edit),
  with their signed ``Δz_i``.

The edit at a position shapes the next token's logits.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from saelora_core.adapter.generate import generate
from saelora_core.adapter.hooks import write_matrix
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.analysis.activations import sae_latents
from saelora_core.analysis.behaviour import BehaviourResult, detector_fn, evaluate_behaviour
from saelora_core.data.heldout import EVAL_NEW_TOKENS, heldout_prompts
from saelora_core.io.format import fmt_interval, fmt_num, text_table
from saelora_core.models.chat import format_turn
from saelora_core.models.presets import ModelAndSae

PLAYGROUND_NEW_TOKENS = 48
"""Tokens generated per answer in the side-by-side view."""
BATCH_PROMPTS = 8
"""Fresh prompts per side (in-topic, off-topic) in the batch mode: seconds, not minutes."""
TOKEN_COLUMNS = ["pos", "token", "edit_norm", "reads", "writes"]


@dataclass
class PlaygroundAnswer:
    """One prompt: both greedy answers and the per-token view of the adapter's."""

    prompt: str
    base: str
    adapter: str
    tokens: pd.DataFrame
    """One row per token of the adapter's answer: pos (index in the prompt + answer sequence;
    BOS is 0), token, edit_norm, reads ("latent (z_i), …"), writes ("latent Δz_i, …"); and the
    same as lists in read_latents, read_acts, write_latents, write_dz."""


@dataclass
class Playground:
    answers: list[PlaygroundAnswer]
    mode: str = "resid_add"
    detector: str | None = None
    hits: list[tuple[bool, bool]] = field(default_factory=list)
    """(base, adapter) detector verdict per answer, when a detector was given."""


def _latent_list(latents: list[int], values: list[float], fmt: Callable[[float], str]) -> str:
    return ", ".join(f"{lat} {fmt(v)}" for lat, v in zip(latents, values, strict=True))


@torch.no_grad()
def answer_tokens(
    mas: ModelAndSae, lora: SaeLora, prompt: str, answer: str, *, k_latents: int = 3
) -> pd.DataFrame:
    """The per-token view (see the module doc) of ``answer`` to ``prompt``; no rows when the
    answer is empty."""
    cols = TOKEN_COLUMNS + ["read_latents", "read_acts", "write_latents", "write_dz"]
    if not answer.strip():
        return pd.DataFrame(columns=cols)
    turn = format_turn(mas.tokenizer, prompt, answer, mas.chat_format)
    z = sae_latents(mas, turn.tokens).float()
    a = lora.read_dirs().detach().float().to(z.device)
    b = lora.write_dirs().detach().float().to(z.device)
    s = lora.s.detach().float().to(z.device)
    w = write_matrix(mas.sae).detach().float().to(z.device)
    w_norm = w.norm(dim=-1)
    support = a.ne(0).any(1)
    dz = ((z @ a) * s) @ b  # (pos, d_sae)
    edit = (dz @ w).norm(dim=-1)
    rows = []
    for p in torch.nonzero(turn.assistant_mask).flatten().tolist():
        contrib = (z[p, :, None] * a).abs().amax(1) * (support & (z[p] > 0))
        top_r = contrib.topk(min(k_latents, contrib.numel()))
        reads = [i for v, i in zip(top_r.values.tolist(), top_r.indices.tolist()) if v > 0]
        share = dz[p].abs() * w_norm
        top_w = share.topk(min(k_latents, share.numel()))
        writes = [i for v, i in zip(top_w.values.tolist(), top_w.indices.tolist()) if v > 0]
        r_acts = [float(z[p, i]) for i in reads]
        w_dz = [float(dz[p, i]) for i in writes]
        rows.append(
            {
                "pos": p,
                "token": mas.tokenizer.decode([int(turn.tokens[p])]),
                "edit_norm": float(edit[p]),
                "reads": _latent_list(reads, r_acts, lambda v: f"({fmt_num(v, 3)})"),
                "writes": _latent_list(writes, w_dz, lambda v: f"{v:+.3g}"),
                "read_latents": reads,
                "read_acts": r_acts,
                "write_latents": writes,
                "write_dz": w_dz,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def try_adapter(
    mas: ModelAndSae,
    lora: SaeLora,
    prompts: str | list[str],
    *,
    mode: str = "resid_add",
    max_new_tokens: int = PLAYGROUND_NEW_TOKENS,
    detector: str | Callable[[str], bool] | None = None,
    k_latents: int = 3,
) -> Playground:
    """Greedy answers to ``prompts`` without and with ``lora`` (in ``mode``), side by side, and
    the per-token view of each adapter answer (:func:`answer_tokens`). With ``detector`` (a name
    in ``analysis.DETECTORS`` or a callable), each answer's verdict too."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("type a prompt: the playground needs at least one non-empty prompt")
    base = generate(mas, prompts, None, max_new_tokens=max_new_tokens)
    edited = generate(mas, prompts, lora, mode=mode, max_new_tokens=max_new_tokens)
    answers = [
        PlaygroundAnswer(p, b, e, answer_tokens(mas, lora, p, e, k_latents=k_latents))
        for p, b, e in zip(prompts, base, edited, strict=True)
    ]
    out = Playground(answers, mode)
    if detector is not None:
        out.detector, fn = detector_fn(detector)
        out.hits = [(bool(fn(x.base)), bool(fn(x.adapter))) for x in answers]
    return out


def fresh_prompts(n: int = BATCH_PROMPTS, topic: str = "math") -> list[dict]:
    """The first ``n`` in-topic and ``n`` off-topic held-out prompts (``data/heldout/``) as eval
    rows (``prompt``, ``in_topic``)."""
    rows = heldout_prompts(topic)
    return [r for r in rows if r["in_topic"]][:n] + [r for r in rows if not r["in_topic"]][:n]


def behaviour_rate(
    mas: ModelAndSae,
    lora: SaeLora,
    *,
    detector: str | Callable[[str], bool],
    rows: list[dict] | None = None,
    n_prompts: int = BATCH_PROMPTS,
    mode: str = "resid_add",
    max_new_tokens: int = EVAL_NEW_TOKENS,
) -> BehaviourResult:
    """The behaviour rate, base and adapter, in-topic and off-topic, with 95 % Wilson intervals,
    on ``rows`` (default :func:`fresh_prompts` ``(n_prompts)``), generated in one batch."""
    rows = fresh_prompts(n_prompts) if rows is None else rows
    return evaluate_behaviour(
        mas, lora, rows, detector=detector, mode=mode, max_new_tokens=max_new_tokens
    )


def rate_line(result: BehaviourResult) -> str:
    """``french rate in-topic 0.55 [0.44, 0.66] vs base 0.01 [0.00, 0.07]; off-topic 0.01
    [0.00, 0.07] (n = 8 + 8 fresh prompts, 95 % Wilson intervals)``."""
    r = result.rates.set_index(["condition", "split"])

    def rate(c: str, s: str) -> str:
        x = r.loc[(c, s)]
        return fmt_interval(x["rate"], x["low"], x["high"])

    n_in, n_off = (
        int(r.loc[("adapter", "in_topic"), "n"]),
        int(r.loc[("adapter", "off_topic"), "n"]),
    )
    return (
        f"{result.detector} rate in-topic {rate('adapter', 'in_topic')} vs base "
        f"{rate('base', 'in_topic')}; off-topic {rate('adapter', 'off_topic')} vs base "
        f"{rate('base', 'off_topic')} (n = {n_in} + {n_off} fresh prompts, 95 % Wilson intervals)"
    )


def side_by_side(left: str, right: str, width: int = 48, titles=("base", "adapter")) -> str:
    """Two texts in two wrapped columns of ``width`` characters under their ``titles``."""

    def wrap(t: str) -> list[str]:
        lines = [ln for para in (t or "(empty)").splitlines() for ln in textwrap.wrap(para, width)]
        return lines or [""]

    a, b = wrap(left), wrap(right)
    a += [""] * (len(b) - len(a))
    b += [""] * (len(a) - len(b))
    head = f"{titles[0]:<{width}}  | {titles[1]}"
    rule = f"{'-' * width}--+-{'-' * width}"
    return "\n".join([head, rule] + [f"{x:<{width}}  | {y}".rstrip() for x, y in zip(a, b)])


def quoted(token: str) -> str:
    """A token as it reads in a table: quoted, so that a space shows, with newlines as ↵."""
    return "'" + token.replace("\n", "↵") + "'"


def playground_text(pg: Playground, width: int = 48) -> str:
    """The playground as readable text: per prompt, both answers side by side, then the
    per-token table of the adapter's answer. What ``saelora try`` prints."""
    out = []
    for i, ans in enumerate(pg.answers):
        titles = ("base", f"adapter ({pg.mode})")
        if pg.hits:
            hb, ha = pg.hits[i]
            titles = (f"base [{pg.detector}: {'yes' if hb else 'no'}]",
                      f"adapter [{pg.detector}: {'yes' if ha else 'no'}]")  # fmt: skip
        out += [f"prompt: {ans.prompt}", "", side_by_side(ans.base, ans.adapter, width, titles)]
        out.append("")
        if ans.tokens.empty:
            out.append("(the adapter's answer is empty: no per-token view)")
        else:
            out.append(
                "per token of the adapter's answer: edit_norm = ‖Δz @ W_dec‖ written at that "
                "token; reads = read latents that fired (activation); writes = top written "
                "latents (Δz)"
            )
            shown = ans.tokens[TOKEN_COLUMNS].assign(token=ans.tokens["token"].map(quoted))
            out.append(text_table(shown, max_width=40))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def playground_html(pg: Playground, rate: BehaviourResult | None = None) -> str:
    """The playground as an HTML fragment at full width (no scripts): per prompt, both answers
    in two columns and the per-token table of the adapter's answer; with ``rate``, its
    :func:`rate_line` first. What the notebooks show."""
    import html

    from saelora_core.io.format import format_frame

    e = html.escape
    box = "flex:1;border:1px solid #ccc;padding:6px 10px;white-space:pre-wrap"
    parts = ["<div class='saelora-playground' style='width:100%'>"]
    if rate is not None:
        parts.append(f"<p><b>{e(rate_line(rate))}</b></p>")
    for i, ans in enumerate(pg.answers):
        heads = ["base", f"adapter ({pg.mode})"]
        if pg.hits:
            heads = [
                f"{h} · {pg.detector}: {'yes' if v else 'no'}" for h, v in zip(heads, pg.hits[i])
            ]
        parts.append(f"<p><b>prompt:</b> {e(ans.prompt)}</p><div style='display:flex;gap:12px'>")
        for head, text in zip(heads, (ans.base, ans.adapter), strict=True):
            parts.append(f"<div style='{box}'><b>{e(head)}</b><br>{e(text or '(empty)')}</div>")
        parts.append("</div>")
        if ans.tokens.empty:
            parts.append("<p>The adapter's answer is empty: no per-token view.</p>")
            continue
        table = format_frame(
            ans.tokens[TOKEN_COLUMNS].assign(token=ans.tokens["token"].map(quoted))
        ).to_html(index=False, escape=True, border=0)
        parts.append(
            "<p>Per token of the adapter's answer: <code>edit_norm</code> = ‖Δz @ W_dec‖ "
            "written at that token; <code>reads</code> = read latents that fired (activation); "
            "<code>writes</code> = top written latents (Δz).</p>"
            f"<div style='width:100%'>{table}</div>"
        )
    parts.append("</div>")
    return "".join(parts)
