"""A training dataset as tokenized examples: the train and eval splits of a DatasetDict, a
Dataset or a list of rows, with malformed rows skipped and named."""

from __future__ import annotations

import torch

from saelora_core.adapter.batch import Example, tokenize_rows
from saelora_core.models.presets import ModelAndSae
from saelora_core.training.config import LoraTrainingConfig


def dataset_split_rows(dataset, split: str) -> list[dict] | None:
    if hasattr(dataset, "keys") and callable(dataset.keys) and split in dataset:  # DatasetDict
        return list(dataset[split])
    if split == "train" and not (hasattr(dataset, "keys") and callable(dataset.keys)):
        return list(dataset)
    return None


def split_dataset(
    mas: ModelAndSae, dataset, cfg: LoraTrainingConfig
) -> tuple[list[Example], list[Example], list[str]]:
    train_rows = dataset_split_rows(dataset, "train")
    if not train_rows:
        raise ValueError(
            "the training dataset is empty: build one with `saelora dataset make` "
            "or pass rows with 'prompt' and 'response'"
        )
    train, skipped = tokenize_rows(mas, train_rows, cfg.max_len, cfg.response_tokens or None)
    eval_rows = dataset_split_rows(dataset, "eval")
    if eval_rows is not None:
        ev, sk = tokenize_rows(mas, eval_rows, cfg.max_len, cfg.response_tokens or None)
        skipped += sk
    else:
        g = torch.Generator().manual_seed(cfg.seed)
        perm = torch.randperm(len(train), generator=g).tolist()
        n_eval = int(len(train) * cfg.eval_fraction)
        ev, train = [train[i] for i in perm[:n_eval]], [train[i] for i in perm[n_eval:]]
    if not train:
        raise ValueError(
            f"no usable training rows; all {len(train_rows)} were malformed: {skipped[:3]}"
        )
    return train, ev, skipped
