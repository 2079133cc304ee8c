import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 02 train")

with app.setup:
    import math
    from typing import get_args

    import marimo as mo
    import pandas as pd

    from saelora_core import (
        LoraTrainingConfig,
        plots,
        train_lora,
    )
    from saelora_core.config import HookMode, Init, Sparsity
    from saelora_core.data import load_behaviour_dataset
    from saelora_core.notebook_support import (
        load_model_or_stop,
        notebook_env,
    )

    ENV = notebook_env("02_train")
    ROOT = ENV.root  # loras/, data/, exports/
    PRESET = ENV.preset
    DATASETS = ENV.datasets
    DEFAULT_DATASET = ENV.default_dataset
    LORAS = ENV.loras
    EXPORTS = ENV.exports
    DEFAULTS = LoraTrainingConfig()


@app.cell
def _():
    mo.md(r"""
    # 2 · Train an adapter

    Trains `Δz = ((z @ Â) * s) @ B̂` at the hook point with the model and SAE frozen:
    `loss = CE(assistant tokens) + l1_weight · penalty(Â, B̂)`. The checkpoint goes to
    `loras/<name>/` (`params.pt`, `metadata.json`, `train_state.pt`).

    Pressing **Train** again with *resume* checked continues the checkpoint in `loras/<name>/`
    (same config only); unchecked, it starts over and overwrites it. `l1_raw` is the seed's
    penalty, kept as a baseline: it cannot select a support because Â, B̂ are normalized. Use
    `proximal_l1` or `topk` for exact zeros.
    """)
    return


@app.cell
def _():
    _names = sorted(p.parent.name for p in DATASETS.glob("*/manifest.json"))
    dataset_picker = mo.ui.dropdown(
        _names,
        value=DEFAULT_DATASET if DEFAULT_DATASET in _names else (_names[0] if _names else None),
        label="dataset (data/datasets/)",
    )
    lr = mo.ui.number(start=1e-6, stop=1.0, step=1e-6, value=DEFAULTS.lr, label="lr")
    l1_weight = mo.ui.number(
        start=0.0, stop=100.0, step=1e-3, value=DEFAULTS.l1_weight, label="l1_weight (λ)"
    )
    batch_size = mo.ui.number(start=1, stop=1024, value=DEFAULTS.batch_size, label="batch_size")
    rank = mo.ui.number(start=1, stop=64, value=DEFAULTS.rank, label="rank")
    epochs = mo.ui.number(start=1, stop=100, value=DEFAULTS.epochs, label="epochs")
    mode = mo.ui.dropdown(list(get_args(HookMode)), value=DEFAULTS.mode, label="mode")
    sparsity = mo.ui.dropdown(list(get_args(Sparsity)), value=DEFAULTS.sparsity, label="sparsity")
    topk = mo.ui.number(start=1, stop=100_000, value=DEFAULTS.topk, label="topk (sparsity=topk)")
    init = mo.ui.dropdown(list(get_args(Init)), value=DEFAULTS.init, label="init")
    seed = mo.ui.number(start=0, stop=2**31 - 1, value=DEFAULTS.seed, label="seed")
    name = mo.ui.text(value=DEFAULTS.name, label="name (→ loras/<name>/)")
    resume = mo.ui.checkbox(value=True, label="resume from loras/<name>/ if it holds a checkpoint")
    train_button = mo.ui.run_button(label="Train", kind="success")
    mo.vstack(
        [
            mo.md(f"Preset **{PRESET}** (set `SAELORA_PRESET` to change it)."),
            dataset_picker,
            mo.hstack([lr, l1_weight, batch_size, rank, epochs], justify="start", wrap=True),
            mo.hstack([mode, sparsity, topk, init, seed], justify="start", wrap=True),
            mo.hstack([name, resume], justify="start"),
            train_button,
        ]
    )
    return (
        batch_size,
        dataset_picker,
        epochs,
        init,
        l1_weight,
        lr,
        mode,
        name,
        rank,
        resume,
        seed,
        sparsity,
        topk,
        train_button,
    )


