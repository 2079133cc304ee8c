import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 06 SAE repair")

with app.setup:
    import marimo as mo

    from saelora_core import analysis
    from saelora_core.adapter.saving import CheckpointError, load_lora
    from saelora_core.data.heldout import GENERAL_TEXT
    from saelora_core.repair import METHODS, RepairConfig, read_texts, run_repair
    from saelora_core.repair.report import (
        comparison_table,
        curves_table,
        fig_curves,
        fig_gap_closed,
        fig_latent_pareto,
        fig_loss_curves,
        latent_usage,
        load_records,
    )
    from saelora_core.ui.notebook_support import (
        export_note,
        load_model_or_stop,
        notebook_env,
        show_table,
    )

    ENV = notebook_env("06_sae_repair")
    ROOT = ENV.root
    PRESET = ENV.preset
    EXPORTS = ENV.exports
    RESULTS = ROOT / "results" / "repair"
    LATENT_DIR = ROOT / "loras" / "repair-latent-best"


@app.cell
def _():
    mo.md(r"""
    # 6 · Closing the SAE's loss gap

    Splicing the SAE into the model (its reconstruction replaces the residual, the error term is
    dropped) raises the model's loss. Four repairs train against the **same objective** — the
    KL divergence from the clean model's next-token distribution, plus the reconstruction MSE
    where the method has it — on the same windows of the SAE corpus, and are scored by the
    **same evaluation** on held-out text:

    | method | what trains |
    | --- | --- |
    | model LoRA (arXiv 2501.19406) | peft LoRA on the blocks after the SAE's layer; SAE frozen |
    | SAE KL+MSE finetune (arXiv 2503.17272) | every SAE parameter, k fixed, each decoder row keeps its norm |
    | linear adapter (same paper) | `x̂ + U·D·x̂` on the SAE output |
    | latent adapter (ours) | an `SaeLora` adding `Δz` to the latents before decoding |

    **Fraction of the gap closed** = (CE spliced before − CE spliced after) / (CE spliced
    before − CE clean). The tables below are the committed study (`studies/repair_study.py`);
    the controls at the bottom run one more repair.
    """)
    return


@app.cell
def _():
    records = load_records(RESULTS / "records")
    mo.stop(
        not records,
        mo.callout(
            mo.md(
                f"No study results in `{RESULTS}/records/`: run `python studies/repair_study.py`."
            ),
            kind="warn",
        ),
    )
    table = comparison_table(records)
    curves = curves_table(records)
    gap_fig = fig_gap_closed(table)
    curves_fig = fig_curves(curves)
    loss_fig = fig_loss_curves(records)
    pareto_fig = fig_latent_pareto(table)
    _cols = [
        "method",
        "text_set",
        "gap_closed",
        "gap_closed_lo",
        "gap_closed_hi",
        "ce_clean",
        "ce_before",
        "ce_after",
        "kl_before",
        "kl_after",
        "explained_variance",
        "mean_l0",
        "dead_fraction",
        "latents_used",
    ]
    mo.vstack(
        [
            gap_fig,
            show_table(table[_cols].round(4), page_size=20),
            curves_fig,
            loss_fig,
            pareto_fig,
        ]
    )
    return curves_fig, gap_fig, loss_fig, pareto_fig, table


@app.cell
def _():
    mas = load_model_or_stop(PRESET)
    return (mas,)


@app.cell
def _(mas):
    mo.stop(
        not (LATENT_DIR / "params.pt").exists(),
        mo.md(f"No latent adapter at `{LATENT_DIR}` (the study ships its best one there)."),
    )
    try:
        latent = load_lora(LATENT_DIR, sae_identity=mas.sae_identity).lora
    except CheckpointError as _e:
        mo.stop(
            True,
            mo.callout(
                mo.md(f"The shipped latent adapter does not fit this SAE: {_e}"), kind="info"
            ),
        )
    usage = latent_usage(latent)
    mo.vstack(
        [
            mo.md(
                f"### The latents the best latent adapter uses\n\n`{LATENT_DIR.relative_to(ROOT)}`: "
                f"rank {latent.rank}, mass shares summed over components (weighted by |s|)."
            ),
            show_table(usage.round(4)),
        ]
    )
    return latent, usage


@app.cell
def _(mas, usage):
    _texts = read_texts(GENERAL_TEXT)[:60]
    _latents = list(dict.fromkeys(usage.sort_values("share", ascending=False)["latent"].tolist()))[
        :4
    ]
    with mo.status.spinner(title="Latent dashboards", subtitle=f"{len(_texts)} general texts"):
        _acts = analysis.latent_activations(mas, _texts, latents=_latents)
        dashboards = {
            lat: analysis.latent_dashboard(mas, lat, _texts, acts=_acts) for lat in _latents
        }
    mo.ui.tabs({f"latent {lat}": mo.Html(d.html) for lat, d in dashboards.items()})
    return (dashboards,)


@app.cell
def _():
    method = mo.ui.dropdown(list(METHODS), value="linear_adapter", label="method")
    train_tokens = mo.ui.number(
        start=512, stop=10_000_000, step=512, value=2048, label="train tokens"
    )
    lr = mo.ui.text(value="", label="lr (empty: the method's default)")
    eval_tokens = mo.ui.number(
        start=256, stop=100_000, step=256, value=512, label="eval tokens / text set"
    )
    repair_button = mo.ui.run_button(label="Run repair")
    mo.vstack(
        [
            mo.md(
                "### Run one repair\n\nAbout 100 training tokens/s on 2 CPU cores "
                "(`bench/repair_throughput.py`), so the default 2,048 tokens take about a minute "
                "plus the evaluation. Runs go to `runs/repair/<method>-<tokens>-lr<lr>/` and resume."
            ),
            mo.hstack([method, train_tokens, lr, eval_tokens], justify="start"),
            repair_button,
        ]
    )
    return eval_tokens, lr, method, repair_button, train_tokens


@app.cell
def _(eval_tokens, lr, method, repair_button, train_tokens):
    mo.stop(not repair_button.value, mo.md("Press **Run repair** to train one more repair."))
    mo.stop(
        PRESET == "tiny",
        mo.md("Repairs run on a Hugging Face preset; the tiny test model has none."),
    )
    _cfg = RepairConfig(
        method=method.value,
        train_tokens=int(train_tokens.value),
        lr=float(lr.value) if lr.value.strip() else None,
        curve_points=4,
    )
    with mo.status.spinner(title=f"Repair: {method.value}", subtitle=f"{_cfg.steps} steps"):
        run = run_repair(
            _cfg,
            preset=PRESET,
            out_dir=ROOT
            / "runs"
            / "repair"
            / f"{method.value}-{_cfg.train_tokens}-lr{_cfg.effective_lr:g}",
            eval_tokens=int(eval_tokens.value),
        )
    mo.vstack(
        [
            mo.md(f"Saved to `{run.out_dir}`."),
            show_table(comparison_table({method.value: run.record}).round(4)),
        ]
    )
    return


@app.cell
def _():
    export_button = mo.ui.run_button(
        label=f"Export figures and tables to {EXPORTS.relative_to(ROOT)}/"
    )
    export_button
    return (export_button,)


@app.cell
def _(curves_fig, export_button, gap_fig, loss_fig, pareto_fig, table):
    mo.stop(not export_button.value)
    _figures = {"gap_closed": gap_fig, "curves": curves_fig, "latent_pareto": pareto_fig}
    mo.md(export_note(EXPORTS, figures=_figures, tables={"repair_table": table}, root=ROOT))
    return


if __name__ == "__main__":
    app.run()
