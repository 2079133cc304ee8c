import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 02 train")

with app.setup:
    import marimo as mo
    import pandas as pd

    from saelora_core import train_lora
    from saelora_core.data import load_behaviour_dataset
    from saelora_core.reporting import figures
    from saelora_core.training.estimate import estimate_training, format_duration, machine_overrides
    from saelora_core.training.recipes import DEFAULT_RECIPE, RECIPES, recipe
    from saelora_core.ui.notebook_support import (
        export_note,
        load_model_or_stop,
        notebook_env,
        show_table,
        trained_summary,
        training_metadata,
    )
    from saelora_core.ui.train_controls import (
        config_from_controls,
        controls_layout,
        live_training,
        training_controls,
    )

    ENV = notebook_env("02_train")
    ROOT = ENV.root  # loras/, data/, exports/
    PRESET = ENV.preset
    DATASETS = ENV.datasets
    DEFAULT_DATASET = ENV.default_dataset
    LORAS = ENV.loras
    EXPORTS = ENV.exports


@app.cell
def _():
    mo.md(r"""
    # 2 · Train an adapter

    Trains `Δz = ((z @ Â) * s) @ B̂` at the hook point with the model and SAE frozen:
    `loss = CE(assistant tokens) + sparsity_weight · penalty(Â, B̂)`. The checkpoint goes to
    `loras/NAME/` (`params.pt`, `metadata.json`, `train_state.pt`).

    Start from a **recipe**; every field it sets stays editable below. `recommended` is the
    demo's recipe (`make demo`): about a minute on 2 CPU cores for the 100-row demo datasets,
    and it learns the behaviour (notebook 05 evaluates it). `seed (baseline)` is the seed
    experiment's method (lr 1e-4, `l1_raw`, random init): it learns nothing in a CPU budget
    and is kept as the baseline. The estimated time shows before you press **Train**.

    Pressing **Train** again with *resume* checked continues the checkpoint in `loras/NAME/`
    (same config only); unchecked, it starts over and overwrites it.
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
    recipe_picker = mo.ui.dropdown(list(RECIPES), value=DEFAULT_RECIPE, label="recipe")
    mo.vstack(
        [
            mo.md(f"Preset **{PRESET}** (set `SAELORA_PRESET` to change it)."),
            mo.hstack([dataset_picker, recipe_picker], justify="start"),
        ]
    )
    return dataset_picker, recipe_picker


@app.cell
def _(recipe_picker):
    _recipe = recipe(recipe_picker.value)
    _speed = machine_overrides(_recipe)  # e.g. float32 logits on a CPU without native bf16
    controls = training_controls(recipe(recipe_picker.value, **_speed))
    name = mo.ui.text(value="lora", label="name (saved to loras/NAME/)")
    resume = mo.ui.checkbox(value=True, label="resume from loras/NAME/ if it holds a checkpoint")
    train_button = mo.ui.run_button(label="Train", kind="success")
    mo.vstack(
        [
            controls_layout(controls),
            mo.md(
                "This machine has no native bfloat16 matmul, so `logits_dtype` starts at "
                "`float32` (bfloat16 would be far slower here)."
            )
            if _speed
            else mo.md(""),
            mo.hstack([name, resume], justify="start"),
            train_button,
        ]
    )
    return controls, name, resume, train_button


@app.cell
def _(controls, name):
    try:
        cfg = config_from_controls(controls.value, name=name.value, root=ROOT)
    except ValueError as _err:
        mo.stop(True, mo.callout(mo.md(f"**Invalid settings:** {_err}"), kind="danger"))
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
def _(cfg, dataset, mas):
    with mo.status.spinner(title="Estimating the training time", subtitle="timing one micro-batch"):
        estimate = estimate_training(mas, dataset, cfg)
    mo.callout(
        mo.md(f"**Estimated time:** {estimate.describe()}."),
        kind="warn" if estimate.seconds > 600 else "info",
    )
    return (estimate,)


@app.cell
def _(cfg, dataset, dataset_picker, estimate, mas, out_dir, resume, train_button):
    mo.stop(
        not train_button.value,
        mo.md(
            f"Press **Train** to start (or resume) training: about "
            f"{format_duration(estimate.seconds)}."
        ),
    )
    try:
        with live_training(cfg, estimate.steps) as live:
            result = train_lora(
                mas,
                dataset,
                cfg,
                out_dir=out_dir,
                resume=resume.value,
                progress=False,
                on_step=live.on_step,
                extra_metadata=training_metadata(DATASETS / dataset_picker.value),
            )
    except ValueError as err:  # e.g. resuming a checkpoint trained with another config
        mo.stop(True, mo.callout(mo.md(f"**Training refused:** {err}"), kind="danger"))
    steps = live.steps
    return result, steps


@app.cell
def _(result, steps):
    loss_fig = figures.fig_loss_curve(result.history, steps)
    history_df = pd.DataFrame(result.history)
    steps_df = pd.DataFrame(steps)
    _text, _kind = trained_summary(result.out_dir, result.lora, len(steps))
    mo.vstack(
        [
            mo.callout(mo.md(_text), kind=_kind),
            loss_fig,
            mo.ui.tabs(
                {
                    "per-epoch history": show_table(history_df),
                    "steps this run": show_table(steps_df),
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
    _tables = {f"{cfg.name}-history": history_df, f"{cfg.name}-steps": steps_df}
    mo.md(export_note(EXPORTS, figures={f"{cfg.name}-loss": loss_fig}, tables=_tables))
    return


if __name__ == "__main__":
    app.run()
