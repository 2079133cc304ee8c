"""A dense residual-stream baseline: gated low-rank steering, in the style of pyreft's NodiReFT.

    Δh = relu(h @ R + c) @ V        R: (d_model, r), c: (r,), V: (r, d_model)

at the same hook point as the latent adapter, on every position but the BOS. NodiReFT edits
``h + Rᵀ(W h + b)`` with a non-orthogonal low-rank map; the ReLU here is the gate: a component
writes its direction ``V[j]`` only where the read ``h·R[:, j] + c[j]`` is positive, as the latent
adapter writes only where its (non-negative) read latents fire. It does not go through the SAE,
so it answers "does routing through the SAE cost anything?". ``rank`` is chosen by
:func:`rank_for_params` to match the trained parameters of a rank-1 latent adapter
(2·d_sae + 1).

Init: component 0 reads the contrastive direction (mean residual of in-topic minus off-topic
prompts at their last token, unit norm) with ``c[0]`` at the midpoint, so it starts gated on the
topic, as the latent adapter's contrastive init does; the others read random unit directions
with c = 0. ``V = 0``: the steer starts as an exact no-op. It trains on the same CE as the
latent adapter (``forward.token_ce`` at the positions predicting the first
``response_tokens`` answer tokens).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from saelora_core.adapter.batch import chunks, device_of, make_batch, tokenize_rows
from saelora_core.adapter.forward import hook_resids, padded_resid, per_example_mean, token_ce
from saelora_core.io.atomic import atomic_torch_save, atomic_write_json
from saelora_core.io.config import ConfigBase
from saelora_core.models.presets import ModelAndSae
from saelora_core.training.distributed import (
    all_reduce_grads_,
    barrier,
    broadcast_object,
    broadcast_params_,
    init_from_env,
    is_main,
    share,
)


class ResidSteer(nn.Module):
    """Δh = relu(h @ R + c) @ V (see the module doc)."""

    def __init__(self, d_model: int, rank: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        self.d_model, self.rank = d_model, rank
        r = torch.randn(d_model, rank, generator=generator)
        self.R = nn.Parameter(r / r.norm(dim=0, keepdim=True))
        self.c = nn.Parameter(torch.zeros(rank))
        self.V = nn.Parameter(torch.zeros(rank, d_model))

    def delta_resid(self, h: Tensor) -> Tensor:
        x = h.to(self.R.dtype)
        return (torch.relu(x @ self.R + self.c) @ self.V).to(h.dtype)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def rank_for_params(d_model: int, n_params: int) -> int:
    """The largest rank whose parameter count (r·(2·d_model + 1)) is at most ``n_params``."""
    return max(1, n_params // (2 * d_model + 1))


@dataclass
class SteerConfig(ConfigBase):
    rank: int = 6
    lr: float = 1e-2
    epochs: int = 4
    batch_size: int = 8
    micro_batch: int = 8
    max_len: int = 128
    response_tokens: int = 4
    seed: int = 0
    logits_dtype: str = "bfloat16"


def edited_resid(steer: ResidSteer, resid: Tensor) -> Tensor:
    new = resid + steer.delta_resid(resid)
    return torch.cat([resid[:, :1], new[:, 1:]], dim=1)  # BOS untouched, as in hooks.py


@torch.no_grad()
def contrastive_read_(steer: ResidSteer, mas: ModelAndSae, rows: list[dict]) -> None:
    """Component 0 reads mean(h | in-topic) − mean(h | off-topic) at the prompts' last token."""
    from saelora_core.models.chat import prompt_tokens

    means = {}
    for flag in (True, False):
        hs = []
        for r in rows:
            if _truthy(r.get("in_topic")) != flag:
                continue
            toks = prompt_tokens(mas.tokenizer, r["prompt"], mas.chat_format)
            h = mas.model(toks[None].to(device_of(mas)), stop_at_layer=mas.layer + 1)
            hs.append(h[0, -1].float())
        if not hs:
            return
        means[flag] = torch.stack(hs).mean(0)
    d = means[True] - means[False]
    u = d / d.norm().clamp_min(1e-12)
    steer.R[:, 0] = u.to(steer.R)
    steer.c[0] = -float((means[True] + means[False]) @ u) / 2


