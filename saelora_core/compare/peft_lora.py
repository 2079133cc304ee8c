"""The standard baseline: a peft LoRA on the model's own projections, trained like the demo.

It answers "what does ordinary LoRA get on the same data, with how many parameters?". The model
is the Hugging Face one the repair subsystem uses (``models.load_hf_causal_lm``: for the default
preset the same dequantized weights as the TransformerLens model). LoRA (Hu et al. 2021) adds
``ΔW = (α / r) · B·A`` to each target projection; peft starts ``B = 0``, so at init the model is
unchanged (tested).

- **Targets**: the attention and MLP projections (q, k, v, o, gate, up, down) of the blocks
  after the hook layer (``layers="after"``: the latent adapter edits the residual after block L,
  so only blocks L+1.. can use it), or of every block (``layers="all"``).
- **Data and budget**: the behaviour dataset's train split, the same turns, the same targets
  (the positions predicting the first ``response_tokens`` answer tokens, ``forward.targets``),
  the same batch size, epochs and ``max_len`` as the demo's ``recommended`` recipe, so it sees
  the same tokens as the latent adapter. The loss is each example's mean CE over its targets,
  averaged over the batch, as in ``forward.batch_losses``.
- **Parameters**: ``r·(d_in + d_out)`` per target projection; :func:`trainable_params`
  counts them, next to the latent adapter's ``r·(2·d_sae + 1)`` and the steer's
  ``r·(2·d_model + 1)`` (``param_budget``).

The result is saved in peft's format (``adapter_config.json`` + ``adapter_model.safetensors``,
read back by ``PeftModel.from_pretrained``) with this project's ``metadata.json`` beside it
(config, preset, layer, dataset, guideline, detector, parameter count, history; never a
secret). Training checkpoints ``train_state.pt`` after each epoch; a re-run with the same
config resumes there, and a finished run is loaded instead of retrained.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from saelora_core.adapter.batch import chunks, targets
from saelora_core.adapter.saving import VERSION
from saelora_core.io.atomic import atomic_torch_save, atomic_write_bytes, atomic_write_json
from saelora_core.models.chat import format_turn

PEFT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
META_FILE = "metadata.json"
STATE_FILE = "train_state.pt"


@dataclass
class PeftLoraConfig:
    """One peft LoRA baseline. The data settings default to the demo's ``recommended`` recipe."""

    rank: int = 1
    alpha: float | None = None
    """LoRA's α (the update is scaled by α / r); None: 2·r, so the scale is 2 at every rank."""
    layers: Literal["after", "all"] = "after"
    """``after``: the blocks after the hook layer; ``all``: every block."""
    targets: list[str] = field(default_factory=lambda: list(PEFT_TARGETS))
    lr: float = 2e-3
    """AdamW learning rate. The budget is the demo's ~52 optimizer steps, far fewer than
    LoRA's usual thousands, hence a rate above the common 1e-4."""
    weight_decay: float = 0.0
    epochs: int = 4
    batch_size: int = 8
    micro_batch: int = 8
    max_len: int = 128
    response_tokens: int = 4
    seed: int = 0
    name: str = "peft-lora"

    def __post_init__(self) -> None:
        bad = [
            k
            for k, ok in {
                "rank": self.rank >= 1,
                "alpha": self.alpha is None or self.alpha > 0,
                "layers": self.layers in ("after", "all"),
                "targets": bool(self.targets) and set(self.targets) <= set(PEFT_TARGETS),
                "lr": self.lr > 0,
                "epochs": self.epochs >= 1,
                "batch_size": self.batch_size >= 1,
                "micro_batch": self.micro_batch >= 1,
                "max_len": self.max_len >= 8,
                "response_tokens": self.response_tokens >= 0,
            }.items()
            if not ok
        ]
        if bad:
            raise ValueError(
                "invalid PeftLoraConfig values: "
                + ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
                + f" (targets must be a non-empty subset of {list(PEFT_TARGETS)})"
            )

    @property
    def lora_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.rank

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PeftLoraResult:
    model: nn.Module
    """The peft-wrapped Hugging Face model (LoRA layers injected)."""
    out_dir: Path
    metadata: dict[str, Any]
    history: list[dict[str, float]]


