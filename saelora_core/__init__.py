"""saelora_core: sparse LoRA adapters in SAE latent space."""

from saelora_core.adapter.hooks import attach_lora, lora_resid_add_hook, sae_replace_hook
from saelora_core.adapter.sae_lora import SaeLora, penalty
from saelora_core.adapter.saving import CheckpointError, LoadedLora, load_lora, save_lora
from saelora_core.adapter.sparsity import project_, prune_topk, random_support_control
from saelora_core.data.config import DatasetConfig
from saelora_core.models.hub import PresetUnavailableError
from saelora_core.models.presets import PRESETS, ModelAndSae, load_model_and_sae
from saelora_core.sae.loading import SaeMismatchError
from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.loop import TrainResult, train_lora

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
