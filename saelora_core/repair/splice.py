"""The SAE spliced into a Hugging Face causal LM, and the parts a repair can add to the splice.

At the output of decoder layer ``L`` (TransformerLens's ``blocks.L.hook_resid_post``)::

    z  = SAE.encode(x)
    z' = z + Δz                       latent adapter (SaeLora, sae_replace mode), if any
    x̂  = SAE.decode(z')
    x̂' = x̂ + U·(D·x̂)                  linear adapter, if any
    x  ← x̂'                           every position but BOS; BOS keeps its activation

The error term ``x - x̂`` is dropped. A peft LoRA on the model (``model_lora``) sits outside the
splice; :meth:`SplicedLM.logits` turns it off for the clean reference.

The splice runs in fp32 even under bf16 autocast: TopK selection in bf16 could pick other
latents than the SAE was trained with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from sae_lens import SAE
from torch import Tensor, nn

from saelora_core.adapter.sae_lora import SaeLora

Mode = Literal["clean", "spliced", "zero"]


class LinearAdapter(nn.Module):
    """``x̂ ↦ x̂ + U·D·x̂`` of rank r in residual space; U starts at 0, so it starts as the identity."""

    def __init__(self, d_model: int, rank: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.U = nn.Parameter(torch.zeros(d_model, rank))
        self.D = nn.Parameter(torch.randn(rank, d_model, generator=generator) / d_model**0.5)

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        return x + (x @ self.D.T) @ self.U.T


class Splice(nn.Module):
    """``x ↦ x̂'`` as in the module docstring; ``mode="zero"`` returns zeros instead."""

    def __init__(
        self,
        sae: SAE,
        *,
        linear: LinearAdapter | None = None,
        latent: SaeLora | None = None,
    ) -> None:
        super().__init__()
        self.sae, self.linear, self.latent = sae, linear, latent
        self.mode: Mode = "spliced"
        self.last_mse: Tensor | None = None
        """Mean over non-BOS positions of ‖x - x̂'‖² in the last spliced forward."""
        self.latent_probe: Tensor | None = None
        """When set to a zero tensor that requires grad, it is added to z: its gradient after a
        backward pass is ∂loss/∂z' (the latent adapter's gradient-SVD init reads it)."""
        self.last_z: Tensor | None = None
        """The SAE's latents z (before any latent adapter) in the last forward."""
        self.record = False
        """When True, each forward stores ``recorded``: x, x̂' and z' at the non-BOS positions."""
        self.recorded: dict[str, Tensor] = {}

    def reconstruct(
        self, x: Float[Tensor, "batch pos d_model"]
    ) -> Float[Tensor, "batch pos d_model"]:
        z = self.sae.encode(x)
        self.last_z = z
        if self.latent is not None:
            z = z + self.latent.delta(z)
        if self.latent_probe is not None:
            z = z + self.latent_probe
        x_hat = self.sae.decode(z)
        if self.linear is not None:
            x_hat = self.linear(x_hat)
        if self.record:
            self.recorded = {
                "x": x[:, 1:].detach(),
                "x_hat": x_hat[:, 1:].detach(),
                "z": z[:, 1:].detach(),
            }
        return x_hat

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        with torch.autocast(x.device.type, enabled=False):
            xf = x.float()
            if self.mode == "zero":
                new = torch.zeros_like(xf)
            else:
                new = self.reconstruct(xf)
                self.last_mse = (xf - new)[:, 1:].pow(2).sum(-1).mean()
            new = torch.cat([xf[:, :1], new[:, 1:]], dim=1)
        return new.to(x.dtype)


def decoder_layers(lm: nn.Module) -> nn.ModuleList:
    """The decoder blocks of an HF causal LM, also through a peft wrapper."""
    base: Any = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # type: ignore[operator]
    layers = getattr(base.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"cannot find the decoder layers of {type(base).__name__}")
    return layers


class SplicedLM:
    """An HF causal LM with a :class:`Splice` at the output of decoder layer ``layer``."""

    def __init__(self, lm: nn.Module, splice: Splice, layer: int) -> None:
        layers = decoder_layers(lm)
        if not 0 <= layer < len(layers):
            raise ValueError(f"layer {layer} is out of range for a {len(layers)}-layer model")
        d_model = lm.get_input_embeddings().weight.shape[1]  # type: ignore[operator]
        if splice.sae.cfg.d_in != d_model:
            from saelora_core.sae.loading import SaeMismatchError

            raise SaeMismatchError(
                f"SAE d_in={splice.sae.cfg.d_in} does not match the model's hidden size "
                f"{d_model}; pick an SAE trained on this model."
            )
        self.lm, self.splice, self.layer = lm, splice, layer
        self._active = False
        self._handle = layers[layer].register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if not self._active:
            return output
        if isinstance(output, tuple):
            return (self.splice(output[0]), *output[1:])
        return self.splice(output)

    def remove(self) -> None:
        self._handle.remove()

    @contextlib.contextmanager
    def _state(self, mode: Mode) -> Iterator[None]:
        disable = (
            self.lm.disable_adapter()  # type: ignore[operator]
            if mode == "clean" and hasattr(self.lm, "disable_adapter")
            else contextlib.nullcontext()
        )
        self._active, self.splice.mode = mode != "clean", mode if mode != "clean" else "spliced"
        try:
            with disable:
                yield
        finally:
            self._active, self.splice.mode = False, "spliced"

    def logits(
        self, tokens: Int[Tensor, "batch pos"], mode: Mode = "spliced"
    ) -> Float[Tensor, "batch pos d_vocab"]:
        """``clean``: no splice and the model LoRA off; ``spliced``: the splice with every part
        and the LoRA on; ``zero``: the hook point zero-ablated (BOS kept), LoRA on."""
        with self._state(mode):
            return self.lm(input_ids=tokens).logits  # type: ignore[no-any-return]
