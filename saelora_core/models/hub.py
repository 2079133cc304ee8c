"""Whether the Hugging Face hub can be reached, and the error that names what to download when it
cannot; `freeze` puts a loaded module in eval mode without gradients."""

from __future__ import annotations

import os
import socket

import torch


class PresetUnavailableError(RuntimeError):
    """A preset needs files that are neither cached locally nor downloadable right now."""


def freeze(module: torch.nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "True"}:
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def require_hub(preset: str, what: str) -> None:
    if not hub_reachable():
        raise PresetUnavailableError(
            f"Preset {preset!r} needs {what}, which is not in the local Hugging Face cache, and "
            "the hub cannot be reached (offline or HF_HUB_OFFLINE=1). Download it on a machine "
            "with network access (e.g. `huggingface-cli download ...`) and copy the HF cache here, "
            "or use the offline default preset 'gemma-3-270m'."
        )
