import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="saelora · 01 dataset")

with app.setup:
    import marimo as mo

    from saelora_core.data import (
        OFFLINE_GUIDELINES,
        DatasetConfig,
        DatasetError,
        build_dataset,
        load_behaviour_dataset,
        load_manifest,
    )
    from saelora_core.ui.notebook_support import (
        counts_summary,
        dataset_form_defaults,
        dataset_names,
        default_choice,
        export_note,
        notebook_env,
    )

    ENV = notebook_env("01_dataset")
    ROOT = ENV.root  # loras/, data/, exports/
    DATASETS = ENV.datasets
    EXPORTS = ENV.exports
    FORM = dataset_form_defaults(DATASETS, ENV.default_dataset)  # the shown dataset's settings


@app.cell
def _():
    mo.md(r"""
    # 1 · Behaviour dataset

    Prompts about a **topic** get their responses rewritten by a **guideline** (e.g. math
    questions answered in French); off-topic prompts keep their original responses. The
    adapter trained in `02_train.py` should learn the rewrite *only* for the topic.

    Pick a source and a backend, press **Build**, or browse a dataset already in
    `data/datasets/`. The `llm` backend talks to any OpenAI-compatible endpoint; it reads the
    API key from the environment variable you name here; the key itself never enters the
    notebook, the config or the manifest.
    """)
    return


@app.cell
def _():
    source = mo.ui.dropdown(
        ["seed", "helpsteer", "local path"], value=FORM["source"], label="source"
    )
    local_path = mo.ui.text(
        placeholder="path/to/rows.jsonl | .csv | saved datasets dir",
        label="local path",
        full_width=True,
    )
    topic = mo.ui.text(value=FORM["topic"], label="topic")
    guideline = mo.ui.text(value=FORM["guideline"], label="guideline", full_width=True)
    backend = mo.ui.radio(["offline", "llm"], value=FORM["backend"], label="backend", inline=True)
    base_url = mo.ui.text(value=FORM["base_url"], label="base_url", full_width=True)
    model = mo.ui.text(value=FORM["model"], label="model")
    api_key_env = mo.ui.text(value=FORM["api_key_env"], label="API key env var")
    n = mo.ui.number(start=1, stop=100_000, value=FORM["n"], label="n (train rows per side)")
    eval_n = mo.ui.number(start=0, stop=10_000, value=FORM["eval_n"], label="eval_n (per side)")
    seed = mo.ui.number(start=0, stop=2**31 - 1, value=FORM["seed"], label="seed")
    name = mo.ui.text(placeholder="derived from source-topic-guideline", label="name")
    build_button = mo.ui.run_button(label="Build dataset", kind="success")
    mo.vstack(
        [
            mo.hstack([source, local_path], widths=[1, 3]),
            mo.hstack([topic, guideline], widths=[1, 3]),
            mo.hstack([n, eval_n, seed, name]),
            backend,
            mo.accordion(
                {"LLM backend settings": mo.vstack([base_url, mo.hstack([model, api_key_env])])}
            ),
            mo.md(
                "Offline guidelines (seed set only): "
                + "; ".join(f"*{g}*" for g in OFFLINE_GUIDELINES)
            ),
            build_button,
        ]
    )
    return (
        api_key_env,
        backend,
        base_url,
        build_button,
        eval_n,
        guideline,
        local_path,
        model,
        n,
        name,
        seed,
        source,
        topic,
    )


@app.cell
def _(
    api_key_env,
    backend,
    base_url,
    eval_n,
    guideline,
    local_path,
    model,
    n,
    name,
    seed,
    source,
    topic,
):
    mo.stop(
        source.value == "local path" and not local_path.value.strip(),
        mo.md("Enter the local path of a JSONL/CSV file or a saved `datasets` folder."),
    )
    dataset_cfg = DatasetConfig(
        source=local_path.value.strip() if source.value == "local path" else source.value,
        topic=topic.value,
        guideline=guideline.value,
        n=int(n.value),
        eval_n=int(eval_n.value),
        backend=backend.value,
        model=model.value,
        base_url=base_url.value,
        api_key_env=api_key_env.value,
        name=name.value.strip() or None,
        seed=int(seed.value),
        out=str(DATASETS),
        cache_dir=str(ROOT / "data" / "cache"),
        progress=False,
    )
    mo.md(f"Builds into `{dataset_cfg.out_dir}`.")
    return (dataset_cfg,)


