"""Greedy decoding on the Hugging Face twin of the frozen model, with the same adapter edit.

TransformerLens's KV cache stores keys *before* the rotary embedding, so every decoding step
rotates the whole cache again in every layer, and it expands Gemma's one KV head over the whole
cache on every step (``bench/generate_throughput.py --profile``). ``transformers``' Gemma-3
caches keys after the rotary embedding and attends with SDPA. This module decodes with that
model, loaded from the same weights (:func:`hf_twin`), and applies the adapter where
``adapter/hooks.py`` does: to the output of block ``L`` (``blocks.L.hook_resid_post``), every
position but each prompt's first real token (its BOS), through
:func:`saelora_core.adapter.generate.masked_hook`, so the edit is computed by the very same hook
function.

The loop is :func:`saelora_core.adapter.generate.generate_tokens`'s: left-padded prompts, one
prompt forward, then one token per row per step; logits only at the last position; tokens stay
on the device and are looked at every ``SYNC_EVERY`` steps, when rows that ended leave the batch
and the cache (``DynamicCache.batch_select_indices``). Tested token for token against the
TransformerLens path on a tiny Gemma-3 (``tests/adapter/test_hf_generate.py``); on the real
model the two compute the same function with different kernels, and
``bench/generate_throughput.py`` reports the fraction of identical answers.

``rescore`` (a CPU option): the unembedding (262k × 640 on Gemma-3-270M) is most of a decoding
step's arithmetic. With ``rescore=k`` it is first computed with an int8 copy of the head
(``torch.ao`` dynamic quantization, per-row scales), and only the ``k`` highest candidates are
scored again exactly in float32; the next token is the best of those. It is exact whenever the
true argmax is among the int8 top ``k``, which the tests check on the tiny model and the bench
measures (the fraction of identical answers) on the real one.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from saelora_core.adapter.batch import device_of
from saelora_core.adapter.generate import (
    DecodeRows,
    cut_after_stop,
    greedy_token,
    left_pad,
    lora_on,
    masked_hook,
    stop_token_ids,
)
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.models.hf import load_hf_causal_lm
from saelora_core.models.precision import cpu_has_native_bf16
from saelora_core.models.presets import PRESETS, ModelAndSae

RESCORE_TOP = 64
"""Candidates the int8 head hands to the exact rescoring (``rescore``): on the demo's adapter
and 40 prompts the answers were identical to the exact head's (``bench/generate_throughput.py``)."""

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOW_HEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_INT8_HEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def set_hf_twin(mas: ModelAndSae, hf: nn.Module) -> None:
    """Use ``hf`` (a ``transformers`` causal LM computing the same function as ``mas.model``)
    to decode for ``mas``."""
    _TWINS[mas.model] = hf


def hf_twin(mas: ModelAndSae, *, load: bool = True) -> nn.Module | None:
    """The ``transformers`` model with ``mas.model``'s weights: the one given to
    :func:`set_hf_twin`, else (``load``) the preset's, read from the same files as the
    TransformerLens model (:func:`models.hf.load_hf_causal_lm`) on its device and in its dtype.
    None for a model with no preset (a test model without a twin)."""
    hf = _TWINS.get(mas.model)
    if hf is None and load and mas.preset in PRESETS:
        dtype = mas.model.cfg.dtype
        hf, _ = load_hf_causal_lm(mas.preset, device=str(device_of(mas)), dtype=dtype)
        _TWINS[mas.model] = hf
    return hf


def cache_argument(module: nn.Module) -> str:
    """The name ``module.forward`` takes its KV cache by: ``cache`` (newer ``transformers``,
    which warns on the old name) or ``past_key_values``."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def decoder_layers(hf: nn.Module) -> nn.ModuleList:
    inner = getattr(hf, "model", hf)
    inner = getattr(inner, "language_model", inner)
    return inner.layers  # type: ignore[return-value]


def _block_hook(fn: Callable[..., Tensor]):
    """A forward hook on a decoder layer that replaces its output hidden states by ``fn``'s."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (fn(output[0], hook=None), *output[1:])
        return fn(output, hook=None)

    return hook


def _head(hf: nn.Module, h: Tensor, logits_dtype: str) -> Tensor:
    """Last-position logits up to a monotone soft cap (argmax only needs their order)."""
    head: Any = hf.get_output_embeddings()  # type: ignore[operator]
    w = head.weight
    low = logits_dtype == "bfloat16" and (w.device.type != "cpu" or cpu_has_native_bf16())
    if not low or w.dtype == torch.bfloat16:
        return head(h.to(w.dtype))
    wb = _LOW_HEAD.get(head)
    if wb is None or wb.device != w.device:
        wb = _LOW_HEAD[head] = w.detach().to(torch.bfloat16)
    return h.to(torch.bfloat16) @ wb.T


