"""One row of the comparison: what a method changes in the model, and how to run it.

Every method is measured on the same TransformerLens model through the same functions
(``generate.generate`` and full-sequence forwards), so the rows differ only in the edit:

| kind     | edit                                                   | trainable parameters   |
| -------- | ------------------------------------------------------ | ---------------------- |
| base     | none                                                   | 0                      |
| prompt   | an instruction appended to every prompt, no weights    | 0                      |
| latent   | a ``SaeLora`` at the hook (``hooks.attach_lora``)      | r·(2·d_sae + 1)        |
| steer    | a ``steer.ResidSteer`` at the hook                     | r·(2·d_model + 1)      |
| peft     | LoRA weight deltas on the projections (``peft_patch``) | r·(d_in + d_out) each  |

A row is named by a spec ``NAME=KIND[:PATH]`` (``RowSpec.parse``). Its **weights hash** (a
sha256 over its tensors, or of its prompt suffix) keys the generation cache, so an answer
is generated once per (weights, prompt, settings).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from saelora_core.adapter.generate import generate
from saelora_core.adapter.hooks import attach_lora
from saelora_core.compare.peft_patch import patched_weights, peft_deltas_from_dir
from saelora_core.io.paths import repo_relative
from saelora_core.models.presets import ModelAndSae

Kind = Literal["base", "prompt", "latent", "steer", "peft"]
KINDS: tuple[str, ...] = ("base", "prompt", "latent", "steer", "peft")
PROMPT_INSTRUCTION = "If this question is about mathematics, {guideline}."
"""The prompt baseline's instruction (as in ``studies/distinct_budget.py``)."""


@dataclass(frozen=True)
class RowSpec:
    name: str
    kind: str
    path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"row {self.name!r}: unknown kind {self.kind!r}; use one of {KINDS}")
        if self.kind in ("latent", "steer", "peft") and not self.path:
            raise ValueError(
                f"row {self.name!r}: a {self.kind} row needs a path (NAME={self.kind}:PATH)"
            )

    @classmethod
    def parse(cls, text: str) -> RowSpec:
        """``NAME=KIND[:PATH]``, e.g. ``"peft LoRA r1=peft:runs/compare/french-peft-r1"``; the
        name may itself hold "=" (``"k=16 student=latent:..."``)."""
        m = re.match(rf"^(.+)=({'|'.join(KINDS)})(?::(.*))?$", text.strip())
        if m is None:
            name, sep, rest = text.partition("=")
            if sep and name.strip():
                kind = rest.split(":", 1)[0].split("=")[-1]
                raise ValueError(f"row {text!r}: unknown kind {kind!r}; use one of {KINDS}")
            raise ValueError(f"row spec {text!r}: write NAME=KIND[:PATH], e.g. base=base")
        return cls(m.group(1).strip(), m.group(2), (m.group(3) or "").strip() or None)


