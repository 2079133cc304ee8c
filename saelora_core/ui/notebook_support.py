"""What every notebook shares: paths from the environment, the cached model, the adapter list.

The notebooks read these environment variables (the tests use them to point a notebook at a
temporary folder and the tiny model):

- ``SAELORA_ROOT``: the folder holding ``loras/``, ``data/`` and ``exports/`` (the repo root);
- ``SAELORA_PRESET``: the model preset (``gemma-3-270m``; ``tiny`` is the test model);
- ``SAELORA_LORA``: an adapter directory to select first;
- ``SAELORA_DATASETS`` / ``SAELORA_DATASET``: the datasets folder and the dataset to select.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from saelora_core.adapter.saving import CheckpointError, LoadedLora, load_lora
from saelora_core.io.paths import REPO_ROOT
from saelora_core.models.hub import PresetUnavailableError
from saelora_core.models.presets import ModelAndSae, load_model_and_sae
from saelora_core.reporting.export import export_results

DEFAULT_LORA_NAME = "demo-math-upper"
"""The demo adapter with a measurable effect (math -> uppercase); the French flagship sits beside it."""
DEFAULT_DATASET_NAME = "demo-math-upper"


@dataclass(frozen=True)
class NotebookEnv:
    root: Path
    preset: str
    loras: Path
    lora_env: str | None
    default_lora: str
    datasets: Path
    default_dataset: str
    exports: Path


def notebook_env(name: str) -> NotebookEnv:
    """Paths and defaults for notebook ``name`` (its figures go to ``exports/<name>``)."""
    root = Path(os.environ.get("SAELORA_ROOT") or REPO_ROOT)
    lora_env = os.environ.get("SAELORA_LORA")
    return NotebookEnv(
        root=root,
        preset=os.environ.get("SAELORA_PRESET") or "gemma-3-270m",
        loras=root / "loras",
        lora_env=lora_env,
        default_lora=Path(lora_env).name if lora_env else DEFAULT_LORA_NAME,
        datasets=Path(os.environ.get("SAELORA_DATASETS") or root / "data" / "datasets"),
        default_dataset=os.environ.get("SAELORA_DATASET") or DEFAULT_DATASET_NAME,
        exports=root / "exports" / name,
    )


@functools.cache
def get_model(preset: str) -> ModelAndSae:
    """The frozen model + SAE, loaded once per process (``tiny``: the seconds-fast test model)."""
    if preset == "tiny":
        from saelora_core.testing import tiny_model_and_sae

        return tiny_model_and_sae()
    return load_model_and_sae(preset)


def adapter_choices(env: NotebookEnv) -> dict[str, Path]:
    """Adapters in ``loras/`` (those with a ``params.pt``), ``SAELORA_LORA`` first."""
    found = {p.parent.name: p.parent for p in sorted(env.loras.glob("*/params.pt"))}
    if env.lora_env:
        found = {Path(env.lora_env).name: Path(env.lora_env), **found}
    return found


def default_choice(choices: dict[str, Path], preferred: str) -> str:
    return preferred if preferred in choices else next(iter(choices))


def load_model_or_stop(preset: str) -> ModelAndSae:
    """:func:`get_model` under a marimo spinner; a preset that cannot load stops the cell with
    the reason."""
    import marimo as mo

    try:
        with mo.status.spinner(
            title=f"Loading {preset}", subtitle="model + SAE (cached after the first load)"
        ):
            return get_model(preset)
    except (PresetUnavailableError, FileNotFoundError) as err:
        mo.stop(True, mo.callout(mo.md(f"**Cannot load preset `{preset}`:** {err}"), kind="danger"))
        raise  # mo.stop raises; this line only tells the type checker


def adapter_picker_or_stop(env: NotebookEnv):
    """A dropdown of :func:`adapter_choices`; with none, the cell stops and says how to get one."""
    import marimo as mo

    choices = adapter_choices(env)
    mo.stop(
        not choices,
        mo.callout(
            mo.md(
                "No adapter in `loras/` yet: train one in `02_train.py` or run `make demo` "
                f"(it writes `loras/{DEFAULT_LORA_NAME}/`)."
            ),
            kind="warn",
        ),
    )
    return mo.ui.dropdown(
        choices, value=default_choice(choices, env.default_lora), label="adapter (loras/)"
    )


def load_adapter_or_stop(path: Path, mas: ModelAndSae) -> LoadedLora:
    """:func:`load_lora` checked against the loaded SAE; a mismatch stops the cell with why."""
    import marimo as mo

    try:
        return load_lora(path, sae_identity=mas.sae_identity)
    except CheckpointError as err:
        mo.stop(
            True,
            mo.callout(
                mo.md(f"**Cannot load this adapter onto `{mas.preset}`:** {err}"), kind="danger"
            ),
        )
        raise


def format_value(v, digits: int = 4) -> str:
    """A table cell as a person reads it (``io.format.fmt_value``): numbers to ``digits``
    significant digits, lists as comma-separated values, NaN as "—"."""
    from saelora_core.io.format import fmt_value

    return fmt_value(v, digits)


def show_table(df, *, digits: int = 4, selection=None, **kw):
    """``mo.ui.table`` of ``df`` with its float columns (and lists of floats) shown to ``digits``
    significant digits; the data itself stays unrounded."""
    import marimo as mo
    import pandas as pd

    def cell(v: Any) -> str:
        return format_value(v, digits)

    fmt: dict[str, str | Callable[..., Any]] = {
        str(c): cell
        for c in df.columns
        if pd.api.types.is_float_dtype(df[c]) or df[c].dtype == object
    }
    return mo.ui.table(df, selection=selection, format_mapping=fmt, **kw)


DATASET_FORM_DEFAULTS = {
    "source": "seed",
    "topic": "math",
    "guideline": "respond in French",
    "n": 100,
    "eval_n": 20,
    "seed": 0,
    "backend": "offline",
    "model": "gpt-4o-mini",
    "base_url": "https://openrouter.ai/api/v1",
    "api_key_env": "OPENROUTER_API_KEY",
}


def dataset_form_defaults(datasets: Path, name: str) -> dict:
    """The dataset form's starting values: the build settings of dataset ``name`` (the one the
    notebook shows first) when it exists, so the form matches the table under it."""
    manifest = datasets / name / "manifest.json"
    if not manifest.exists():
        return dict(DATASET_FORM_DEFAULTS)
    import json

    cfg = json.loads(manifest.read_text(encoding="utf-8")).get("config", {})
    out = {k: cfg.get(k) if cfg.get(k) is not None else v for k, v in DATASET_FORM_DEFAULTS.items()}
    if out["source"] not in ("seed", "helpsteer"):
        out["source"] = "local path"  # the form's third choice; the path goes in its text box
    return out


def dataset_names(datasets: Path) -> list[str]:
    """Built datasets (folders with a manifest), oldest first."""
    found = sorted(datasets.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    return [p.parent.name for p in found]


def counts_summary(counts: dict) -> str:
    """A manifest's ``counts`` as a sentence: ``train 200 rows (100 modified, 100 in-topic) ·
    eval 40 rows (20 modified, 20 in-topic)``."""
    parts = []
    for split in ("train", "eval"):
        c = counts.get(split)
        if c:
            parts.append(
                f"{split} {c.get('total', 0)} rows ({c.get('modified', 0)} modified, "
                f"{c.get('in_topic', 0)} in-topic)"
            )
    return " · ".join(parts)


SWEEP_SECONDS_PER_ADAPTER = 73.0
"""Measured: 05's default pruning sweep (9 adapters, 8 prompts, 32 new tokens) took about 11
minutes on the default model on 2 CPU cores (greedy generation in small batches, in and
off topic)."""


def prune_sweep_cost(n_ks: int, max_prompts: int, max_new_tokens: int, preset: str) -> str:
    """What 05's pruning sweep will cost, said before it runs: each k evaluates a top-k adapter
    and a random control, plus the unpruned adapter; the time scales with prompts × tokens."""
    n = 1 + 2 * n_ks
    if preset == "tiny":
        return f"{n} adapters to evaluate (the tiny test model: seconds)"
    per = SWEEP_SECONDS_PER_ADAPTER * (max_prompts / 8) * (max_new_tokens / 32)
    total = n * per
    return (
        f"{n} adapters to evaluate, about {per:.0f} s each on 2 CPU cores with these settings: "
        f"**about {total / 60:.0f} minutes** in all"
    )


def training_metadata(dataset_dir: Path) -> dict:
    """What 02 records beside a trained adapter, as ``make demo`` does: the dataset, its
    guideline and the behaviour detector that matches it (``analysis.behaviour_metadata``)."""
    from saelora_core.analysis.behaviour import behaviour_metadata

    return behaviour_metadata(dataset_dir)


def dataset_choice(names: list[str], metadata: dict) -> str | None:
    """The dataset a picker starts on: the one the adapter's metadata records, when it is built
    here; else None, so that the notebook asks rather than analyse the adapter on another
    behaviour's texts."""
    recorded = metadata.get("dataset")
    name = Path(recorded).name if recorded else None
    return name if name in names else None