def n_decoder_layers(hf: nn.Module) -> int:
    return int(hf.config.num_hidden_layers)  # type: ignore[union-attr]


def target_layers(hf: nn.Module, layer: int, which: str) -> list[int] | None:
    """The block indices LoRA goes on (None: all of them)."""
    if which == "all":
        return None
    out = list(range(layer + 1, n_decoder_layers(hf)))
    if not out:
        raise ValueError(f"no block after the hook layer {layer}: use layers='all'")
    return out


def wrap_peft(hf: nn.Module, cfg: PeftLoraConfig, layer: int) -> nn.Module:
    """``hf`` with LoRA injected on ``cfg``'s targets (peft's init: B = 0, a no-op)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)  # peft draws A from the global generator
    return get_peft_model(
        hf,  # type: ignore[arg-type]
        LoraConfig(
            r=cfg.rank,
            lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]
            lora_dropout=0.0,
            target_modules=list(cfg.targets),
            layers_to_transform=target_layers(hf, layer, cfg.layers),
        ),
    )


def trainable_params(model: nn.Module) -> int:
    """The LoRA matrices' parameters (``lora_A``/``lora_B`` of every target), trainable or
    loaded frozen."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def param_budget(*, rank: int, d_sae: int | None = None, d_model: int | None = None) -> int:
    """Trained parameters of a rank-``rank`` latent adapter (``r·(2·d_sae + 1)``: a, b, s) or
    residual steer (``r·(2·d_model + 1)``: R, c, V), whichever dimension is given."""
    if (d_sae is None) == (d_model is None):
        raise ValueError("give exactly one of d_sae (latent adapter) or d_model (steer)")
    return rank * (2 * int(d_sae or d_model) + 1)  # type: ignore[arg-type]


def response_logits_hf(lm: nn.Module, tokens: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Logits (T, vocab) of a Hugging Face causal LM (plain or peft-wrapped) at ``(rows, cols)``
    only: the unembedding of a 262k vocabulary is most of a step, so no other position is
    unembedded. The final soft cap is applied where the config has one."""
    inner: Any = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # type: ignore[operator]
    hidden = inner.model(input_ids=tokens).last_hidden_state
    logits = inner.lm_head(hidden[rows, cols]).float()
    cap = getattr(inner.config, "final_logit_softcapping", None) or 0.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def tokenize_turns(tok, rows: list[dict], fmt: str, max_len: int, response_tokens: int | None):
    """The turns of ``rows`` (``prompt``, ``response``), as ``forward.tokenize_rows`` makes
    them; malformed rows are skipped and named."""
    out, skipped = [], []
    for i, r in enumerate(rows):
        try:
            prompt, response = cast(Any, r.get("prompt")), cast(Any, r.get("response"))
            out.append(format_turn(tok, prompt, response, cast(Any, fmt), max_len, response_tokens))
        except (ValueError, AttributeError, TypeError) as e:
            skipped.append(f"row {r.get('id', i)}: {e}")
    return out, skipped


def batch_ce(lm: nn.Module, turns: list, pad_id: int) -> Tensor:
    """Each turn's mean CE over its targets (batch,), the turns right-padded into one forward
    (causal: a real position never sees a pad that follows it)."""
    device = next(lm.parameters()).device
    n = max(len(t.tokens) for t in turns)
    tokens = torch.full((len(turns), n), pad_id, dtype=torch.long)
    rows, cols, labels = [], [], []
    for i, t in enumerate(turns):
        tokens[i, : len(t.tokens)] = t.tokens
        pos, nxt = targets(t)
        rows.append(torch.full_like(pos, i))
        cols.append(pos)
        labels.append(nxt)
    r, c, y = (torch.cat(x).to(device) for x in (rows, cols, labels))
    ce = F.cross_entropy(response_logits_hf(lm, tokens.to(device), r, c), y, reduction="none")
    sums = torch.zeros(len(turns), device=device).index_add(0, r, ce)
    return sums / torch.bincount(r, minlength=len(turns)).clamp_min(1)


def save_peft(model: nn.Module, out_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """peft's ``save_pretrained`` files, each moved into ``out_dir`` atomically, then
    ``metadata.json`` (last: its presence with ``complete`` marks a finished save)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".peft-") as tmp:
        model.save_pretrained(tmp)  # type: ignore[operator]
        for f in sorted(Path(tmp).iterdir()):
            if f.is_file():
                atomic_write_bytes(out / f.name, f.read_bytes())
    atomic_write_json(out / META_FILE, metadata)
    return out


