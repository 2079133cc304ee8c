"""An SAE's reconstruction on cached activations: explained variance, L0 and the latents that
never fire, over as many held-out tokens as a cache holds.

:mod:`evaluate` splices the SAE into the model and so runs it three times per window; that is
what the CE needs, but it limits the measure to a few thousand tokens. A latent that never fires
is only visible over many more (the issue's target is counted on ~1M held-out tokens), and those
need no CE: this reads an activation cache of the held-out split (:mod:`activation_cache`)
instead, the same positions (BOS, EOS and padding dropped) the SAE trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class CacheMetrics:
    tokens: int
    explained_variance: float
    """``1 - Σ‖x - x̂‖² / Σ‖x - x̄‖²`` (mean-centred) over every cached token."""
    mean_l0: float
    dead_fraction: float
    """Latents that fired on none of the tokens."""
    fire_count_quantiles: dict[str, float]
    """Tokens each latent fired on: its 1 %, 10 %, 50 % and 90 % quantiles over latents."""


@torch.no_grad()
def cache_metrics(
    sae,
    cache_dir: str | Path,
    *,
    exclude_ids: set[int],
    batch_tokens: int = 8192,
    max_tokens: int | None = None,
) -> CacheMetrics:
    """Metrics over the cache's tokens in order (the first ``max_tokens`` of them, if given);
    the last partial batch (under ``batch_tokens`` tokens) is not read."""
    from saelora_core.sae.cached_batches import cached_batches

    d_sae = sae.cfg.d_sae
    counts = torch.zeros(d_sae, dtype=torch.long)
    n, sse, sum_sq, l0 = 0, 0.0, 0.0, 0
    sum_x = None
    for x in cached_batches(cache_dir, batch_tokens, exclude_ids=exclude_ids, shuffle=False):
        if max_tokens is not None and n >= max_tokens:
            break
        x = x.float()
        z = sae.encode(x)
        x_hat = sae.decode(z)
        fired = z > 0
        counts += fired.sum(0)
        l0 += int(fired.sum())
        n += x.shape[0]
        sse += (x - x_hat).double().pow(2).sum().item()
        sum_sq += x.double().pow(2).sum().item()
        s = x.double().sum(0)
        sum_x = s if sum_x is None else sum_x + s
    if n == 0 or sum_x is None:
        raise ValueError(f"{cache_dir} holds no tokens")
    sst = sum_sq - sum_x.pow(2).sum().item() / n
    q = torch.quantile(counts.double(), torch.tensor([0.01, 0.1, 0.5, 0.9], dtype=torch.double))
    return CacheMetrics(
        tokens=n,
        explained_variance=1 - sse / sst,
        mean_l0=l0 / n,
        dead_fraction=(counts == 0).double().mean().item(),
        fire_count_quantiles={k: float(v) for k, v in zip(("1%", "10%", "50%", "90%"), q)},
    )
