import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 03 features")

with app.setup:
    from pathlib import Path

    import marimo as mo

    from saelora_core import analysis
    from saelora_core.adapter.summary import adapter_info, summary_line
    from saelora_core.analysis.card_render import card_fragment, card_labels
    from saelora_core.analysis.describe import describe
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
        show_table,
        stop_until_chosen,
    )

    ENV = notebook_env("03_features")
    ROOT = ENV.root  # loras/, data/, exports/
    PRESET = ENV.preset
    LORAS = ENV.loras
    DATASETS = ENV.datasets
    DEFAULT_DATASET = ENV.default_dataset
    EXPORTS = ENV.exports


@app.cell
def _():
    mo.md(r"""
    # 3 · Features

    Which SAE latents does the adapter **read** (`Â[:, j]`: the latents whose activity switches
    the edit on) and **write** (`B̂[j, :]`: the latents it adds)? For a unit vector, `weight²` is
    the latent's share of the vector's mass. `freq_in_topic` / `freq_off_topic` are how often the
    latent fires on in-topic / off-topic prompts: a good read latent fires on the topic only.

    Below: a dashboard per chosen latent (max-activating examples, activation histogram, the
    tokens its decoder direction promotes), and the adapter's reads and writes token by token on
    a prompt you type.
    """)
    return


@app.cell
def _():
    adapter_picker = adapter_picker_or_stop(ENV)
    k = mo.ui.slider(1, 50, value=10, label="latents per vector", show_value=True)
    mo.hstack([adapter_picker, k], justify="start")
    return adapter_picker, k


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
def _():
    try_prompt = mo.ui.text_area(
        value="What is 12 times 7?", label="prompt (one per line)", full_width=True
    )
    try_batch = mo.ui.number(start=0, stop=80, value=8, label="fresh prompts per side (rate)")
    try_button = mo.ui.run_button(label="Compare answers")
    mo.vstack(
        [
            mo.md(
                "### Playground: what does the adapter do?\n\nThe base model's greedy answer "
                "beside the adapter's, and per token of the adapter's answer the read latents "
                "that fired and what it wrote there. With fresh prompts, the behaviour rate and "
                "its 95 % interval (seconds on the default model). Same as `saelora try`."
            ),
            try_prompt,
            mo.hstack([try_batch, try_button], justify="start"),
        ]
    )
    return try_batch, try_button, try_prompt


@app.cell
def _(loaded, lora, mas, try_batch, try_button, try_prompt):
    mo.stop(not try_button.value, mo.md("Press **Compare answers**."))
    _prompts = [p for p in try_prompt.value.splitlines() if p.strip()]
    mo.stop(not _prompts, mo.md("Type a prompt first."))
    with mo.status.spinner(title="Generating base and adapter answers..."):
        _mode = loaded.metadata.get("mode", "resid_add")
        _det = detector_choice(loaded.metadata)
        _pg = analysis.try_adapter(mas, lora, _prompts, mode=_mode, detector=_det)
        _rate = (
            analysis.behaviour_rate(mas, lora, detector=_det, n_prompts=try_batch.value, mode=_mode)
            if _det and try_batch.value
            else None
        )
    mo.Html(analysis.playground_html(_pg, _rate))
    return


@app.cell
def _(loaded):
    text_picker = dataset_picker(ENV, loaded, "texts from (data/datasets/)")
    text_split = mo.ui.radio(["eval", "train"], value="eval", label="split", inline=True)
    n_texts = mo.ui.slider(8, 400, step=8, value=40, label="texts", show_value=True)
    mo.hstack([text_picker, text_split, n_texts], justify="start")
    return n_texts, text_picker, text_split


@app.cell
def _(loaded, mas, n_texts, text_picker, text_split):
    stop_until_chosen(ENV, loaded, text_picker)
    texts_dataset = load_behaviour_dataset(DATASETS / text_picker.value)[text_split.value]
    texts = analysis.load_texts(mas, texts_dataset, n=n_texts.value)
    return texts, texts_dataset


@app.cell
def _(adapter_picker, k, lora, mas, texts_dataset):
    with mo.status.spinner(
        title="Top latents", subtitle="firing frequencies on the dataset's prompts"
    ):
        feats = analysis.top_feats_summary(
            lora,
            k=k.value,
            mas=mas,
            dataset=texts_dataset,
            neuronpedia_id=analysis.neuronpedia_id_for(mas),
        )
    # Latents named by the card's labels once a card has been written.
    feats_fig = figures.fig_top_feats(
        feats, labels=card_labels(Path(adapter_picker.value) / "card")
    )
    mo.vstack([feats_fig, show_table(feats, page_size=20)])
    return feats, feats_fig


@app.cell
def _(feats):
    _label = "{0.side} {0.component} · latent {0.latent} ({0.weight:+.3f})".format
    # By default the largest entry of each read and write vector.
    latent_picker = mo.ui.multiselect(
        {_label(r): r.latent for r in feats.itertuples()},
        value=[_label(r) for r in feats[feats["rank"] == 0].itertuples()][:4],
        label="dashboards for",
    )
    latent_picker
    return (latent_picker,)


