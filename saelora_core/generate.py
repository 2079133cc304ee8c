"""Greedy generation with (or without) the adapter, using a KV cache and left-padded batches.

Which positions the adapter edits must match :func:`saelora_core.hooks.attach_lora` on the full
sequence: every position except the leading BOS. The hooks in ``hooks.py`` skip index 0 of each
forward pass, which is only right for the first (prompt) forward. With a KV cache each later
forward holds just the new token, at index 0, and it must be edited. With left padding the BOS
of a short prompt is not at index 0 either. So the hook here applies the edit to all positions
(``skip_bos=False``) and then restores, per row, the positions a mask excludes: the padding and
the first real token (BOS) in the prompt forward; nothing in later forwards.

The equality with uncached full-sequence greedy decoding under ``attach_lora`` is tested token for
token in ``tests/test_generate.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from transformer_lens import TransformerLensKeyValueCache

from .chat import prompt_tokens, strip_response
from .hooks import hook_fn
from .lora import SaeLora
from .models import ModelAndSae


def lora_on(lora: SaeLora | None, device) -> SaeLora | None:
    """``lora`` itself when its weights are on ``device``, else a moved copy (the caller's
    module is never moved in place)."""
    if lora is None or lora.s.device == torch.device(device):
        return lora
    return copy.deepcopy(lora).to(device)


def stop_token_ids(tokenizer) -> set[int]:
    """EOS and, when the vocabulary has it as one token, Gemma's ``<end_of_turn>``."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(eot, int) and eot != tokenizer.unk_token_id:
        ids.add(eot)
    return ids


def _left_pad(seqs: list[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    n = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, n - len(s) :] = s
        mask[i, n - len(s) :] = 1
    return tokens, mask


def _masked_hook(
    mode: str, mas: ModelAndSae, lora: SaeLora | None, state: dict[str, Tensor]
) -> Callable[..., Tensor]:
    """The adapter hook on every position, then the unedited residual where ``state["edit"]`` is
    False (a ``(batch, pos)`` bool mask set before each forward)."""
    edit = hook_fn(mode, mas.sae, lora, skip_bos=False)

    def fn(resid: Tensor, *, hook) -> Tensor:
        new = edit(resid, hook=hook)
        return torch.where(state["edit"].to(resid.device)[..., None], new, resid)

    return fn


@torch.no_grad()
def generate_tokens(
    mas: ModelAndSae,
    prompts: list[Tensor],
    lora: SaeLora | None = None,
    *,
    mode: str = "resid_add",
    max_new_tokens: int = 64,
) -> list[list[int]]:
    """Greedy continuations (token ids, cut after the first stop token) of tokenized prompts,
    run as one left-padded batch with a KV cache.

    Each prompt's first token (its BOS) is left unedited, as under ``attach_lora``.
    """
    model = mas.model
    tok: Any = mas.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    stops = stop_token_ids(tok)
    tokens, attn = _left_pad(prompts, pad_id)
    device = model.cfg.device
    tokens, attn = tokens.to(device), attn.to(device)
    lora = lora_on(lora, device)
    first = attn.argmax(dim=1)  # index of each row's first real token (its BOS)
    edit = attn.bool().clone()
    edit[torch.arange(len(prompts), device=device), first] = False
    state = {"edit": edit}
    use_hook = not (lora is None and mode == "resid_add")
    hooks: list[Any] = [(mas.hook_name, _masked_hook(mode, mas, lora, state))] if use_hook else []

    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(prompts))
    out: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    with model.hooks(fwd_hooks=hooks):
        logits = model(tokens, attention_mask=attn, past_kv_cache=cache)
        state["edit"] = torch.ones((len(prompts), 1), dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    out[i].append(t)
                    done[i] = t in stops
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            new = nxt[:, None]
            logits = model(new, attention_mask=torch.ones_like(new), past_kv_cache=cache)
    return out


def generate(
    mas: ModelAndSae,
    prompts: list[str],
    lora: SaeLora | None = None,
    *,
    mode: str = "resid_add",
    max_new_tokens: int = 64,
    batch_size: int = 8,
    skip_special_tokens: bool = False,
) -> list[str]:
    """Greedy answers to ``prompts``, formatted with ``chat.prompt_tokens`` in ``mas.chat_format``.

    ``lora=None`` with ``resid_add`` is the plain model; with ``sae_replace`` it is the bare SAE
    splice (as in ``attach_lora``). Each answer is the decoded continuation cut with
    ``chat.strip_response``. Prompts are batched ``batch_size`` at a time with left padding.
    """
    tok: Any = mas.tokenizer
    stops = stop_token_ids(tok)
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [
            prompt_tokens(tok, p, mas.chat_format) for p in prompts[start : start + batch_size]
        ]
        for ids in generate_tokens(mas, chunk, lora, mode=mode, max_new_tokens=max_new_tokens):
            if ids and ids[-1] in stops:
                ids = ids[:-1]
            text = tok.decode(ids, skip_special_tokens=skip_special_tokens)
            texts.append(strip_response(text, mas.chat_format))
    return texts