def detector_choice(metadata: dict) -> str | None:
    """The behaviour detector the adapter's metadata records (None: the notebook asks)."""
    from saelora_core.analysis import DETECTORS

    det = metadata.get("detector")
    return det if det in DETECTORS else None


def dataset_picker(env: NotebookEnv, loaded: LoadedLora, label: str):
    """A dropdown of the built datasets on the adapter's own (:func:`dataset_choice`)."""
    import marimo as mo

    names = sorted(p.parent.name for p in env.datasets.glob("*/manifest.json"))
    return mo.ui.dropdown(names, value=dataset_choice(names, loaded.metadata), label=label)


def stop_until_chosen(env: NotebookEnv, loaded: LoadedLora, picker, what: str = "dataset"):
    """Stop the cell while ``picker`` has no value, saying why: nothing is built yet, or the
    adapter records no ``what`` (or one not built here) and the reader must pick it."""
    import marimo as mo

    if picker.value is not None:
        return
    if what == "dataset" and not list(env.datasets.glob("*/manifest.json")):
        msg = f"No dataset in `{env.datasets}`: build one in `01_dataset.py`."
    else:
        recorded = loaded.metadata.get(what)
        why = (
            f"records the {what} `{recorded}`, which is not available here"
            if recorded
            else f"records no {what} in its metadata"
        )
        msg = (
            f"This adapter {why}. **Pick the {what} it was trained on above**: the analysis "
            "below depends on it (add it to the adapter's `metadata.json` to skip this step)."
        )
    mo.stop(True, mo.callout(mo.md(msg), kind="warn"))


