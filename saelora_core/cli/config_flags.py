"""Dataclass configs as command-line flags: one ``--field-name`` per field, and the config the
flags, a ``--config`` file and a ``--recipe`` describe together."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from saelora_core.training.config import LoraTrainingConfig
from saelora_core.training.recipes import RECIPES


def add_config_flags(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per dataclass field, typed from its default."""
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if isinstance(default, bool):
            p.add_argument(
                flag,
                dest=f.name,
                type=lambda s: s.lower() in {"1", "true", "yes"},
                default=None,
                metavar="BOOL",
            )
        elif default is None:
            # An optional field: its type comes from the annotation ("float | None", ...).
            ann = str(f.type)
            if "bool" in ann:
                kind = lambda s: s.lower() in {"1", "true", "yes"}  # noqa: E731
            elif "float" in ann:
                kind = float
            elif "int" in ann:
                kind = int
            else:
                kind = str
            p.add_argument(flag, dest=f.name, type=kind, default=None)
        else:
            # Choices are validated by the config's __post_init__, with a message listing them.
            p.add_argument(flag, dest=f.name, type=type(default), default=None)


def config_from_args(cls, args: argparse.Namespace, base: dict | None = None):
    d = dict(base or {})
    d.update(
        {
            f.name: getattr(args, f.name)
            for f in fields(cls)
            if getattr(args, f.name, None) is not None
        }
    )
    return cls.from_dict(d)


def train_config(args: argparse.Namespace) -> LoraTrainingConfig:
    """The config ``saelora train`` runs: the ``--recipe``'s fields, over them the ``--config``
    file's, over those the flags."""
    base = {**RECIPES[args.recipe]}
    if args.config:
        base.update(json.loads(Path(args.config).read_text()))
    return config_from_args(LoraTrainingConfig, args, base)
