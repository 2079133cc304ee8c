"""The edited forward pass and its losses, batched (``batch.py``): what training, the inits and
evaluation run.

Losses keep the one-example semantics: each example's loss is the mean over its own assistant
tokens, and :func:`batch_losses` returns one loss per example, so a step's loss is still the
mean over its examples whatever the micro-batch size.

The fast path (``precompute=True``): the residual at the hook depends only on the frozen blocks
below it, so it is computed once per example (:func:`hook_resids`) and reused every epoch; the
forward then starts at block ``L+1``. The plain path (``precompute=False``) runs the whole
model with the adapter hooked in by :func:`hooks.attach_lora`; the two agree (tested).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

from saelora_core.adapter.batch import Batch, Example, chunks, device_of, make_batch
from saelora_core.adapter.hooks import attach_lora, write_matrix
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.models.precision import cpu_has_native_bf16
from saelora_core.models.presets import ModelAndSae

_LOW_WU: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_ZERO_BIAS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def unembed(model, x: Tensor, logits_dtype: str = "float32") -> Tensor:
    """``x @ W_U + b_U``, returned in float32 (the loss is always computed in float32).

    ``bfloat16`` (on a CPU only where it is native, :func:`cpu_has_native_bf16`), or a bfloat16
    model: the matmul in bf16 (a float32 model keeps one cached
    bf16 copy of ``W_U``; a bf16 model uses its own), accumulated and returned in float32. A bias
    that is all zeros (Gemma's) is not added: a pass over every logit saved."""
    u = model.unembed
    if logits_dtype == "bfloat16" and u.W_U.device.type == "cpu" and not cpu_has_native_bf16():
        logits_dtype = "float32"  # emulated bf16 GEMMs are far slower than float32 ones
    if logits_dtype == "float32" and u.W_U.dtype == torch.float32:
        return u(x)
    w = u.W_U if u.W_U.dtype == torch.bfloat16 else _LOW_WU.get(u)
    if w is None or w.device != u.W_U.device:
        w = _LOW_WU[u] = u.W_U.detach().to(torch.bfloat16)
    out = (x.to(torch.bfloat16) @ w).float()
    zero = _ZERO_BIAS.get(u)
    if zero is None or zero[0] != u.b_U._version:  # re-checked if the bias is ever written
        zero = _ZERO_BIAS[u] = (u.b_U._version, not bool(u.b_U.any()))
    return out if zero[1] else out + u.b_U.float()


def final_logits(model, x: Tensor, logits_dtype: str = "float32") -> Tensor:
    """Next-token logits from the residual after the last block (final norm, unembedding and the
    config's soft cap), computed only for the rows of ``x`` given."""
    logits = unembed(model, model.ln_final(x), logits_dtype)
    cap = getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


@torch.no_grad()
def hook_resids(mas: ModelAndSae, examples: list[Example], micro_batch: int = 8) -> None:
    """Compute and cache the clean hook-point residual of every example that lacks one, in
    right-padded micro-batches of similar lengths."""
    todo = sorted((ex for ex in examples if ex.resid is None), key=lambda e: -len(e.chat.tokens))
    for part in chunks(todo, micro_batch):  # longest first: a micro-batch pads little
        b = make_batch(mas, part)
        r = mas.model(b.tokens, stop_at_layer=mas.layer + 1)
        for i, ex in enumerate(part):
            ex.resid = r[i : i + 1, : b.lengths[i]].clone()


def hook_resid(mas: ModelAndSae, ex: Example) -> Tensor:
    """The example's clean residual at the hook point, (1, pos, d_model), computed once."""
    hook_resids(mas, [ex])
    assert ex.resid is not None
    return ex.resid


def padded_resid(mas: ModelAndSae, batch: Batch) -> Tensor:
    """The cached hook residuals of ``batch``, right-padded with zeros: (batch, n, d_model)."""
    hook_resids(mas, batch.examples, len(batch.examples))
    first = batch.examples[0].resid
    assert first is not None
    shape = (len(batch.examples), batch.tokens.shape[1], first.shape[-1])
    out = first.new_zeros(shape)
    for i, ex in enumerate(batch.examples):
        out[i, : batch.lengths[i]] = ex.resid[0]  # type: ignore[index]
    return out


def padded_latents(mas: ModelAndSae, batch: Batch) -> Tensor:
    """The SAE latents of ``batch``'s cached hook residuals, (batch, n, d_sae), zero at the pads.

    Like the residual, ``z = SAE.encode(resid)`` depends only on the frozen model and SAE, so
    each example's latents are encoded once and kept, sparse (COO), beside its residual: an
    epoch after the first runs no encoder GEMM."""
    state = sae_state(mas.sae)
    todo = [ex for ex in batch.examples if ex.latents is None or ex.latents_of != state]
    if todo:
        with torch.no_grad():
            z = mas.sae.encode(padded_resid(mas, make_batch(mas, todo)))
        for i, ex in enumerate(todo):
            ex.latents = z[i, : len(ex.chat.tokens)].to_sparse()
            ex.latents_of = state
    first = batch.examples[0].latents
    assert first is not None
    out = first.values().new_zeros((len(batch.examples), batch.tokens.shape[1], first.shape[-1]))
    for i, ex in enumerate(batch.examples):
        out[i, : batch.lengths[i]] = ex.latents.to_dense()  # type: ignore[union-attr]
    return out


def sae_state(sae) -> tuple:
    """The SAE object and the version counters of its parameters: it changes when another SAE is
    loaded or this one is trained in place, so cached latents are never read stale."""
    return (id(sae), *(p._version for p in sae.parameters()))


def upper_hidden(mas: ModelAndSae, batch: Batch, resid: Tensor, new: Tensor) -> Tensor:
    """The residual after the last block (T, d_model) at ``batch``'s target positions when the
    hook residual ``resid`` (batch, n, d_model) is replaced by ``new``, except at position 0 of
    each example (its BOS), which is left alone as in ``hooks.py``."""
    new = torch.cat([resid[:, :1], new[:, 1:]], dim=1)
    model = mas.model
    x = model(new, start_at_layer=mas.layer + 1, stop_at_layer=model.cfg.n_layers)
    return x[batch.rows, batch.cols]


def edited_hidden(
    mas: ModelAndSae, batch: Batch, resid: Tensor, z: Tensor, dz: Tensor, mode: str
) -> Tensor:
    """:func:`upper_hidden` when the latents ``z`` of the hook residual ``resid`` get ``dz``."""
    if mode == "resid_add":
        new = resid + (dz @ write_matrix(mas.sae).to(dz.dtype)).to(resid.dtype)
    else:
        new = mas.sae.decode(z + dz).to(resid.dtype)
    return upper_hidden(mas, batch, resid, new)


def edited_logits(
    mas: ModelAndSae,
    batch: Batch,
    resid: Tensor,
    z: Tensor,
    dz: Tensor,
    mode: str,
    logits_dtype: str = "float32",
) -> Tensor:
    """Logits (T, vocab) of :func:`edited_hidden`."""
    return final_logits(mas.model, edited_hidden(mas, batch, resid, z, dz, mode), logits_dtype)


def response_hidden(
    mas: ModelAndSae,
    lora: SaeLora | None,
    batch: Batch,
    mode: str,
    precompute: bool = True,
) -> Tensor:
    """The residual after the last block (T, d_model) at the positions that predict an
    assistant token, with ``lora`` attached (None: the base model, or the bare SAE splice in
    ``sae_replace``)."""
    model = mas.model
    if not precompute:
        with attach_lora(mas, lora, mode):
            x = model(batch.tokens, stop_at_layer=model.cfg.n_layers)
        return x[batch.rows, batch.cols]
    resid = padded_resid(mas, batch)
    if lora is None and mode == "resid_add":
        x = model(resid, start_at_layer=mas.layer + 1, stop_at_layer=model.cfg.n_layers)
        return x[batch.rows, batch.cols]
    z = padded_latents(mas, batch)
    if lora is None or mode != "resid_add":
        return edited_hidden(mas, batch, resid, z, latent_delta(lora, z), mode)
    add = resid_delta(lora, z, write_matrix(mas.sae))
    return upper_hidden(mas, batch, resid, resid + add.to(resid.dtype))


def response_logits(
    mas: ModelAndSae,
    lora: SaeLora | None,
    batch: Batch,
    mode: str,
    precompute: bool = True,
    logits_dtype: str = "float32",
) -> Tensor:
    """Logits (T, vocab) of :func:`response_hidden` (the losses below never hold them all at
    once: they unembed ``LOSS_CHUNK`` positions at a time)."""
    return final_logits(
        mas.model, response_hidden(mas, lora, batch, mode, precompute), logits_dtype
    )


def latent_delta(lora: SaeLora | None, z: Tensor) -> Tensor:
    """Δz for a batch of latents (batch, n, d_sae). Training hard-concrete gates are sampled
    once per example, as when examples ran one at a time."""
    if lora is None:
        return torch.zeros_like(z)
    if lora.gates and lora.training:
        return torch.cat([lora.delta(z[i : i + 1]) for i in range(z.shape[0])])
    return lora.delta(z)


def resid_delta(lora: SaeLora, z: Tensor, w: Tensor) -> Tensor:
    """Δz @ ``w`` for a batch of latents (batch, n, d_sae), through
    :meth:`SaeLora.delta_mapped` (Δz itself is never formed); gates as in :func:`latent_delta`."""
    w = w.to(lora.s.dtype)
    z = z.to(lora.s.dtype)
    if lora.gates and lora.training:
        return torch.cat([lora.delta_mapped(z[i : i + 1], w) for i in range(z.shape[0])])
    return lora.delta_mapped(z, w)


LOSS_CHUNK = 256
"""Loss positions unembedded at a time. With a 262k vocabulary one position's logits are 1 MB;
on 2 CPU cores the cross-entropy backward of 768 positions in one tensor took 2.9 s against
0.7 s in pieces of 192 or fewer (``bench/scale.py`` found batched training slower than
per-example before this)."""


def per_example_mean(values: Tensor, batch: Batch) -> Tensor:
    """The mean of ``values`` (T,) over each example's target positions: (batch,)."""
    sums = torch.zeros(len(batch.examples), dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, batch.rows, values)
    return sums / batch.counts.clamp_min(1).to(values.dtype)


def token_ce(model, hidden: Tensor, labels: Tensor, logits_dtype: str = "float32") -> Tensor:
    """CE (T,) of each position's next token from the last-block residual ``hidden``."""
    out = [
        F.cross_entropy(final_logits(model, h, logits_dtype).float(), y, reduction="none")
        for h, y in zip(hidden.split(LOSS_CHUNK), labels.split(LOSS_CHUNK), strict=True)
    ]
    return torch.cat(out) if out else hidden.new_zeros(0)


def token_kl(
    model, hidden: Tensor, teacher_hidden: Tensor, logits_dtype: str = "float32"
) -> Tensor:
    """KL(p_teacher ‖ p_student) (T,) at each position, from both last-block residuals."""
    out = []
    for h, th in zip(hidden.split(LOSS_CHUNK), teacher_hidden.split(LOSS_CHUNK), strict=True):
        t = F.log_softmax(final_logits(model, th, logits_dtype).float(), -1)
        s = F.log_softmax(final_logits(model, h, logits_dtype).float(), -1)
        out.append((t.exp() * (t - s)).sum(-1))
    return torch.cat(out) if out else hidden.new_zeros(0)


def batch_losses(
    mas: ModelAndSae,
    lora: SaeLora,
    batch: Batch,
    mode: str,
    precompute: bool = True,
    logits_dtype: str = "float32",
    teacher: SaeLora | None = None,
) -> Tensor:
    """One loss per example: the mean CE over its assistant tokens, or with ``teacher`` the mean
    KL from the teacher's next-token distributions (the teacher's without gradient)."""
    hidden = response_hidden(mas, lora, batch, mode, precompute)
    if teacher is None:
        return per_example_mean(token_ce(mas.model, hidden, batch.labels, logits_dtype), batch)
    with torch.no_grad():
        t = response_hidden(mas, teacher, batch, mode, precompute)
    return per_example_mean(token_kl(mas.model, hidden, t, logits_dtype), batch)


def example_loss(
    mas: ModelAndSae,
    lora: SaeLora,
    ex: Example,
    mode: str,
    precompute: bool = True,
    logits_dtype: str = "float32",
    teacher: SaeLora | None = None,
) -> Tensor:
    """:func:`batch_losses` of one example (a scalar)."""
    batch = make_batch(mas, [ex])
    return batch_losses(mas, lora, batch, mode, precompute, logits_dtype, teacher)[0]


@torch.no_grad()
def evaluate_ce(
    mas: ModelAndSae,
    lora: SaeLora | None,
    examples: list[Example],
    mode: str,
    precompute: bool = True,
    logits_dtype: str = "float32",
    micro_batch: int = 8,
) -> float:
    """Token-weighted mean CE on the assistant tokens of ``examples`` (gates deterministic)."""
    tot, n = torch.zeros((), device=device_of(mas)), 0
    was = lora.training if lora is not None else False
    if lora is not None:
        lora.eval()
    try:
        for part in chunks(examples, micro_batch):
            b = make_batch(mas, part)
            hidden = response_hidden(mas, lora, b, mode, precompute)
            tot += token_ce(mas.model, hidden, b.labels, logits_dtype).sum()
            n += len(b.labels)
    finally:
        if lora is not None:
            lora.train(was)
    return float(tot) / max(n, 1)
