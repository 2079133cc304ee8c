"""Greedy generation with (or without) the adapter, using a KV cache and left-padded batches.

Which positions the adapter edits must match :func:`saelora_core.adapter.hooks.attach_lora` on the full
sequence: every position except the leading BOS. The hooks in ``hooks.py`` skip index 0 of each
forward pass, which is only right for the first (prompt) forward. With a KV cache each later
forward holds just the new token, at index 0, and it must be edited. With left padding the BOS
of a short prompt is not at index 0 either. So the hook here applies the edit to all positions
(``skip_bos=False``) and then restores, per row, the positions a mask excludes: the padding and
the first real token (BOS) in the prompt forward; nothing in later forwards.

The equality with uncached full-sequence greedy decoding under ``attach_lora`` is tested token for
token in ``tests/adapter/test_generate.py``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import TransformerLensKeyValueCache

from saelora_core.adapter.batch import device_of
from saelora_core.adapter.forward import final_logits
from saelora_core.adapter.hooks import hook_fn
from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.models.chat import prompt_tokens, strip_response, turn_ended
from saelora_core.models.presets import ModelAndSae


def lora_on(lora: SaeLora | None, device) -> SaeLora | None:
    """``lora`` itself when its weights are on ``device``, else a moved copy (the caller's
    module is never moved in place)."""
    if lora is None or next(lora.parameters()).device == torch.device(device):
        return lora
    return copy.deepcopy(lora).to(device)


def stop_token_ids(tokenizer) -> set[int]:
    """EOS and, when the vocabulary has it as one token, Gemma's ``<end_of_turn>``."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    eot = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(eot, int) and eot != tokenizer.unk_token_id:
        ids.add(eot)
    return ids


def greedy_token(logits: Tensor) -> Tensor:
    """The greedy next token of each row of ``logits`` (batch, vocab): the first maximal index,
    as ``argmax`` gives it (tested, ties included), through ``max``, which on the CPU scans a
    262k vocabulary about 4x faster (8.8 ms against 37.9 ms at batch 80 in bf16)."""
    return logits.max(-1).indices


def left_pad(seqs: list[Tensor], pad_id: int) -> tuple[Tensor, Tensor]:
    n = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, n - len(s) :] = s
        mask[i, n - len(s) :] = 1
    return tokens, mask


def masked_hook(
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
    logits_dtype: str = "float32",
    stop_when: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """Greedy continuations (token ids, cut after the first stop token) of tokenized prompts,
    run as one left-padded batch with a KV cache.

    Each prompt's first token (its BOS) is left unedited, as under ``attach_lora``. Only the
    last position's logits are computed (the prompt forward stops after the last block), and
    tokens stay on the model's device: every ``SYNC_EVERY`` steps the loop looks at them once,
    and drops the rows that have ended (a stop token, or ``stop_when(ids)`` true) from the batch
    and its KV cache, since a decoding step costs about as much per row as the row's cache is
    long. A dropped row's continuation is what it was when it ended; with ``stop_when`` it may
    stop before ``max_new_tokens``, which is the point: nothing after the end is used.
    """
    model = mas.model
    tok: Any = mas.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    tokens, attn = left_pad(prompts, pad_id)
    device = device_of(mas)
    tokens, attn = tokens.to(device), attn.to(device)
    lora = lora_on(lora, device)
    first = attn.argmax(dim=1)  # index of each row's first real token (its BOS)
    edit = attn.bool().clone()
    edit[torch.arange(len(prompts), device=device), first] = False
    state = {"edit": edit}
    use_hook = not (lora is None and mode == "resid_add")
    hooks: list[Any] = [(mas.hook_name, masked_hook(mode, mas, lora, state))] if use_hook else []
    stop_ids = stop_token_ids(tok)
    stops = torch.tensor(sorted(stop_ids) or [-1], device=device)
    n_layers = model.cfg.n_layers

    def next_token(x: Tensor) -> Tensor:
        return greedy_token(final_logits(model, x[:, -1], logits_dtype))

    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(prompts))
    book = DecodeRows(len(prompts), max_new_tokens, stops)
    with model.hooks(fwd_hooks=hooks):
        nxt = next_token(
            model(tokens, attention_mask=attn, past_kv_cache=cache, stop_at_layer=n_layers)
        )
        for step in range(max_new_tokens):
            finished, idx = book.step(step, nxt, stop_when)
            if finished:
                break
            if idx is not None:
                _keep_rows(cache, idx)
                nxt = nxt[idx]
            ones = torch.ones((len(book.rows), 1), dtype=torch.long, device=device)
            state["edit"] = ones.bool()
            x = model(
                nxt[:, None], attention_mask=ones, past_kv_cache=cache, stop_at_layer=n_layers
            )
            nxt = next_token(x)
    return [cut_after_stop(r, stop_ids) for r in book.results]


