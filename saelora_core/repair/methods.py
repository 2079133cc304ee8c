"""What each repair method trains, and how its result is saved.

The four methods share the spliced model, the data, the objective and the evaluation; they
differ only here:

- ``model_lora``: peft LoRA (q, k, v, o, gate, up, down) on the blocks after the SAE's layer, or
  on all of them; the SAE is frozen. Saved in peft's own format (``peft/``).
- ``sae_finetune``: every parameter of a copy of the SAE, k fixed. Each decoder row keeps its
  norm: the gradient component parallel to the row is removed before the step and the row is
  rescaled to its norm after it. Saved in sae_lens's disk format (``sae/``), so
  ``load_model_and_sae(..., sae_path=...)`` runs every adapter and notebook on it.
- ``linear_adapter``: ``x̂ + U·D·x̂`` (``linear_adapter.safetensors``).
- ``latent_adapter``: an ``SaeLora`` whose Δz is added before decoding (``sae_replace`` mode),
  initialised from the top singular vectors of ∂loss/∂(latent-to-latent map) with s = 0, and
  optionally top-k sparse after every step. Saved as an adapter directory (``lora/``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sae_lens import SAE
from torch import Tensor, nn

from saelora_core.adapter.sae_lora import SaeLora
from saelora_core.adapter.saving import build_metadata, save_lora
from saelora_core.adapter.sparsity import project_
from saelora_core.io.atomic import atomic_write_json
from saelora_core.repair.config import RepairConfig
from saelora_core.repair.splice import LinearAdapter, Splice, SplicedLM, decoder_layers


@dataclass
class RepairSetup:
    """A spliced model ready to train: which parameters train, at which learning rates."""

    method: str
    spliced: SplicedLM
    param_groups: list[dict[str, Any]]
    modules: dict[str, nn.Module] = field(default_factory=dict)
    """What trains, by name (``lora_model``, ``sae``, ``linear``, ``latent``)."""
    dec_norms: Tensor | None = None

    @property
    def sae(self) -> SAE:
        return self.spliced.splice.sae


def build_repair(hf: nn.Module, sae: SAE, layer: int, cfg: RepairConfig) -> RepairSetup:
    """Wrap ``hf`` and ``sae`` for ``cfg.method``; nothing but the method's own part trains."""
    gen = torch.Generator().manual_seed(cfg.seed)
    lr = cfg.effective_lr
    # Only the method's own part trains: a frozen SAE collects no gradients.
    sae.requires_grad_(False)
    if cfg.method == "model_lora":
        from peft import LoraConfig, get_peft_model

        n_layers = len(decoder_layers(hf))
        layers = list(range(layer + 1, n_layers)) if cfg.lora_layers == "after" else None
        if layers == []:
            raise ValueError(f"no block after layer {layer}: use lora_layers='all'")
        torch.manual_seed(cfg.seed)
        lm = get_peft_model(
            hf,
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,
                lora_dropout=cfg.lora_dropout,
                target_modules=list(cfg.lora_targets),
                layers_to_transform=layers,
            ),
        )
        spliced = SplicedLM(lm, Splice(sae), layer)
        params = [p for p in lm.parameters() if p.requires_grad]
        return RepairSetup(cfg.method, spliced, [{"params": params, "lr": lr}], {"lora_model": lm})
    if cfg.method == "sae_finetune":
        tuned = copy.deepcopy(sae)
        tuned.train()
        for p in tuned.parameters():
            p.requires_grad_(True)
        spliced = SplicedLM(hf, Splice(tuned), layer)
        return RepairSetup(
            cfg.method,
            spliced,
            [{"params": list(tuned.parameters()), "lr": lr}],
            {"sae": tuned},
            dec_norms=tuned.W_dec.detach().norm(dim=1, keepdim=True).clone(),
        )
    if cfg.method == "linear_adapter":
        lin = LinearAdapter(sae.cfg.d_in, cfg.adapter_rank, generator=gen)
        spliced = SplicedLM(hf, Splice(sae, linear=lin), layer)
        return RepairSetup(
            cfg.method, spliced, [{"params": list(lin.parameters()), "lr": lr}], {"linear": lin}
        )
    latent = SaeLora(sae.cfg.d_sae, cfg.latent_rank, init="zeros")
    spliced = SplicedLM(hf, Splice(sae, latent=latent), layer)
    groups = [
        {"params": [latent.a, latent.b], "lr": lr},
        {"params": [latent.s], "lr": cfg.latent_s_lr},
    ]
    return RepairSetup(cfg.method, spliced, groups, {"latent": latent})


def trainable_state(setup: RepairSetup) -> dict[str, Tensor]:
    """The trained tensors only (for checkpoints): LoRA weights, SAE, adapter."""
    out = {}
    for name, mod in setup.modules.items():
        for k, v in mod.state_dict().items():
            if name != "lora_model" or "lora_" in k:
                out[f"{name}.{k}"] = v.detach().cpu().clone()
    return out


def load_trainable_state(setup: RepairSetup, state: dict[str, Tensor]) -> None:
    for name, mod in setup.modules.items():
        sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        missing = mod.load_state_dict(sub, strict=name != "lora_model")
        if name == "lora_model" and missing.unexpected_keys:
            raise ValueError(f"checkpoint has unknown LoRA tensors: {missing.unexpected_keys[:3]}")


