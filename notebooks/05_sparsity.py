import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 05 sparsity")

with app.setup:
    import marimo as mo
    import torch

    from saelora_core import analysis
    from saelora_core.analysis.prune_sweep import prune_variants, score_variants
    from saelora_core.data import load_behaviour_dataset
    from saelora_core.reporting import figures
    from saelora_core.ui.notebook_support import (
        adapter_picker_or_stop,
        dataset_picker,
        detector_choice,
        export_note,
        load_adapter_or_stop,
        load_model_or_stop,
        notebook_env,
        prune_sweep_cost,
        show_table,
        stop_until_chosen,
    )

    ENV = notebook_env("05_sparsity")
    ROOT = ENV.root  # loras/, data/, exports/
    PRESET = ENV.preset
    LORAS = ENV.loras
    DATASETS = ENV.datasets
    DEFAULT_DATASET = ENV.default_dataset
    EXPORTS = ENV.exports
    PRUNE_KS = ["1", "2", "4", "8", "16", "32", "64"]


@app.cell
def _():
    mo.md(r"""
    # 5 · Sparsity

    How sparse are the adapter's read vectors `Â[:, j]` and write vectors `B̂[j, :]`? The table
    counts exact zeros (L0) and the mass held by the largest entries; the curves plot each unit
    vector's entries sorted by magnitude against a random unit vector of the same size (the
    noise baseline): a learned, sparse vector drops to zero after a few latents, noise does not.

    **Pruning** (behind *Run*): keep only the `k` largest entries of every read and write vector
    (`prune_topk`) and measure how much of the behaviour survives, against a control that keeps
    `k` entries on random latents (`random_support_control`).
    """)
    return


@app.cell
def _():
    adapter_picker = adapter_picker_or_stop(ENV)
    adapter_picker
    return (adapter_picker,)


@app.cell
def _():
    mas = load_model_or_stop(PRESET)
    return (mas,)


@app.cell
def _(adapter_picker, mas):
    loaded = load_adapter_or_stop(adapter_picker.value, mas)
    lora = loaded.lora
    mo.md(
        f"Adapter **{adapter_picker.selected_key}**: rank {lora.rank}, d_sae {lora.d_sae}, "
        f"sparsity `{loaded.metadata.get('config', {}).get('sparsity')}`, "
        f"init `{loaded.metadata.get('config', {}).get('init')}`."
    )
    return loaded, lora


@app.cell
def _(lora):
    sparsity_table = analysis.adapter_sparsity(lora)
    weights_fig = figures.fig_sorted_weights(analysis.sorted_weight_curves(lora))
    mo.vstack([show_table(sparsity_table), weights_fig])
    return sparsity_table, weights_fig


@app.cell
def _(loaded):
    eval_picker = dataset_picker(ENV, loaded, "eval rows from (data/datasets/)")
    ks = mo.ui.multiselect(PRUNE_KS, value=["1", "4", "16", "64"], label="k (entries kept)")
    detector = mo.ui.dropdown(
        sorted(analysis.DETECTORS), value=detector_choice(loaded.metadata), label="detector"
    )
    max_prompts = mo.ui.number(start=1, stop=1000, value=8, label="max prompts")
    max_new_tokens = mo.ui.number(start=4, stop=512, value=32, label="max new tokens")
    prune_seed = mo.ui.number(start=0, stop=2**31 - 1, value=0, label="control seed")
    prune_button = mo.ui.run_button(label="Run pruning sweep")
    mo.vstack(
        [
            mo.md("### Behaviour kept after pruning"),
            mo.hstack([eval_picker, ks], justify="start"),
            mo.hstack([detector, max_prompts, max_new_tokens, prune_seed], justify="start"),
            prune_button,
        ]
    )
    return detector, eval_picker, ks, max_new_tokens, max_prompts, prune_button, prune_seed


@app.cell
def _(
    detector,
    eval_picker,
    ks,
    lora,
    loaded,
    mas,
    max_new_tokens,
    max_prompts,
    prune_button,
    prune_seed,
):
    mo.stop(
        not prune_button.value,
        mo.md(
            "Press **Run pruning sweep**: "
            + prune_sweep_cost(
                len(ks.value), int(max_prompts.value), int(max_new_tokens.value), PRESET
            )
            + ". Every k evaluates two adapters (top-k and a random control), each generating "
            "answers to `max prompts` in-topic and off-topic prompts; the base model's answers "
            "are generated once. Fewer k values, prompts or new tokens make it faster."
        ),
    )
    stop_until_chosen(ENV, loaded, eval_picker)
    stop_until_chosen(ENV, loaded, detector, "detector")
    _eval = load_behaviour_dataset(DATASETS / eval_picker.value)["eval"]
    _kw = {
        "detector": detector.value,
        "mode": loaded.metadata.get("mode", "resid_add"),
        "max_prompts": int(max_prompts.value),
        "max_new_tokens": int(max_new_tokens.value),
    }
    _gen = torch.Generator().manual_seed(int(prune_seed.value))
    prune_df = score_variants(
        mas,
        prune_variants(lora, [int(k) for k in ks.value], lambda _k: _gen),
        _eval,
        progress=lambda v: mo.status.progress_bar(
            v, title="Pruning sweep", subtitle="generating with each adapter"
        ),
        **_kw,
    )
    _full = prune_df.iloc[0]
    prune_fig = figures.fig_prune_curve(
        prune_df[prune_df["kind"] != "full adapter"], x="k", y="effect", color="kind"
    )
    mo.vstack(
        [
            mo.md(
                f"Unpruned adapter (k = d_sae = {lora.d_sae}): effect "
                f"**{_full['effect']:+.3f}**, conditional gap "
                f"**{_full['conditional_gap']:+.3f}** ({detector.value} detector; effect = "
                "in-topic hit rate with the adapter − without)."
            ),
            prune_fig,
            show_table(prune_df),
        ]
    )
    return prune_df, prune_fig


@app.cell
def _():
    export_button = mo.ui.run_button(
        label=f"Export figures and tables to {EXPORTS.relative_to(ROOT)}/"
    )
    export_button
    return (export_button,)


@app.cell
def _(adapter_picker, export_button, sparsity_table, weights_fig):
    mo.stop(not export_button.value)
    _name = adapter_picker.selected_key
    _figures = {f"{_name}-sorted-weights": weights_fig}
    mo.md(export_note(EXPORTS, figures=_figures, tables={f"{_name}-sparsity": sparsity_table}))
    return


@app.cell
def _(adapter_picker, export_button, prune_df, prune_fig):
    mo.stop(not export_button.value)
    _name = adapter_picker.selected_key
    _name = f"{_name}-prune-curve"
    mo.md(export_note(EXPORTS, figures={_name: prune_fig}, tables={_name: prune_df}))
    return


if __name__ == "__main__":
    app.run()