def int8_head(head: nn.Linear) -> nn.Module:
    """A dynamically quantized int8 copy of ``head`` (per-row weight scales), built once."""
    q = _INT8_HEAD.get(head)
    if q is None:
        import warnings

        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        plain = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None)
        plain.load_state_dict(head.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's notice that torchao will replace it
            q = quantize_dynamic(
                nn.Sequential(plain), {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
            )[0]
        _INT8_HEAD[head] = q
    return q


def rescored_argmax(head: nn.Linear, h: Tensor, k: int) -> Tensor:
    """argmax of ``head(h)`` (batch,) among the int8 head's top ``k`` candidates, scored
    exactly (float32)."""
    cand = int8_head(head)(h.float()).topk(k, dim=-1).indices
    exact = torch.einsum("bd,bkd->bk", h.to(head.weight.dtype), head.weight[cand])
    if head.bias is not None:
        exact = exact + head.bias[cand]
    return cand.gather(1, exact.argmax(-1, keepdim=True))[:, 0]


@torch.no_grad()
def hf_generate_tokens(
    mas: ModelAndSae,
    prompts: list[Tensor],
    lora: SaeLora | None = None,
    *,
    hf: nn.Module | None = None,
    mode: str = "resid_add",
    max_new_tokens: int = 64,
    logits_dtype: str = "float32",
    stop_when: Callable[[list[int]], bool] | None = None,
    rescore: int = 0,
) -> list[list[int]]:
    """:func:`saelora_core.adapter.generate.generate_tokens` decoded on the ``transformers``
    twin (``hf``, default :func:`hf_twin`): the same arguments, the same greedy continuations.
    ``rescore > 0``: the next token from the int8 head's top ``rescore`` candidates rescored
    exactly (CPU only; see the module doc)."""
    from transformers import DynamicCache

    model: Any = hf if hf is not None else hf_twin(mas)
    if model is None:
        raise ValueError(
            f"no transformers model for preset {mas.preset!r}: give hf= or call set_hf_twin"
        )
    tok: Any = mas.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    device = next(model.parameters()).device
    tokens, attn = left_pad(prompts, pad_id)
    tokens, attn = tokens.to(device), attn.to(device)
    lora = lora_on(lora, device)
    n = len(prompts)
    first = attn.argmax(dim=1)
    edit = attn.bool().clone()
    edit[torch.arange(n, device=device), first] = False
    state = {"edit": edit}
    handle = None
    if not (lora is None and mode == "resid_add"):
        layer = decoder_layers(model)[mas.layer]
        handle = layer.register_forward_hook(_block_hook(masked_hook(mode, mas, lora, state)))
    stop_ids = stop_token_ids(tok)
    stops = torch.tensor(sorted(stop_ids) or [-1], device=device)
    inner = model.model  # type: ignore[union-attr]

    head = model.get_output_embeddings()
    fast = rescore > 0 and device.type == "cpu" and logits_dtype == "float32"

    def next_token(h: Tensor) -> Tensor:
        if fast:
            return rescored_argmax(head, h[:, -1], rescore)
        return greedy_token(_head(model, h[:, -1], logits_dtype))

    cache = DynamicCache(config=model.config)
    cache_kw = cache_argument(inner)
    pos = (attn.cumsum(-1) - 1).clamp_min(0)
    book = DecodeRows(n, max_new_tokens, stops)
    try:
        h = inner(
            input_ids=tokens,
            attention_mask=attn,
            position_ids=pos,
            use_cache=True,
            **{cache_kw: cache},
        ).last_hidden_state
        nxt = next_token(h)
        nxt_pos = attn.sum(-1, keepdim=True)
        for step in range(max_new_tokens):
            finished, idx = book.step(step, nxt, stop_when)
            if finished:
                break
            if idx is not None:
                cache.batch_select_indices(idx)
                nxt, attn, nxt_pos = nxt[idx], attn[idx], nxt_pos[idx]
            attn = torch.cat([attn, attn.new_ones((len(book.rows), 1))], dim=1)
            state["edit"] = torch.ones((len(book.rows), 1), dtype=torch.bool, device=device)
            h = inner(
                input_ids=nxt[:, None],
                attention_mask=attn,
                position_ids=nxt_pos,
                use_cache=True,
                **{cache_kw: cache},
            ).last_hidden_state
            nxt_pos = nxt_pos + 1
            nxt = next_token(h)
    finally:
        if handle is not None:
            handle.remove()
    return [cut_after_stop(r, stop_ids) for r in book.results]
