"""Pay the model's forward once: residual activations at the SAE's hook, cached on disk.

The token stream is sae_lens's: corpus documents in file order, joined by BOS, cut into
``context_size`` windows that each begin with BOS. :func:`stream_activations` runs the model on
that stream; :func:`cache_activations` writes it in shards in sae_lens's cached-activation
format (each shard a ``datasets`` dataset with an ``Array2D(context_size, d_in)`` column named
after the hook and a ``token_ids`` column, as ``CacheActivationsRunner`` writes them), so several
SAEs, or a resumed run, never run the model again. A killed run resumes at its last complete
shard; the same cache asked for more tokens is extended along the same stream (its shards are
always a prefix of it); a cache built with other settings is refused, with the reason.

:mod:`cached_batches` reads the shards back as training batches.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

INFO_FILE = "cache_info.json"


@dataclass(frozen=True)
class CacheSettings:
    """What a cache holds; a resume must match it exactly."""

    model_name: str
    hook_name: str
    layer: int
    d_in: int
    context_size: int
    total_tokens: int
    """Tokens to cache (rounded up to whole shards)."""
    seqs_per_shard: int
    corpus_sha256: str
    """SHA-256 of the corpus file the stream reads, so a rebuilt corpus is never mixed in."""
    dtype: str = "float32"
    model_dtype: str = "float32"
    """dtype the model's forward ran in (``bfloat16`` only where the hardware has it natively)."""


def token_windows(
    texts: Iterator[str], tokenizer, context_size: int, bos_id: int
) -> Iterator[list[int]]:
    """``[BOS] + (context_size - 1)`` tokens of the documents joined by BOS, window after window."""
    buf: list[int] = []
    width = context_size - 1
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        buf.extend([*ids, bos_id])
        while len(buf) >= width:
            yield [bos_id, *buf[:width]]
            buf = buf[width:]


def corpus_texts(path: str | Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)["text"]


@torch.no_grad()
def stream_activations(
    model, windows: Iterator[list[int]], hook_name: str, layer: int, batch_size: int = 16
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(tokens (b, ctx), activations (b, ctx, d_in) float32)`` for batches of windows."""
    batch: list[list[int]] = []

    def run(rows: list[list[int]]):
        tokens = torch.tensor(rows, dtype=torch.long)
        _, cache = model.run_with_cache(tokens, names_filter=hook_name, stop_at_layer=layer + 1)
        return tokens, cache[hook_name].float()

    for w in windows:
        batch.append(w)
        if len(batch) == batch_size:
            yield run(batch)
            batch = []
    if batch:
        yield run(batch)


def _features(settings: CacheSettings):
    from datasets import Array2D, Features, Sequence, Value

    return Features(
        {
            settings.hook_name: Array2D(
                shape=(settings.context_size, settings.d_in), dtype=settings.dtype
            ),
            "token_ids": Sequence(Value(dtype="int32"), length=settings.context_size),
        }
    )


def shard_dirs(cache_dir: str | Path) -> list[Path]:
    """Complete shards, in order (a shard is renamed into place only once fully written)."""
    return sorted(Path(cache_dir).glob("shard_[0-9][0-9][0-9][0-9][0-9]"))


def read_settings(cache_dir: str | Path) -> CacheSettings:
    path = Path(cache_dir) / INFO_FILE
    if not path.exists():
        raise FileNotFoundError(f"{cache_dir} holds no activation cache ({INFO_FILE} missing)")
    return CacheSettings(**json.loads(path.read_text())["settings"])


def cache_activations(
    model,
    corpus_train: str | Path,
    out_dir: str | Path,
    settings: CacheSettings,
    *,
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """Write (or finish) an activation cache of ``settings.total_tokens`` tokens."""
    from tqdm.auto import tqdm

    from saelora_core.io.atomic import atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / INFO_FILE
    if info_path.exists():
        old = read_settings(out)
        diff = {
            k: (getattr(old, k), getattr(settings, k))
            for k in asdict(settings)
            if k != "total_tokens" and getattr(old, k) != getattr(settings, k)
        }
        if diff:
            raise ValueError(
                f"{out} holds an activation cache built with other settings {diff} "
                "(cached, requested); pick another directory or delete this one"
            )
    atomic_write_json(info_path, {"settings": asdict(settings), "shards": []})
    seq_tokens = settings.context_size
    n_shards = math.ceil(settings.total_tokens / (settings.seqs_per_shard * seq_tokens))
    done = len(shard_dirs(out))
    for stale in out.glob(".tmp_shard_*"):
        shutil.rmtree(stale)
    if done >= n_shards:
        return out
    tok = model.tokenizer
    windows = token_windows(
        corpus_texts(corpus_train), tok, settings.context_size, tok.bos_token_id
    )
    skip = done * settings.seqs_per_shard
    for _ in range(skip):
        if next(windows, None) is None:
            break
    bar = tqdm(
        total=n_shards * settings.seqs_per_shard * seq_tokens,
        initial=skip * seq_tokens,
        unit="tok",
        unit_scale=True,
        desc="caching activations",
        disable=not progress,
    )
    acts: list[torch.Tensor] = []
    ids: list[torch.Tensor] = []
    shard, per = done, settings.seqs_per_shard
    for tokens, a in stream_activations(
        model, windows, settings.hook_name, settings.layer, batch_size
    ):
        acts.append(a.to(getattr(torch, settings.dtype)))
        ids.append(tokens.to(torch.int32))
        bar.update(tokens.numel())
        while shard < n_shards and sum(x.shape[0] for x in ids) >= per:
            a_all, t_all = torch.cat(acts), torch.cat(ids)
            shard = _write_shard(out, shard, a_all[:per], t_all[:per], settings)
            acts, ids = [a_all[per:]], [t_all[per:]]
        if shard >= n_shards:
            break
    rest = sum(x.shape[0] for x in ids)
    if rest and shard < n_shards:  # the corpus ran out: a final short shard
        _write_shard(out, shard, torch.cat(acts), torch.cat(ids), settings)
    bar.close()
    shards = [{"name": d.name, "sequences": shard_rows(d)} for d in shard_dirs(out)]
    atomic_write_json(
        info_path,
        {
            "settings": asdict(settings),
            "shards": shards,
            "tokens": cached_tokens(out),
        },
    )
    return out


def shard_rows(shard: Path) -> int:
    return int(json.loads((shard / "rows.json").read_text())["rows"])


def cached_tokens(cache_dir: str | Path) -> int:
    """Tokens in the cache's complete shards, whatever its target: a cache stopped early, or
    one still being written, trains on what it holds."""
    size = read_settings(cache_dir).context_size
    return sum(shard_rows(d) for d in shard_dirs(cache_dir)) * size


def _write_shard(
    out: Path, index: int, a: torch.Tensor, t: torch.Tensor, settings: CacheSettings
) -> int:
    from datasets import Dataset

    ds = Dataset.from_dict(
        {settings.hook_name: a.numpy(), "token_ids": t.numpy()}, features=_features(settings)
    )
    tmp = out / f".tmp_shard_{index:05d}"
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    disable_progress_bar()  # one bar, the cache's own
    try:
        ds.save_to_disk(str(tmp), num_shards=1)
    finally:
        enable_progress_bar()
    (tmp / "rows.json").write_text(json.dumps({"rows": int(a.shape[0])}))
    tmp.rename(out / f"shard_{index:05d}")
    return index + 1