@app.cell
def _(batch_size, epochs, init, l1_weight, lr, mode, name, rank, seed, sparsity, topk):
    cfg = LoraTrainingConfig(
        lr=float(lr.value),
        l1_weight=float(l1_weight.value),
        batch_size=int(batch_size.value),
        rank=int(rank.value),
        epochs=int(epochs.value),
        mode=mode.value,
        sparsity=sparsity.value,
        topk=int(topk.value),
        init=init.value,
        seed=int(seed.value),
        name=name.value.strip() or DEFAULTS.name,
    )
    out_dir = LORAS / cfg.name
    mo.accordion({f"LoraTrainingConfig → `{out_dir.relative_to(ROOT)}/`": mo.json(cfg.to_dict())})
    return cfg, out_dir


@app.cell
def _():
    mas = load_model_or_stop(PRESET)
    mo.md(f"Loaded **{mas.preset}**: hook `{mas.hook_name}`, d_sae = {mas.sae.cfg.d_sae}.")
    return (mas,)


@app.cell
def _(dataset_picker):
    mo.stop(
        dataset_picker.value is None,
        mo.callout(
            mo.md(
                f"No dataset in `{DATASETS}`: build one in `01_dataset.py` "
                "(or `saelora dataset make`)."
            ),
            kind="warn",
        ),
    )
    dataset = load_behaviour_dataset(DATASETS / dataset_picker.value)
    mo.md(
        f"Dataset **{dataset_picker.value}**: {len(dataset['train'])} train rows, "
        f"{len(dataset['eval'])} eval rows."
    )
    return (dataset,)


@app.cell
def _(cfg, dataset, dataset_picker, mas, out_dir, resume, train_button):
    mo.stop(not train_button.value, mo.md("Press **Train** to start (or resume) training."))
    steps = []
    try:
        with mo.status.progress_bar(
            total=cfg.epochs * math.ceil(len(dataset["train"]) / cfg.batch_size),
            title=f"Training {cfg.name}",
            completion_title=f"Trained {cfg.name}",
        ) as bar:

            def on_step(info: dict) -> None:
                steps.append(info)
                # ``step`` counts from the start of the run, so a resumed run jumps ahead.
                bar.update(
                    increment=info["step"] - bar.current,
                    subtitle=f"epoch {info['epoch']:.2f} · train CE {info['train_ce']:.3f}",
                )

            result = train_lora(
                mas,
                dataset,
                cfg,
                out_dir=out_dir,
                resume=resume.value,
                progress=False,
                on_step=on_step,
                extra_metadata={"dataset": str(DATASETS / dataset_picker.value)},
            )
    except ValueError as err:  # e.g. resuming a checkpoint trained with another config
        mo.stop(True, mo.callout(mo.md(f"**Training refused:** {err}"), kind="danger"))
    return result, steps


@app.cell
def _(result, steps):
    loss_fig = plots.fig_loss_curve(result.history)
    history_df = pd.DataFrame(result.history)
    steps_df = pd.DataFrame(steps)
    mo.vstack(
        [
            mo.callout(
                mo.md(
                    f"Saved to `{result.out_dir}` · L0 {result.metadata['l0']} · "
                    f"{len(steps)} steps this run"
                ),
                kind="success",
            ),
            loss_fig,
            mo.ui.tabs(
                {
                    "per-epoch history": mo.ui.table(history_df, selection=None),
                    "steps this run": mo.ui.table(steps_df, selection=None),
                }
            ),
        ]
    )
    return history_df, loss_fig, steps_df


@app.cell
def _():
    export_button = mo.ui.run_button(
        label=f"Export figures and tables to {EXPORTS.relative_to(ROOT)}/"
    )
    export_button
    return (export_button,)


@app.cell
def _(cfg, export_button, history_df, loss_fig, steps_df):
    mo.stop(not export_button.value)
    written = [
        *plots.save_figure(loss_fig, EXPORTS, f"{cfg.name}-loss"),
        *plots.save_table(history_df, EXPORTS, f"{cfg.name}-history"),
        *plots.save_table(steps_df, EXPORTS, f"{cfg.name}-steps"),
    ]
    mo.md("Wrote:\n\n" + "\n".join(f"- `{p}`" for p in written))
    return


if __name__ == "__main__":
    app.run()