class DecodeRows:
    """The bookkeeping of a batched greedy decode, shared by every backend: each prompt's new
    tokens, which rows have ended, and which rows are still in the batch.

    Tokens stay on the device; every ``SYNC_EVERY`` steps (and at the last) they are copied to
    ``results`` once, and the rows that have ended (a stop token, or ``stop_when(ids)``) leave."""

    def __init__(self, n: int, max_new_tokens: int, stops: Tensor):
        self.results: list[list[int]] = [[] for _ in range(n)]
        self.rows = list(range(n))  # the prompt index of each row still in the batch
        self.out = torch.full((n, max_new_tokens), -1, dtype=torch.long, device=stops.device)
        self.done = torch.zeros(n, dtype=torch.bool, device=stops.device)
        self.since = 0  # the first column of ``out`` not yet copied to ``results``
        self.max_new_tokens = max_new_tokens
        self.stops = stops

    def step(
        self, step: int, nxt: Tensor, stop_when: Callable[[list[int]], bool] | None
    ) -> tuple[bool, Tensor | None]:
        """Record step ``step``'s tokens ``nxt``; returns ``(finished, keep)``: whether decoding
        is over, and the batch indices of the rows that stay when some just left (else None;
        the caller drops the others from its cache and its next tokens)."""
        self.out[:, step] = torch.where(self.done, -1, nxt)
        self.done |= torch.isin(nxt, self.stops)
        last = step == self.max_new_tokens - 1
        if not (last or (step + 1) % SYNC_EVERY == 0):
            return False, None
        for i, new in enumerate(self.out[:, self.since : step + 1].tolist()):
            self.results[self.rows[i]] += [t for t in new if t >= 0]
        self.since = step + 1
        ended = self.done.tolist()
        if stop_when is not None:
            ended = [e or stop_when(self.results[r]) for e, r in zip(ended, self.rows, strict=True)]
        keep = [i for i, e in enumerate(ended) if not e]
        if last or not keep:
            return True, None
        if len(keep) == len(self.rows):
            return False, None
        idx = torch.tensor(keep, device=self.out.device)
        self.rows = [self.rows[i] for i in keep]
        self.out, self.done = self.out[idx], self.done[idx]
        return False, idx