@torch.no_grad()
def after_backward(setup: RepairSetup) -> None:
    """SAE finetune: drop the gradient component parallel to each decoder row."""
    if setup.method != "sae_finetune":
        return
    w = setup.sae.W_dec
    if w.grad is not None:
        w.grad -= (w.grad * w).sum(1, keepdim=True) / w.pow(2).sum(1, keepdim=True) * w


@torch.no_grad()
def after_step(setup: RepairSetup, cfg: RepairConfig) -> None:
    """SAE finetune: rescale decoder rows to their norms; latent adapter: top-k projection."""
    if setup.method == "sae_finetune" and setup.dec_norms is not None:
        w = setup.sae.W_dec
        w.mul_(setup.dec_norms / w.norm(dim=1, keepdim=True).clamp_min(1e-12))
    if setup.method == "latent_adapter" and cfg.latent_topk > 0:
        project_(setup.modules["latent"], "topk", k=cfg.latent_topk)  # type: ignore[arg-type]


def init_latent_adapter_(
    setup: RepairSetup, windows: Tensor, cfg: RepairConfig, loss_fn
) -> dict[str, list[float]]:
    """Â, B̂ from the top-r singular vectors of G = Σ_t z_tᵀ·∂loss/∂z'_t, the loss gradient with
    respect to a full latent-to-latent map (Δz = z·M), with s = 0: the adapter starts as an exact
    no-op whose scale has the largest first-order gain. Latents that never fire get exact 0 reads.
    ``loss_fn(tokens)`` returns the training loss of a window batch."""
    latent: SaeLora = setup.modules["latent"]  # type: ignore[assignment]
    splice = setup.spliced.splice
    d_sae = latent.d_sae
    if len(windows) == 0:
        raise ValueError("the latent adapter's gradient-SVD init needs init windows; add text")
    device = windows.device
    G = torch.zeros(d_sae, d_sae, device=device)
    fired = torch.zeros(d_sae, dtype=torch.bool, device=device)
    for i in range(0, len(windows), cfg.batch_size):
        batch = windows[i : i + cfg.batch_size]
        probe = torch.zeros(
            batch.shape[0], batch.shape[1], d_sae, device=device, requires_grad=True
        )
        splice.latent_probe = probe
        try:
            loss_fn(batch).backward()
        finally:
            splice.latent_probe = None
        z = splice.last_z
        assert z is not None and probe.grad is not None
        with torch.no_grad():
            zf = z[:, 1:].reshape(-1, d_sae).detach()
            G += zf.T @ probe.grad[:, 1:].reshape(-1, d_sae)
            fired |= (zf != 0).any(0)
    r = latent.rank
    if d_sae <= 16_384:
        U, S, Vh = torch.linalg.svd(-G)
    else:  # a 131k-latent SAE: only the top r singular pairs, without the full SVD
        U, S, V = torch.svd_lowrank(-G, q=r + 8)
        Vh = V.T
    with torch.no_grad():
        U = U[:, :r] * fired[:, None]  # exact zeros where the SVD leaves round-off
        latent.a.copy_(U)
        latent.b.copy_(Vh[:r])
        latent.s.zero_()
    after_step(setup, cfg)
    return {"init_top_singular_values": S[:r].tolist()}


def save_result(
    setup: RepairSetup, out_dir: Path, record: dict[str, Any], *, save_dtype: str = "bfloat16"
) -> Path:
    """Write the method's artifact under ``out_dir`` and ``out_dir/repair.json``; returns the
    artifact's path."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    if setup.method == "model_lora":
        path = out_dir / "peft"
        setup.modules["lora_model"].save_pretrained(str(path))  # type: ignore[operator]
    elif setup.method == "sae_finetune":
        from saelora_core.sae.train import recast_saved_weights

        path = out_dir / "sae"
        sae = setup.sae
        sae.eval()
        sae.save_model(path)
        if save_dtype != "float32":
            recast_saved_weights(path, save_dtype)
        atomic_write_json(path / "repair.json", record)
    elif setup.method == "linear_adapter":
        path = out_dir / "linear_adapter.safetensors"
        lin = setup.modules["linear"]
        save_file({k: v.detach().contiguous() for k, v in lin.state_dict().items()}, str(path))
    else:
        path = out_dir / "lora"
        latent: SaeLora = setup.modules["latent"]  # type: ignore[assignment]
        meta = build_metadata(
            latent,
            config={"name": out_dir.name, "rank": latent.rank, **record.get("config", {})},
            preset=record.get("preset", "custom"),
            sae_identity=record.get("sae", {}),
            layer=setup.spliced.layer,
            mode="sae_replace",
            history=record.get("history", []),
            extra={"repair": {k: v for k, v in record.items() if k != "history"}},
        )
        save_lora(latent, path, meta)
    atomic_write_json(out_dir / "repair.json", {**record, "artifact": path.name})
    return path


def load_linear_adapter(path: str | Path) -> LinearAdapter:
    from safetensors.torch import load_file

    sd = load_file(str(path))
    d_model, rank = sd["U"].shape
    lin = LinearAdapter(d_model, rank)
    lin.load_state_dict(sd)
    for p in lin.parameters():
        p.requires_grad_(False)
    return lin