def _truthy(v: Any) -> bool:
    return v is True or (isinstance(v, str) and v.lower() == "true")


def train_steer(
    mas: ModelAndSae,
    dataset,
    cfg: SteerConfig,
    *,
    out_dir: str | Path,
    progress: bool = True,
) -> ResidSteer:
    """Train the steer on the dataset's train split; writes ``steer.pt`` + ``steer.json``. A
    finished run in ``out_dir`` with the same config is loaded instead of retrained.

    Under ``torchrun`` each rank trains on its share of every batch and the gradients are
    summed over the ranks (``distributed.py``); rank 0 alone reads and writes ``out_dir``."""
    init_from_env()
    out = Path(out_dir)
    finished = None
    if is_main() and (out / "steer.json").exists():
        import json

        meta = json.loads((out / "steer.json").read_text())
        if meta.get("config") == asdict(cfg) and meta.get("complete"):
            done = load_steer(out)
            finished = (meta["d_model"], meta["rank"], done.state_dict())
    finished = broadcast_object(finished)
    if finished is not None:
        steer = ResidSteer(finished[0], finished[1])
        steer.load_state_dict(finished[2])
        return steer.to(device_of(mas))
    rows = [dict(r) for r in dataset["train"]]
    train, skipped = tokenize_rows(mas, rows, cfg.max_len, cfg.response_tokens or None)
    if not train:
        raise ValueError(f"no usable training rows: {skipped[:3]}")
    hook_resids(mas, train, cfg.micro_batch)
    torch.manual_seed(cfg.seed)
    steer = ResidSteer(mas.model.cfg.d_model, cfg.rank, torch.Generator().manual_seed(cfg.seed))
    steer = steer.to(device_of(mas))
    contrastive_read_(steer, mas, rows)
    broadcast_params_(steer.parameters())
    opt = torch.optim.Adam(steer.parameters(), lr=cfg.lr)
    steps = math.ceil(len(train) / cfg.batch_size)
    model = mas.model
    history = []
    bar = tqdm(total=cfg.epochs * steps, disable=not progress or not is_main(), desc="train steer")
    for epoch in range(cfg.epochs):
        order = torch.randperm(
            len(train), generator=torch.Generator().manual_seed(cfg.seed + epoch)
        ).tolist()
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device_of(mas))
            for part in chunks(
                sorted(share(idx), key=lambda i: -len(train[i].chat.tokens)), cfg.micro_batch
            ):
                b = make_batch(mas, [train[i] for i in part])
                resid = padded_resid(mas, b)
                x = model(
                    edited_resid(steer, resid),
                    start_at_layer=mas.layer + 1,
                    stop_at_layer=model.cfg.n_layers,
                )[b.rows, b.cols]
                loss = per_example_mean(token_ce(model, x, b.labels, cfg.logits_dtype), b)
                loss = loss.sum() / len(idx)
                loss.backward()
                total = total + loss.detach()
            [total] = all_reduce_grads_(steer.parameters(), total)  # data parallel: summed
            opt.step()
            ce = float(total)
            history.append({"epoch": epoch + (step + 1) / steps, "train_ce": ce})
            bar.update(1)
            bar.set_postfix(ce=f"{ce:.3f}")
    bar.close()
    if is_main():
        save_steer(steer, out, {"config": asdict(cfg), "history": history, "complete": True})
    barrier()
    return steer


def save_steer(steer: ResidSteer, out_dir: str | Path, meta: dict[str, Any]) -> None:
    out = Path(out_dir)
    atomic_torch_save(
        {k: v.detach().cpu() for k, v in steer.state_dict().items()}, out / "steer.pt"
    )
    atomic_write_json(
        out / "steer.json",
        meta | {"d_model": steer.d_model, "rank": steer.rank, "n_params": steer.n_params()},
    )


def load_steer(out_dir: str | Path, mas: ModelAndSae | None = None) -> ResidSteer:
    import json

    out = Path(out_dir)
    meta = json.loads((out / "steer.json").read_text())
    steer = ResidSteer(meta["d_model"], meta["rank"])
    steer.load_state_dict(torch.load(out / "steer.pt", weights_only=True))
    return steer.to(device_of(mas)) if mas is not None else steer