@app.cell
def _(build_button, dataset_cfg):
    mo.stop(not build_button.value, mo.md("Press **Build dataset** to (re)build it."))
    try:
        with mo.status.spinner(
            title="Building dataset",
            subtitle=f"{dataset_cfg.backend} backend, {dataset_cfg.source}",
        ):
            built = build_dataset(dataset_cfg)
    except DatasetError as err:
        mo.stop(True, mo.callout(mo.md(f"**Build failed:** {err}"), kind="danger"))
    mo.callout(
        mo.md(
            f"Built **{built.out_dir.name}**: {counts_summary(built.manifest['counts'])}; "
            f"{len(built.failed)} failed rows, "
            f"{built.usage.total_tokens} tokens this run. It is selected below."
        ),
        kind="success",
    )
    return


@app.cell
def _(build_button):
    # Reads build_button so the list is rescanned after a build: both cells run on a click, and
    # marimo runs the build cell first (it is registered earlier).
    _names = dataset_names(DATASETS)  # oldest first
    mo.stop(not _names, mo.md(f"No dataset in `{DATASETS}` yet: build one above."))
    picker = mo.ui.dropdown(
        sorted(_names),
        # After a build the newest (the one just built); on open the one the form describes.
        value=_names[-1]
        if build_button.value
        else default_choice(dict.fromkeys(reversed(_names)), ENV.default_dataset),
        label="dataset",
    )
    split = mo.ui.radio(["train", "eval"], value="train", label="split", inline=True)
    mo.hstack([picker, split], justify="start")
    return picker, split


@app.cell
def _(picker):
    dataset_dir = DATASETS / picker.value
    dataset = load_behaviour_dataset(dataset_dir)
    manifest = load_manifest(dataset_dir)
    mo.vstack(
        [
            mo.md(
                f"**{manifest['name']}**: topic *{manifest['topic']}*, guideline "
                f"*{manifest['guideline']}*, backend `{manifest['backend']}` ({manifest['model']})"
            ),
            mo.accordion({"manifest.json": mo.json(manifest)}),
        ]
    )
    return (dataset,)


@app.cell
def _(dataset, split):
    rows = dataset[split.value].to_pandas()
    table = mo.ui.table(
        rows[["id", "modified", "in_topic", "topic", "prompt", "response", "original_response"]],
        selection="single",
        initial_selection=[int(rows["modified"].to_numpy().argmax())] if len(rows) else None,
        page_size=10,
        label=f"{split.value}: {len(rows)} rows ({int(rows['modified'].sum())} modified)",
    )
    table
    return rows, table


@app.cell
def _(rows, table):
    mo.stop(len(rows) == 0, mo.md("This split is empty."))
    row = (table.value if len(table.value) else rows).iloc[0]
    mo.vstack(
        [
            mo.md(
                f"### `{row['id']}` · {'modified' if row['modified'] else 'unmodified'}\n\n"
                f"**Prompt:** {row['prompt']}"
            ),
            mo.hstack(
                [
                    mo.callout(
                        mo.md(f"**Original response**\n\n{row['original_response']}"),
                        kind="neutral",
                    ),
                    mo.callout(
                        mo.md(f"**Training target**\n\n{row['response']}"),
                        kind="success" if row["modified"] else "neutral",
                    ),
                ],
                widths="equal",
                align="start",
            ),
        ]
    )
    return


@app.cell
def _():
    export_button = mo.ui.run_button(label=f"Export tables to {EXPORTS.relative_to(ROOT)}/")
    export_button
    return (export_button,)


@app.cell
def _(dataset, export_button, picker):
    mo.stop(not export_button.value)
    _tables = {f"{picker.value}-{split}": dataset[split].to_pandas() for split in ("train", "eval")}
    mo.md(export_note(EXPORTS, tables=_tables))
    return


if __name__ == "__main__":
    app.run()