@app.cell
def _(latent_picker, mas, texts):
    mo.stop(not latent_picker.value, mo.md("Pick latents above to see their dashboards."))
    _latents = sorted(set(latent_picker.value))
    with mo.status.spinner(title="Latent activations", subtitle=f"{len(texts)} texts"):
        _acts = analysis.latent_activations(mas, texts, latents=_latents)
    dashboards = {lat: analysis.latent_dashboard(mas, lat, texts, acts=_acts) for lat in _latents}
    mo.ui.tabs(
        {
            f"latent {lat}": mo.vstack(
                [
                    mo.Html(d.html),
                    mo.accordion(
                        {
                            "activation histogram (plotly)": d.histogram,
                            "promoted / suppressed tokens": mo.hstack(
                                [
                                    show_table(d.top_logits),
                                    show_table(d.bottom_logits),
                                ],
                                widths="equal",
                            ),
                        }
                    ),
                ]
            )
            for lat, d in dashboards.items()
        }
    )
    return (dashboards,)


@app.cell
def _():
    prompt_box = mo.ui.text_area(
        value="What is 15% of 240?", label="prompt", full_width=True, rows=2
    )
    response_box = mo.ui.text_area(
        value="To find 15% of 240, multiply 0.15 by 240. The answer is 36.",
        label="response (optional: empty looks at the prompt only)",
        full_width=True,
        rows=3,
    )
    mo.vstack([mo.md("### Reads and writes per token"), prompt_box, response_box])
    return prompt_box, response_box


@app.cell
def _(lora, mas, prompt_box, response_box):
    mo.stop(not prompt_box.value.strip(), mo.md("Type a prompt above."))
    per_token = analysis.per_token_reads_writes(
        lora, mas, prompt_box.value, response=response_box.value.strip() or None
    )
    per_token_fig = figures.fig_per_token(per_token)
    mo.vstack([per_token_fig, show_table(per_token, page_size=20)])
    return per_token, per_token_fig


@app.cell
def _(adapter_picker):
    card_dir = Path(adapter_picker.value) / "card"
    card_prompts = mo.ui.slider(
        10, 80, value=40, step=10, label="fresh prompts per side", show_value=True
    )
    card_checks = mo.ui.checkbox(value=True, label="check faithfulness (generates)")
    card_button = mo.ui.run_button(label="Write the adapter card")
    mo.vstack(
        [
            mo.md(
                "### Adapter card\n\nThe adapter in its latents, with labels and the checks "
                "that the description carries the behaviour (sufficiency, necessity against the "
                "dense reference it was distilled from, a same-count random-latent control, "
                "per-latent effects). The checks generate: with 40 prompts per side expect "
                "about 10 min for a 16 + 16-latent card on 2 CPU cores; the result is cached "
                "next to the card. Same as `saelora describe "
                f"{Path(adapter_picker.value).name}`; it writes `{card_dir}`."
            ),
            mo.hstack([card_prompts, card_checks, card_button], justify="start"),
        ]
    )
    return card_button, card_checks, card_dir, card_prompts


@app.cell
def _(adapter_picker, card_button, card_checks, card_prompts, mas):
    mo.stop(
        not card_button.value,
        mo.md("Press **Write the adapter card** to build it (and show it here)."),
    )
    with mo.status.spinner(title="Building the card (faithfulness checks generate)..."):
        _res = describe(
            adapter_picker.value,
            mas=mas,
            max_prompts=card_prompts.value,
            per_latent_prompts=min(20, card_prompts.value),
            per_latent_tokens=12,
            faithfulness=card_checks.value,
            progress=False,
        )
    mo.Html(card_fragment(_res.out_dir))
    return


@app.cell
def _():
    export_button = mo.ui.run_button(
        label=f"Export figures, tables, dashboards and the card to {EXPORTS.relative_to(ROOT)}/"
    )
    export_button
    return (export_button,)


@app.cell
def _(adapter_picker, export_button, feats, feats_fig):
    mo.stop(not export_button.value)
    _name = f"{adapter_picker.selected_key}-top-feats"
    mo.md(export_note(EXPORTS, figures={_name: feats_fig}, tables={_name: feats}))
    return


@app.cell
def _(adapter_picker, export_button, per_token, per_token_fig):
    mo.stop(not export_button.value)
    _name = f"{adapter_picker.selected_key}-per-token"
    mo.md(export_note(EXPORTS, figures={_name: per_token_fig}, tables={_name: per_token}))
    return


@app.cell
def _(adapter_picker, dashboards, export_button):
    mo.stop(not export_button.value)
    _name = adapter_picker.selected_key
    _figures = {f"{_name}-latent-{_l}-histogram": _d.histogram for _l, _d in dashboards.items()}
    _tables = {}
    for _l, _d in dashboards.items():
        _tables[f"{_name}-latent-{_l}-examples"] = _d.examples
        _tables[f"{_name}-latent-{_l}-top-logits"] = _d.top_logits
    _pages = {f"{_name}-dashboards": [_d.html for _d in dashboards.values()]}
    mo.md(export_note(EXPORTS, figures=_figures, tables=_tables, pages=_pages))
    return


@app.cell
def _(adapter_picker, card_dir, export_button):
    mo.stop(not export_button.value)
    _name = f"{adapter_picker.selected_key}-card"
    mo.md(export_note(EXPORTS, card_dir=card_dir, card_name=_name))
    return


if __name__ == "__main__":
    app.run()
