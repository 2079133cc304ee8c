"""The runs ``tests/training/test_distributed.py`` compares: an adapter (with a kill and a
resume), a steer and two repair methods on the tiny models, written under one directory.

Run as ``torchrun --standalone --nproc_per_node 2 tests/training/distributed_worker.py OUT`` (data
parallel, gloo) or called in-process with world size 1 (the reference)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

from saelora_core import LoraTrainingConfig, train_lora
from saelora_core.repair import RepairConfig
from saelora_core.repair.train import train_repair
from saelora_core.testing import TINY_ROWS, tiny_hf_lm, tiny_model_and_sae, tiny_sae
from saelora_core.training.steer import SteerConfig, train_steer

ROWS = [
    {"id": str(i), "prompt": f"Say yes {i}", "response": "yes " * (1 + i % 3)} for i in range(12)
]
LORA = dict(
    lr=0.05,
    sparsity_weight=0.01,
    sparsity="l1_normalized",
    batch_size=5,  # 9 train rows: steps of 5 and 4, shared 3 + 2 and 2 + 2 over two ranks
    micro_batch=2,
    rank=2,
    epochs=2,
    max_len=64,
    eval_fraction=0.25,
    checkpoint_every=1,
    name="dp",
)
STEER = SteerConfig(rank=2, lr=0.05, epochs=2, batch_size=4, response_tokens=0, max_len=64)
CTX = 16


def repair_cfg(method: str) -> RepairConfig:
    return RepairConfig(
        method=method,
        train_tokens=3 * 4 * CTX,
        context_size=CTX,
        batch_size=4,
        autocast_bf16=False,
        adapter_rank=4,
        latent_rank=2,
        init_tokens=2 * CTX,
        curve_points=2,
        checkpoint_every=1,
        warmup_steps=0,
        lr=1e-2,
    )


def windows(tok, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(10, len(tok), (n, CTX - 1), generator=g)
    return torch.cat([torch.full((n, 1), tok.bos_token_id), body], 1)


class Stop(Exception):
    """Raised from ``on_step`` to kill a run after a checkpoint."""


def run_all(out: Path) -> dict[str, torch.Tensor]:
    """Every run; returns the trained tensors by name."""
    mas = tiny_model_and_sae()
    cfg = LoraTrainingConfig(**LORA)

    def kill_at_3(info):
        if info["step"] == 3:
            raise Stop

    with contextlib.suppress(Stop):
        train_lora(mas, ROWS, cfg, out_dir=out / "lora", progress=False, on_step=kill_at_3)
    res = train_lora(mas, ROWS, cfg, out_dir=out / "lora", progress=False)
    got = {f"lora.{k}": v.detach().cpu() for k, v in res.lora.state_dict().items()}
    steer = train_steer(mas, {"train": TINY_ROWS * 4}, STEER, out_dir=out / "steer", progress=False)
    got |= {f"steer.{k}": v.detach().cpu() for k, v in steer.state_dict().items()}
    for method in ("linear_adapter", "latent_adapter"):
        lm, tok = tiny_hf_lm()
        rep = train_repair(
            lm,
            tiny_sae(),
            1,
            repair_cfg(method),
            train_windows=windows(tok, 12, 0),
            curve_windows=windows(tok, 2, 9),
            out_dir=out / method,
            progress=False,
        )
        for name, mod in rep.setup.modules.items():
            got |= {f"{method}.{name}.{k}": v.detach().cpu() for k, v in mod.state_dict().items()}
    return got


if __name__ == "__main__":
    import torch.distributed as dist

    from saelora_core.training.distributed import init_from_env

    torch.set_num_threads(1)
    init_from_env()
    target = Path(sys.argv[1])
    result = run_all(target)
    torch.save(result, target / f"params.rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