@dataclass
class Edit:
    name: str
    kind: str
    adapter: Any = None
    """A ``SaeLora`` or ``ResidSteer`` (hooked at ``mas.hook_name``), or None."""
    deltas: dict[str, Tensor] | None = None
    """peft LoRA weight deltas on the TransformerLens parameters."""
    mode: str = "resid_add"
    prompt_suffix: str = ""
    trainable_params: int = 0
    nonzero_params: int = 0
    distinct_latents: tuple[int, int] | None = None
    """(read, write) for latent adapters."""
    source: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def weights_hash(self) -> str:
        """sha256 (16 hex) over the edit's kind, mode, prompt suffix and tensors."""
        h = hashlib.sha256(json.dumps([self.kind, self.mode, self.prompt_suffix]).encode())
        tensors: dict[str, Tensor] = {}
        if self.adapter is not None:
            tensors |= {f"adapter.{k}": v for k, v in self.adapter.state_dict().items()}
        if self.deltas:
            tensors |= {f"delta.{k}": v for k, v in self.deltas.items()}
        for k in sorted(tensors):
            t = tensors[k].detach().float().cpu().contiguous()
            h.update(k.encode() + str(tuple(t.shape)).encode() + t.numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def changes_weights(self) -> bool:
        return self.adapter is not None or bool(self.deltas)

    def prompts(self, prompts: list[str]) -> list[str]:
        return [f"{p}\n\n{self.prompt_suffix}" if self.prompt_suffix else p for p in prompts]

    def generate(self, mas: ModelAndSae, prompts: list[str], **kw) -> list[str]:
        """Greedy answers with this edit (prompt suffix, hook and weight deltas)."""
        with patched_weights(mas.model, self.deltas):
            return generate(mas, self.prompts(prompts), self.adapter, mode=self.mode, **kw)

    @contextlib.contextmanager
    def attached(self, mas: ModelAndSae) -> Iterator[None]:
        """Within the block, full-sequence forwards of ``mas.model`` carry the edit's weights
        (the prompt suffix is not part of it)."""
        if self.adapter is None and self.mode == "resid_add":
            with patched_weights(mas.model, self.deltas):
                yield
            return
        with patched_weights(mas.model, self.deltas), attach_lora(mas, self.adapter, self.mode):
            yield


def lora_params(lora) -> tuple[int, int]:
    """(trainable, nonzero) parameters of an adapter's tensors."""
    total = sum(p.numel() for p in lora.parameters())
    nonzero = sum(int(p.detach().ne(0).sum()) for p in lora.parameters())
    return total, nonzero


def load_edit(spec: RowSpec, mas: ModelAndSae, *, guideline: str = "") -> Edit:
    """The edit a row spec names, loaded onto ``mas``'s device."""
    from saelora_core.adapter.batch import device_of

    if spec.kind == "base":
        return Edit(spec.name, "base")
    if spec.kind == "prompt":
        suffix = PROMPT_INSTRUCTION.format(guideline=guideline or "respond in French")
        return Edit(spec.name, "prompt", prompt_suffix=suffix, info={"instruction": suffix})
    path = Path(spec.path or "")
    if not path.exists():
        raise FileNotFoundError(f"row {spec.name!r}: {path} does not exist")
    if spec.kind == "latent":
        from saelora_core.adapter.saving import load_lora

        loaded = load_lora(path, sae_identity=mas.sae_identity)
        lora = loaded.lora.to(device_of(mas)).eval()
        total, nonzero = lora_params(lora)
        read, write = lora.distinct_latents()
        return Edit(
            spec.name, "latent", adapter=lora, mode=loaded.metadata.get("mode", "resid_add"),
            trainable_params=total, nonzero_params=nonzero,
            distinct_latents=(len(read), len(write)), source=repo_relative(path),
            info={"rank": lora.rank},
        )  # fmt: skip
    if spec.kind == "steer":
        from saelora_core.training.steer import load_steer

        steer = load_steer(path, mas).eval()
        total, nonzero = lora_params(steer)
        return Edit(
            spec.name, "steer", adapter=steer, trainable_params=total, nonzero_params=nonzero,
            source=repo_relative(path), info={"rank": steer.rank},
        )  # fmt: skip
    from saelora_core.compare.peft_lora import read_metadata

    deltas = peft_deltas_from_dir(path, mas.model.cfg)
    meta = read_metadata(path)
    from safetensors.torch import load_file

    n = sum(v.numel() for v in load_file(str(path / "adapter_model.safetensors")).values())
    with torch.no_grad():
        nonzero = n if any(bool(d.ne(0).any()) for d in deltas.values()) else 0
    cfg = meta.get("config", {})
    return Edit(
        spec.name, "peft", deltas=deltas, trainable_params=n, nonzero_params=nonzero,
        source=repo_relative(path),
        info={"rank": cfg.get("rank"), "layers": cfg.get("layers"), "targets": cfg.get("targets")},
    )  # fmt: skip
