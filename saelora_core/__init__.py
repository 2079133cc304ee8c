"""saelora_core: sparse LoRA adapters in SAE latent space."""

from .checkpoint import CheckpointError, LoadedLora, load_lora, save_lora
from .config import DatasetConfig, LoraTrainingConfig
from .hooks import attach_lora, lora_resid_add_hook, sae_replace_hook
from .lora import SaeLora, penalty, project_, prune_topk, random_support_control
from .models import (
    PRESETS,
    ModelAndSae,
    PresetUnavailableError,
    SaeMismatchError,
    load_model_and_sae,
)
from .train import TrainResult, train_lora

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "CheckpointError",
    "DatasetConfig",
    "LoadedLora",
    "LoraTrainingConfig",
    "ModelAndSae",
    "PresetUnavailableError",
    "SaeLora",
    "SaeMismatchError",
    "TrainResult",
    "attach_lora",
    "load_lora",
    "load_model_and_sae",
    "lora_resid_add_hook",
    "penalty",
    "project_",
    "prune_topk",
    "random_support_control",
    "sae_replace_hook",
    "save_lora",
    "train_lora",
]
