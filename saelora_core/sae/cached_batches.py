"""Training batches of activations: read back from a cache (:mod:`activation_cache`), or
computed by the model on the same token stream; the positions of special tokens (BOS, EOS,
padding) dropped, as sae_lens's ``exclude_special_tokens`` does."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import torch

from saelora_core.sae.activation_cache import (
    CacheSettings,
    corpus_texts,
    read_settings,
    shard_dirs,
    stream_activations,
    token_windows,
)


def special_token_ids(tokenizer) -> set[int]:
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    return {i for i in ids if i is not None}


def batches_from_chunks(
    chunks: Iterator[tuple[torch.Tensor, torch.Tensor]],
    batch_tokens: int,
    *,
    exclude_ids: set[int],
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """``(batch_tokens, d_in)`` float32 batches from ``(token_ids, activations)`` chunks, the
    positions of ``exclude_ids`` dropped; with a ``generator``, tokens are shuffled within
    each chunk (plus what the previous chunk left over)."""
    exclude = torch.tensor(sorted(exclude_ids), dtype=torch.long)
    leftover: torch.Tensor | None = None
    for tokens, acts in chunks:
        a = acts.float().reshape(-1, acts.shape[-1])
        a = a[~torch.isin(tokens.reshape(-1).long(), exclude)]
        buf = a if leftover is None else torch.cat([leftover, a])
        if generator is not None:
            buf = buf[torch.randperm(buf.shape[0], generator=generator)]
        n = buf.shape[0] // batch_tokens
        for j in range(n):
            yield buf[j * batch_tokens : (j + 1) * batch_tokens]
        leftover = buf[n * batch_tokens :]


def shard_chunks(
    cache_dir: str | Path,
    *,
    seed: int = 0,
    shuffle: bool = True,
    buffer_shards: int = 4,
    epochs: int = 1,
    n_shards: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(token_ids, activations)`` of ``buffer_shards`` shards at a time; with ``shuffle`` the
    shard order is permuted (seeded) in each epoch. ``n_shards`` reads only the first that
    many (a cache may grow while, or after, an SAE trains on it)."""
    from datasets import Dataset

    settings = read_settings(cache_dir)
    shards = shard_dirs(cache_dir)[:n_shards]
    if not shards:
        raise ValueError(f"{cache_dir} holds no complete shard yet")
    rng = random.Random(seed)
    for _ in range(epochs):
        order = list(shards)
        if shuffle:
            rng.shuffle(order)
        for i in range(0, len(order), buffer_shards):
            toks, acts = [], []
            for d in order[i : i + buffer_shards]:
                rows = Dataset.load_from_disk(str(d)).with_format("torch")[:]
                acts.append(rows[settings.hook_name])
                toks.append(rows["token_ids"])
            yield torch.cat(toks), torch.cat(acts)


def cached_batches(
    cache_dir: str | Path,
    batch_tokens: int,
    *,
    exclude_ids: set[int],
    seed: int = 0,
    shuffle: bool = True,
    buffer_shards: int = 4,
    epochs: int = 1,
    n_shards: int | None = None,
) -> Iterator[torch.Tensor]:
    """Training batches ``(batch_tokens, d_in)`` float32 from a cache, special tokens dropped.

    With ``shuffle``, shard order is permuted per epoch and tokens are shuffled within a buffer
    of ``buffer_shards`` shards (seeded: the same seed gives the same batches)."""
    chunks = shard_chunks(
        cache_dir,
        seed=seed,
        shuffle=shuffle,
        buffer_shards=buffer_shards,
        epochs=epochs,
        n_shards=n_shards,
    )
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return batches_from_chunks(chunks, batch_tokens, exclude_ids=exclude_ids, generator=gen)


def model_batches(
    model,
    corpus_train: str | Path,
    settings: CacheSettings,
    batch_tokens: int,
    *,
    exclude_ids: set[int],
    buffer_shards: int = 4,
    batch_size: int = 16,
) -> Iterator[torch.Tensor]:
    """The batches :func:`cached_batches` gives unshuffled, computed by the model instead of
    read from a cache (training without a cache)."""
    tok = model.tokenizer
    windows = token_windows(
        corpus_texts(corpus_train), tok, settings.context_size, tok.bos_token_id
    )
    stream = stream_activations(model, windows, settings.hook_name, settings.layer, batch_size)
    per_chunk = settings.seqs_per_shard * buffer_shards

    def chunks():
        toks, acts, n = [], [], 0
        for t, a in stream:
            toks.append(t)
            acts.append(a)
            n += t.shape[0]
            if n >= per_chunk:
                tt, aa = torch.cat(toks), torch.cat(acts)
                yield tt[:per_chunk], aa[:per_chunk]
                toks, acts, n = [tt[per_chunk:]], [aa[per_chunk:]], n - per_chunk
        if n:
            yield torch.cat(toks), torch.cat(acts)

    return batches_from_chunks(chunks(), batch_tokens, exclude_ids=exclude_ids)