def trained_summary(out_dir, lora, n_steps: int) -> tuple[str, Literal["warn", "success"]]:
    """02's line after training and its callout kind: where the adapter went, its L0 and, when
    it is dense, that it is and how to get a sparse one (``adapter.summary.dense_note``;
    kind "warn")."""
    from saelora_core.adapter.summary import dense_note
    from saelora_core.io.format import fmt_list

    read, write = lora.l0()
    text = (
        f"Saved to `{out_dir}` · L0 read {fmt_list(read)}, write {fmt_list(write)} "
        f"(of {lora.d_sae} per vector) · {n_steps} steps this run"
    )
    note = dense_note({"l0": {"read": read, "write": write}, "d_sae": lora.d_sae})
    return (text + f"\n\n**Dense adapter.** {note}", "warn") if note else (text, "success")


def export_note(
    out_dir: Path,
    *,
    figures: dict[str, Any] | None = None,
    tables: dict[str, Any] | None = None,
    pages: dict[str, Any] | None = None,
    card_dir: Path | None = None,
    card_name: str = "card",
    root: Path | None = None,
) -> str:
    """Export ``figures``, ``tables`` and HTML ``pages`` (name → fragments) under their names
    (``reporting.export.export_results``), and the card written in ``card_dir`` (its
    ``card.md`` and ``card.html``, as ``<card_name>.md`` / ``.html``); say what was written, as
    Markdown (paths relative to ``root`` when given): the one call of every notebook's export
    cell. A ``card_dir`` that holds no card yet is said, not an error."""
    files: dict[str, str | Path] = {}
    no_card = ""
    if card_dir is not None:
        sources = {f"{card_name}{ext}": Path(card_dir) / f"card{ext}" for ext in (".md", ".html")}
        if all(p.is_file() for p in sources.values()):
            files.update(sources)
        else:
            no_card = f"\n\nNo card in `{card_dir}` yet: write it first, then export again."
    written = export_results(out_dir, figures=figures, tables=tables, pages=pages, files=files)
    shown = [p.relative_to(root) if root else p for p in written]
    return "Wrote:\n\n" + "\n".join(f"- `{p}`" for p in shown) + no_card
