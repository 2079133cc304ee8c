"""Whether the Hugging Face hub can be reached, and the error that names what to download when it
cannot; `freeze` puts a loaded module in eval mode without gradients."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import torch


class PresetUnavailableError(RuntimeError):
    """A preset needs files that are neither cached locally nor downloadable right now."""


def freeze(module: torch.nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub ``huggingface_hub`` talks to (``HF_ENDPOINT``, default huggingface.co)
    accepts a connection; False at once under ``HF_HUB_OFFLINE``."""
    if os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "True"}:
        return False
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def cache_only_unless_reachable() -> Iterator[None]:
    """Inside the block, ``huggingface_hub`` reads only its local cache when the hub cannot be
    reached, so a missing file fails at once instead of after tens of seconds of retries (it
    reads ``HF_HUB_OFFLINE`` when imported, not when called)."""
    if hub_reachable():
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def require_hub(preset: str, what: str) -> None:
    if not hub_reachable():
        raise PresetUnavailableError(
            f"Preset {preset!r} needs {what}, which is not in the local Hugging Face cache, and "
            "the hub cannot be reached (offline or HF_HUB_OFFLINE=1). Download it on a machine "
            "with network access (e.g. `huggingface-cli download ...`) and copy the HF cache here, "
            "or use the offline default preset 'gemma-3-270m'."
        )
