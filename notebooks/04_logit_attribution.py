import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 04 logit attribution")

with app.setup:
    import marimo as mo

    from saelora_core import analysis
    from saelora_core.adapter.summary import adapter_info, summary_line
    from saelora_core.reporting import figures
    from saelora_core.ui.notebook_support import (
        adapter_picker_or_stop,
        export_note,
        load_adapter_or_stop,
        load_model_or_stop,
        notebook_env,
        show_table,
    )

    ENV = notebook_env("04_logit_attribution")
    ROOT = ENV.root  # loras/, data/, exports/
    PRESET = ENV.preset
    LORAS = ENV.loras
    EXPORTS = ENV.exports


@app.cell
def _():
    mo.md(r"""
    # 4 · Logit attribution

    **Direct path.** The adapter adds `Δz @ W_dec` to the residual, with `Δz` along its write
    vectors `B̂[j]`. Scoring a residual direction against the vocabulary through the final norm's
    scale and the unembedding (`(d ⊙ w_ln) @ W_U`) shows which tokens it pushes up and down. The
    table does this for the decoder direction of each of the top write latents and for each whole
    write direction `sign(s_j) · B̂[j] @ W_dec`. A latent written with a negative weight
    suppresses its "promoted" tokens.

    **Full effect on real prompts** (behind *Run*): the change in next-token logits that the
    edit causes at the end of each prompt, through all later layers, for the tokens it changes
    most on average: per prompt (heatmap), and averaged over the in-topic and the off-topic
    prompts apart (bars, table). A behaviour edit should move its tokens on in-topic prompts
    and leave off-topic ones alone.
    """)
    return


@app.cell
def _():
    adapter_picker = adapter_picker_or_stop(ENV)
    k_latents = mo.ui.slider(1, 32, value=5, label="write latents", show_value=True)
    k_tokens = mo.ui.slider(1, 50, value=10, label="tokens per latent", show_value=True)
    mo.hstack([adapter_picker, k_latents, k_tokens], justify="start")
    return adapter_picker, k_latents, k_tokens


@app.cell
def _():
    mas = load_model_or_stop(PRESET)
    return (mas,)


@app.cell
def _(adapter_picker, mas):
    loaded = load_adapter_or_stop(adapter_picker.value, mas)
    lora = loaded.lora
    mo.md(f"Adapter **{adapter_picker.selected_key}**: {summary_line(adapter_info(loaded))}.")
    return loaded, lora


@app.cell
def _(k_latents, k_tokens, lora, mas):
    toks = analysis.top_toks_table(lora, mas, k_latents=k_latents.value, k_tokens=k_tokens.value)
    toks_fig = figures.fig_top_toks(toks)
    mo.vstack([toks_fig, show_table(toks, page_size=20)])
    return toks, toks_fig


@app.cell
def _(loaded):
    in_topic_box = mo.ui.text_area(
        value="What is 15% of 240?\nHow do I add 2/3 and 3/4?\nWhat is the square root of 144?",
        label="in-topic prompts (one per line)",
        full_width=True,
        rows=4,
    )
    off_topic_box = mo.ui.text_area(
        value="What causes earthquakes to happen?\nName a famous painter.\nHow do bees make honey?",
        label="off-topic prompts (one per line)",
        full_width=True,
        rows=4,
    )
    attr_mode = mo.ui.dropdown(
        ["resid_add", "sae_replace"],
        value=loaded.metadata.get("mode", "resid_add"),
        label="hook mode",
    )
    attr_direction = mo.ui.radio(["raised", "lowered"], value="raised", label="logits", inline=True)
    attr_k = mo.ui.slider(1, 50, value=10, label="tokens", show_value=True)
    attr_button = mo.ui.run_button(label="Run attribution on these prompts")
    mo.vstack(
        [
            mo.hstack([in_topic_box, off_topic_box], widths="equal"),
            mo.hstack([attr_mode, attr_direction, attr_k, attr_button], justify="start"),
        ]
    )
    return attr_button, attr_direction, attr_k, attr_mode, in_topic_box, off_topic_box


@app.cell
def _(
    attr_button,
    attr_direction,
    attr_k,
    attr_mode,
    in_topic_box,
    lora,
    mas,
    off_topic_box,
):
    mo.stop(not attr_button.value, mo.md("Press **Run attribution** to run the prompts."))
    _in = [p.strip() for p in in_topic_box.value.splitlines() if p.strip()]
    _off = [p.strip() for p in off_topic_box.value.splitlines() if p.strip()]
    mo.stop(not _in + _off, mo.md("Enter at least one prompt."))
    with mo.status.spinner(
        title="Edit logit attribution", subtitle=f"{len(_in) + len(_off)} prompts"
    ):
        per_prompt = analysis.prompt_logit_attribution(
            lora,
            mas,
            _in + _off,
            in_topic=[True] * len(_in) + [False] * len(_off),
            mode=attr_mode.value,
            k_tokens=attr_k.value,
            direction=attr_direction.value,
        )
    attribution = analysis.topic_logit_attribution(per_prompt)
    attr_fig = figures.fig_prompt_attribution(per_prompt)
    mo.vstack(
        [
            attr_fig,
            show_table(attribution, page_size=20),
            mo.accordion({"per prompt": show_table(per_prompt, page_size=20)}),
        ]
    )
    return attr_fig, attribution, per_prompt


@app.cell
def _():
    export_button = mo.ui.run_button(
        label=f"Export figures and tables to {EXPORTS.relative_to(ROOT)}/"
    )
    export_button
    return (export_button,)


@app.cell
def _(adapter_picker, export_button, toks, toks_fig):
    mo.stop(not export_button.value)
    _name = adapter_picker.selected_key
    _names = {f"{_name}-top-toks": toks_fig}
    mo.md(export_note(EXPORTS, figures=_names, tables={f"{_name}-top-toks": toks}))
    return


@app.cell
def _(adapter_picker, attr_fig, attribution, export_button, per_prompt):
    mo.stop(not export_button.value)
    _name = f"{adapter_picker.selected_key}-edit-attribution"
    _tables = {_name: attribution, f"{_name}-per-prompt": per_prompt}
    mo.md(export_note(EXPORTS, figures={_name: attr_fig}, tables=_tables))
    return


if __name__ == "__main__":
    app.run()