def cut_after_stop(ids: list[int], stops: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in stops:
            return ids[: i + 1]
    return ids


def _keep_rows(cache: TransformerLensKeyValueCache, idx: Tensor) -> None:
    """Keep only the batch rows ``idx`` of a TransformerLens KV cache (its entries' keys and
    values and its attention mask)."""
    for entry in cache.entries:
        entry.past_keys = entry.past_keys[idx]
        entry.past_values = entry.past_values[idx]
    cache.previous_attention_mask = cache.previous_attention_mask[idx]


GENERATE_BATCH = 40
"""Default prompts per generation batch. A decoding step reads every weight once whatever the
batch, so larger batches are cheaper per token (``bench/generate_throughput.py``: on 2 CPU
cores about 2.8x more tokens/s at 40 than at 8); the demo's prompts run 40 at a time."""
SYNC_EVERY = 4
"""Decoding steps between looks at the generated tokens (each waits for the device)."""


BACKENDS = ("tl", "hf", "hf-int8")
"""Generation backends: ``tl`` (the default, :func:`generate_tokens` on the TransformerLens
model), ``hf`` (its ``transformers`` twin, ``adapter/hf_generate.py``: equal to ``tl`` token for
token on the tiny Gemma-3; the twin costs a second copy of the weights, about 1.1 GB for
Gemma-3-270M) and ``hf-int8`` (the twin with an int8 candidate head rescored exactly: the
fastest on the CPU, but not exact by construction, since the true argmax can fall outside the
candidates)."""


def fastest_backend(mas: ModelAndSae) -> str:
    """``hf`` when the model has a ``transformers`` twin, else ``tl``. On the CPU the twin
    decodes faster (``bench/generate_throughput.py`` in bf16 on Gemma-3-270M: 1.2x at batch
    16, 1.7x at batch 40) and gives the same tokens in float32; in bf16 the two differ by
    rounding, as two batch sizes of either do. Loading the twin costs a second copy of the
    weights."""
    from saelora_core.adapter.hf_generate import hf_twin

    return "hf" if hf_twin(mas) is not None else "tl"


def decoder(mas: ModelAndSae, backend: str = "tl") -> Callable[..., list[list[int]]]:
    """The token decoder ``backend`` names (:data:`BACKENDS`), with :func:`generate_tokens`'s
    signature."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown generation backend {backend!r}; use one of {BACKENDS}")
    if backend == "tl":
        return generate_tokens
    from saelora_core.adapter.hf_generate import RESCORE_TOP, hf_generate_tokens, hf_twin

    if hf_twin(mas) is None:
        raise ValueError(
            f"the model of preset {mas.preset!r} has no transformers twin; use backend='tl'"
        )
    if backend == "hf":
        return hf_generate_tokens
    return functools.partial(hf_generate_tokens, rescore=RESCORE_TOP)


def generate(
    mas: ModelAndSae,
    prompts: list[str],
    lora: SaeLora | None = None,
    *,
    mode: str = "resid_add",
    max_new_tokens: int = 64,
    batch_size: int = GENERATE_BATCH,
    skip_special_tokens: bool = False,
    logits_dtype: str = "float32",
    progress: bool | str = False,
    backend: str = "tl",
) -> list[str]:
    """Greedy answers to ``prompts``, formatted with ``chat.prompt_tokens`` in ``mas.chat_format``.

    ``lora=None`` with ``resid_add`` is the plain model; with ``sae_replace`` it is the bare SAE
    splice (as in ``attach_lora``). Each answer is the decoded continuation cut with
    ``chat.strip_response``. Prompts are batched ``batch_size`` at a time with left padding,
    longest first, so a batch pads little; the answers come back in the prompts' order.
    ``progress``: a tqdm bar over the prompts (a string names it). ``backend``: ``tl`` (the
    default) decodes with the TransformerLens model (:func:`generate_tokens`); ``hf`` and
    ``hf-int8`` opt in to its ``transformers`` twin (:data:`BACKENDS`).
    """
    decode = decoder(mas, backend)
    tok: Any = mas.tokenizer
    stops = stop_token_ids(tok)
    ids = [prompt_tokens(tok, p, mas.chat_format) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    texts: dict[int, str] = {}
    desc = progress if isinstance(progress, str) else "generate"
    with tqdm(total=len(prompts), desc=desc, disable=not progress, unit="prompt") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            answers = decode(
                mas,
                [ids[i] for i in idx],
                lora,
                mode=mode,
                max_new_tokens=max_new_tokens,
                logits_dtype=logits_dtype,
                stop_when=lambda a: turn_ended(tok.decode(a)),
            )
            for i, a in zip(idx, answers, strict=True):
                if a and a[-1] in stops:
                    a = a[:-1]
                text = tok.decode(a, skip_special_tokens=skip_special_tokens)
                texts[i] = strip_response(text, mas.chat_format)
            bar.update(len(idx))
    return [texts[i] for i in range(len(prompts))]
