import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 07 compare")

with app.setup:
    import marimo as mo

    from saelora_core.compare.table import (
        display_frame,
        hits_frame,
        pareto_figure,
        read_outputs,
    )
    from saelora_core.ui.notebook_support import export_note, notebook_env, show_table

    ENV = notebook_env("07_compare")
    ROOT = ENV.root
    EXPORTS = ENV.exports
    RESULTS = ROOT / "results" / "compare"
    BEHAVIOURS = ["french", "upper"]
    PARETO_X = {
        "trainable parameters": "trainable_params",
        "nonzero parameters": "nonzero_params",
        "distinct latents (read + write)": "n_latents",
    }


@app.cell
def _():
    mo.md(r"""
    # 7 · One comparison for every method

    The committed `saelora compare` study (`results/compare/<behaviour>/`, [docs/compare.md]):
    the base model, the prompt baseline, the dense latent adapter, its k = 16 student, a dense
    residual steer and peft LoRAs of rank 1 and 8, measured on the same 80 in-topic, 96
    near-miss and 80 far off-topic fresh prompts, with their cost on general text. Reading it
    runs no model; `saelora compare --behaviour <b> --train` rebuilds it.

    The **effect** is the in-topic rate minus the base model's, with a 95 % paired bootstrap
    interval; the **near-miss** rate is how often the behaviour fires on prompts that look like
    mathematics but are not.
    """)
    return


@app.cell
def _():
    behaviour = mo.ui.dropdown(BEHAVIOURS, value="french", label="behaviour")
    pareto_x = mo.ui.dropdown(
        list(PARETO_X), value="trainable parameters", label="Pareto figure: x axis"
    )
    mo.hstack([behaviour, pareto_x], justify="start")
    return behaviour, pareto_x


@app.cell
def _(behaviour):
    results_dir = RESULTS / behaviour.value
    mo.stop(
        not (results_dir / "table.csv").exists(),
        mo.callout(
            mo.md(
                f"No study results in `{results_dir}`: run "
                f"`saelora compare --behaviour {behaviour.value} --train`."
            ),
            kind="warn",
        ),
    )
    res = read_outputs(results_dir)
    mo.vstack(
        [
            mo.md(
                f"**{res.settings['behaviour']}** ({res.settings['guideline']}), detector "
                f"`{res.settings['detector']}`, judge: {res.settings['judge']}."
            ),
            show_table(display_frame(res.table), page_size=20),
        ]
    )
    return res, results_dir


@app.cell
def _(pareto_x, res):
    pareto_fig = pareto_figure(res.table, x=PARETO_X[pareto_x.value])
    pareto_fig
    return (pareto_fig,)


@app.cell
def _(res):
    mo.vstack(
        [
            mo.md("### Near-miss rate per category (with the base model's rate)"),
            show_table(res.near_miss, page_size=30),
            mo.md("### Capability cost per genre (nats/token, BOS excluded)"),
            show_table(res.capability, page_size=30),
        ]
    )
    return


@app.cell
def _(res):
    hit_method = mo.ui.dropdown(
        list(res.table["method"]), value=str(res.table["method"].iloc[0]), label="method"
    )
    hit_method
    return (hit_method,)


@app.cell
def _(hit_method, res):
    hits = hits_frame(res, hit_method.value)
    mo.vstack(
        [
            mo.md(f"### Every answer counted as a hit: {len(hits)} for **{hit_method.value}**"),
            show_table(hits, page_size=10),
        ]
    )
    return (hits,)


@app.cell
def _():
    export_button = mo.ui.run_button(label="Export figure and tables")
    export_button
    return (export_button,)


@app.cell
def _(behaviour, export_button, hits, pareto_fig, res):
    mo.stop(not export_button.value)
    mo.md(
        export_note(
            EXPORTS / behaviour.value,
            figures={"pareto": pareto_fig},
            tables={"table": res.table, "hits": hits},
            root=ROOT,
        )
    )
    return


if __name__ == "__main__":
    app.run()