def load_peft(hf: nn.Module, out_dir: str | Path) -> nn.Module:
    """``hf`` wrapped with the saved LoRA (peft format) in ``out_dir``."""
    from peft import PeftModel

    d = Path(out_dir)
    if not (d / "adapter_config.json").exists():
        raise FileNotFoundError(f"{d} holds no peft adapter (adapter_config.json)")
    return PeftModel.from_pretrained(hf, str(d))  # type: ignore[arg-type]


def read_metadata(out_dir: str | Path) -> dict[str, Any]:
    p = Path(out_dir) / META_FILE
    return json.loads(p.read_text()) if p.exists() else {}


def train_peft_lora(
    hf: nn.Module,
    tok,
    dataset,
    cfg: PeftLoraConfig,
    *,
    out_dir: str | Path,
    layer: int,
    chat_format: str = "qa",
    preset: str = "gemma-3-270m",
    extra_metadata: dict[str, Any] | None = None,
    progress: bool = True,
) -> PeftLoraResult:
    """Train the LoRA on ``dataset["train"]`` (see the module doc); ``hf`` is wrapped in place.

    ``layer``: the hook layer of the latent adapter it is compared with. A finished run in
    ``out_dir`` with the same config is loaded; an interrupted one resumes after its last
    finished epoch.
    """
    out = Path(out_dir)
    meta = read_metadata(out)
    if meta.get("complete") and meta.get("config") == cfg.to_dict():
        return PeftLoraResult(load_peft(hf, out), out, meta, meta.get("history", []))
    rows = [dict(r) for r in dataset["train"]]
    turns, skipped = tokenize_turns(
        tok, rows, chat_format, cfg.max_len, cfg.response_tokens or None
    )
    if not turns:
        raise ValueError(f"no usable training rows in the dataset: {skipped[:3]}")
    model = wrap_peft(hf, cfg, layer)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, float]] = []
    start = 0
    state_path = out / STATE_FILE
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        if json.loads(st["config"]) == cfg.to_dict():
            names = [n for n, p in model.named_parameters() if p.requires_grad]
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in st["lora"]:
                        p.copy_(st["lora"][n])
            if sorted(st["lora"]) != sorted(names):
                raise ValueError(f"{state_path} holds other LoRA tensors than this config makes")
            opt.load_state_dict(st["optimizer"])
            start, history = int(st["epoch"]) + 1, json.loads(st["history"])
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    steps = math.ceil(len(turns) / cfg.batch_size)
    n_params = trainable_params(model)
    model.train()
    bar = tqdm(total=(cfg.epochs - start) * steps, disable=not progress, desc=f"train {cfg.name}")
    for epoch in range(start, cfg.epochs):
        order = torch.randperm(
            len(turns), generator=torch.Generator().manual_seed(cfg.seed + epoch)
        ).tolist()
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for part in chunks(sorted(idx, key=lambda i: -len(turns[i].tokens)), cfg.micro_batch):
                loss = batch_ce(model, [turns[i] for i in part], pad).sum() / len(idx)
                loss.backward()
                total += float(loss.detach())
            opt.step()
            history.append({"epoch": epoch + (step + 1) / steps, "train_ce": total})
            bar.update(1)
            bar.set_postfix(ce=f"{total:.3f}")
        lora_state = {
            n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad
        }
        atomic_torch_save(
            {
                "lora": lora_state,
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "history": json.dumps(history),
                "config": json.dumps(cfg.to_dict()),
            },
            state_path,
        )
    bar.close()
    model.eval()
    metadata = {
        "library": "saelora_core",
        "version": VERSION,
        "kind": "peft_lora",
        "preset": preset,
        "layer": layer,
        "chat_format": chat_format,
        "config": cfg.to_dict(),
        "trainable_params": n_params,
        "train_rows": len(turns),
        "skipped_rows": skipped,
        "history": history,
        "complete": True,
        **(extra_metadata or {}),
    }
    save_peft(model, out, metadata)
    state_path.unlink(missing_ok=True)
    return PeftLoraResult(model, out, metadata, history)
