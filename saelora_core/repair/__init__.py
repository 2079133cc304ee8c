"""SAE-gap repair: make a spliced-in SAE cost the model less.

Four methods, one data path, one objective and one evaluation (see each module):

- ``model_lora``: peft LoRA on the model around the frozen SAE (Chen et al., arXiv 2501.19406);
- ``sae_finetune``: KL+MSE finetune of the SAE, k fixed (Karvonen, arXiv 2503.17272);
- ``linear_adapter``: ``x̂ + U·D·x̂`` on the SAE's output (the same paper's variant);
- ``latent_adapter``: this project's ``SaeLora`` in ``sae_replace`` mode, trained on the same KL.
"""

from saelora_core.repair.config import METHODS, PUBLISHED_LR, RepairConfig, RepairMethod
from saelora_core.repair.data import CorpusError, corpus_windows, read_texts, token_windows
from saelora_core.repair.evaluate import (
    Baseline,
    RepairEval,
    baseline,
    evaluate_repair,
    gap_closed_interval,
)
from saelora_core.repair.methods import RepairSetup, build_repair, load_linear_adapter
from saelora_core.repair.objective import (
    RepairLoss,
    clean_targets,
    fused_kl,
    kl_from_clean,
    kl_rows,
    repair_loss,
    token_ce,
)
from saelora_core.repair.run import TEXT_SETS, RepairRun, run_repair
from saelora_core.repair.splice import LinearAdapter, Splice, SplicedLM, decoder_layers
from saelora_core.repair.step import step_loss
from saelora_core.repair.train import RepairResult, distinct_latents, train_repair

__all__ = [
    "METHODS",
    "PUBLISHED_LR",
    "TEXT_SETS",
    "Baseline",
    "CorpusError",
    "LinearAdapter",
    "RepairConfig",
    "RepairEval",
    "RepairLoss",
    "RepairMethod",
    "RepairResult",
    "RepairRun",
    "RepairSetup",
    "Splice",
    "SplicedLM",
    "baseline",
    "build_repair",
    "clean_targets",
    "corpus_windows",
    "decoder_layers",
    "distinct_latents",
    "fused_kl",
    "kl_rows",
    "evaluate_repair",
    "gap_closed_interval",
    "kl_from_clean",
    "load_linear_adapter",
    "read_texts",
    "repair_loss",
    "run_repair",
    "step_loss",
    "token_ce",
    "token_windows",
    "train_repair",
]
