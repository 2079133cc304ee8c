"""The broad-corpus SAE against the first one, on text neither trained on, and its training curve.

Stages, each skipped when its output exists (delete the file to redo it):

1. ``general_text.{json,md}``: both SAEs spliced into the model on
   ``data/heldout/general_text.jsonl``, per genre and overall (``sae.evaluate``: EV mean-centred,
   CE clean / spliced / zero-ablated, CE recovered, L0, latents silent there), in float32.
2. ``corpus_heldout.json``: EV, L0 and the latents that never fire over every token of the SAE
   corpus's held-out split (~0.9M tokens, cached once under ``--heldout-cache``;
   ``sae.cache_metrics``).
3. ``curve.csv`` / ``curve.png``: every training snapshot of the new SAE (``snapshot_every``)
   and the final one, on the first ``--curve-tokens`` held-out tokens (EV, L0, never-firing
   latents) and on ``--curve-general`` tokens per genre of general text (CE increase).
4. ``table.md``: the side-by-side table quoted in ``docs/sae_build.md``.
5. ``width.csv`` (only with ``--widths``): the new SAE's recipe retrained from the same cache at
   each width for ``--width-tokens`` tokens, on the new SAE's schedule up to that point (the same
   warm-up, learning rate and dead-latent window; no decay, which the new SAE only starts at 80 %
   of its run), so a width point at T tokens compares with the new SAE's snapshot at T in
   ``curve.csv``. SAEs under ``--width-runs`` (git ignores ``runs/``). A shorter run with its
   schedule scaled down is no substitute: below about 2M tokens BatchTopK's inference threshold
   has not settled (the snapshot at 1M tokens has L0 136 for k = 60).

Usage: python studies/sae_substrate.py [--new data/saes/gemma-3-270m-l12-bt8k]
       [--old data/saes/gemma-3-270m-l12-topk] [--out results/sae_substrate]
       [--widths 4096 --width-tokens 2048000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from saelora_core.io.atomic import atomic_write_bytes, atomic_write_json
from saelora_core.io.paths import REPO_ROOT
from saelora_core.sae.train_cached import checkpoint_dir

GENERAL_TEXT = REPO_ROOT / "data" / "heldout" / "general_text.jsonl"


def general_stage(saes: dict[str, Path], out: Path) -> dict:
    from saelora_core.models.presets import load_base_model
    from saelora_core.sae.pipeline import eval_stage

    path = out / "general_text.json"
    if path.exists():
        return json.loads(path.read_text())
    # An SAE measured by its own build (``general_text_eval.json``, the same texts, settings
    # and code) is not measured again.
    known = {}
    for name, d in saes.items():
        own = d / "general_text_eval.json"
        if own.exists():
            rec = json.loads(own.read_text())
            if (
                rec.get("max_tokens_per_group") is None
                and Path(rec["texts"]).name == GENERAL_TEXT.name
            ):
                known[name] = rec["results"][d.name]
    todo: dict[str, str | Path] = {k: v for k, v in saes.items() if k not in known}
    record = {"texts": str(GENERAL_TEXT), "group_key": "kind", "max_tokens_per_group": None}
    results = {}
    if todo:
        model = load_base_model("gemma-3-270m", dtype=torch.float32)
        results = eval_stage(model, todo, GENERAL_TEXT, out / "general_text_new.json")["results"]
    record["results"] = {k: known[k] if k in known else results[k] for k in saes}
    atomic_write_json(path, record)
    return record


def heldout_stage(saes: dict[str, Path], corpus: Path, cache: Path, out: Path) -> dict:
    from saelora_core.cli.sae import caching_dtype
    from saelora_core.models.presets import load_base_model
    from saelora_core.sae import pipeline

    path = out / "corpus_heldout.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    todo = [k for k in saes if k not in done]
    if todo:
        model = load_base_model("gemma-3-270m", dtype=caching_dtype())
        for name in todo:
            done[name] = pipeline.heldout_stage(model, saes[name], corpus, cache)
            atomic_write_json(path, done)
    return done


def curve_stage(new: Path, cache: Path, out: Path, tokens: int, general: int) -> pd.DataFrame:
    from saelora_core.models.presets import load_base_model

    path = out / "curve.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame()
    snaps = sorted((checkpoint_dir(new) / "snapshots").glob("step_*"))
    final_steps = json.loads((new / "train_config.json").read_text())
    steps = {int(p.name.split("_")[1]): p for p in snaps}
    steps[final_steps["training_tokens"] // final_steps["train_batch_size_tokens"]] = new
    todo = [s for s in sorted(steps) if done.empty or s not in set(done["step"])]
    if not todo:
        return done
    model = load_base_model("gemma-3-270m", dtype=torch.float32)
    batch = final_steps["train_batch_size_tokens"]
    for step in todo:
        row = {"step": step, "training_tokens": step * batch}
        row |= point_metrics(model, steps[step], cache, tokens, general)
        done = append_row(path, done, row, "step")
    return done


def append_row(path: Path, done: pd.DataFrame, row: dict, key: str) -> pd.DataFrame:
    """``done`` with ``row`` added, sorted by ``key``, written to ``path`` at once (a stage
    killed mid-way keeps every finished point)."""
    done = pd.concat([done, pd.DataFrame([row])], ignore_index=True).sort_values(key)
    atomic_write_bytes(path, done.to_csv(index=False).encode())
    return done


def point_metrics(model, sae_dir: Path, cache: Path, tokens: int, general: int) -> dict:
    """One SAE on the first ``tokens`` held-out tokens and ``general`` general-text tokens per
    genre: the columns of ``curve.csv``."""
    from saelora_core.sae.cache_metrics import cache_metrics
    from saelora_core.sae.cached_batches import special_token_ids
    from saelora_core.sae.evaluate import evaluate_by_group, read_rows
    from saelora_core.sae.loading import load_sae

    sae, _ = load_sae(path=sae_dir)
    held = cache_metrics(
        sae, cache, exclude_ids=special_token_ids(model.tokenizer), max_tokens=tokens
    )
    hook = sae.cfg.metadata.hook_name or "blocks.12.hook_resid_post"
    gen = evaluate_by_group(
        model, sae, hook, read_rows(GENERAL_TEXT), max_tokens_per_group=general
    )["overall"]
    return {
        "heldout_tokens": held.tokens,
        "heldout_ev": held.explained_variance,
        "heldout_l0": held.mean_l0,
        "heldout_never_fired": held.dead_fraction,
        "general_tokens": gen.tokens,
        "general_ev": gen.explained_variance,
        "general_ce_increase": gen.ce_increase,
        "general_ce_recovered": gen.ce_loss_recovered,
    }


def width_stage(
    new: Path,
    train_cache: Path,
    held_cache: Path,
    runs: Path,
    out: Path,
    widths: list[int],
    budget: int,
    tokens: int,
    general: int,
) -> pd.DataFrame:
    """The new SAE's recipe at each width, ``budget`` training tokens each, from the same cache."""
    from dataclasses import replace

    from saelora_core.models.presets import load_base_model
    from saelora_core.sae.pipeline import fit_stage
    from saelora_core.sae.train import SaeTrainConfig

    path = out / "width.csv"
    done = pd.read_csv(path) if path.exists() else pd.DataFrame()
    todo = [w for w in widths if done.empty or w not in set(done["d_sae"])]
    if not todo:
        return done
    base = SaeTrainConfig(**json.loads((new / "train_config.json").read_text()))
    full = base.training_tokens // base.train_batch_size_tokens
    steps = budget // base.train_batch_size_tokens
    model = load_base_model("gemma-3-270m", dtype=torch.float32)
    for w in todo:
        cfg = replace(
            base,
            d_sae=w,
            training_tokens=steps * base.train_batch_size_tokens,
            lr_decay_steps=0 if steps < full else base.lr_decay_steps,
            snapshot_every=0,
            checkpoint_every=max(10, steps // 5),
        )
        sae_dir = fit_stage(model, train_cache, cfg, runs / f"d{w}-{cfg.training_tokens}")
        row = {"d_sae": w, "training_tokens": cfg.training_tokens}
        row |= point_metrics(model, sae_dir, held_cache, tokens, general)
        done = append_row(path, done, row, "d_sae")
    return done


def plot_curve(curve: pd.DataFrame, out: Path) -> None:
    from plotly.subplots import make_subplots

    from saelora_core.reporting.export import save_figure

    fig = make_subplots(rows=1, cols=3, subplot_titles=("explained variance", "CE increase", "L0"))
    x = curve["training_tokens"] / 1e6
    for col, (name, y) in enumerate(
        [
            ("held-out corpus EV", curve["heldout_ev"]),
            ("general-text CE increase (nats)", curve["general_ce_increase"]),
            ("held-out L0", curve["heldout_l0"]),
        ],
        start=1,
    ):
        fig.add_scatter(x=x, y=y, mode="lines+markers", name=name, row=1, col=col)
        fig.update_xaxes(title_text="training tokens (M)", row=1, col=col)
    fig.add_scatter(
        x=x, y=curve["general_ev"], mode="lines+markers", name="general-text EV", row=1, col=1
    )
    fig.update_layout(title="The broad-corpus SAE as it trains", width=1100, height=380)
    save_figure(fig, out, "curve", formats=("png",))


def table(general: dict, heldout: dict, names: dict[str, str]) -> str:
    lines = [
        "| SAE | general text: EV | CE increase (nats/token) | CE recovered | L0 | worst genre "
        "(EV, CE increase) | held-out corpus: tokens | EV | L0 | latents never fired |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, label in names.items():
        res = general["results"][key]
        o = res["overall"]
        worst = max((g for g in res if g != "overall"), key=lambda g: res[g]["ce_increase"])
        w = res[worst]
        h = heldout[key]
        lines.append(
            f"| {label} | {o['explained_variance']:.3f} | {o['ce_increase']:+.2f} | "
            f"{o['ce_loss_recovered']:.3f} | {o['mean_l0']:.1f} | {worst}: "
            f"{w['explained_variance']:.2f}, {w['ce_increase']:+.2f} | {h['tokens']:,} | "
            f"{h['explained_variance']:.3f} | {h['mean_l0']:.1f} | {h['dead_fraction']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--new", type=Path, default=REPO_ROOT / "data/saes/gemma-3-270m-l12-bt8k")
    p.add_argument("--old", type=Path, default=REPO_ROOT / "data/saes/gemma-3-270m-l12-topk")
    p.add_argument("--corpus", type=Path, default=REPO_ROOT / "data/corpus")
    p.add_argument(
        "--heldout-cache",
        type=Path,
        default=REPO_ROOT / "data/activations/gemma-3-270m-l12-heldout",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results/sae_substrate")
    p.add_argument("--curve-tokens", type=int, default=131_072, help="held-out tokens per point")
    p.add_argument("--curve-general", type=int, default=400, help="general-text tokens per genre")
    p.add_argument(
        "--train-cache", type=Path, default=REPO_ROOT / "data/activations/gemma-3-270m-l12"
    )
    p.add_argument("--widths", type=int, nargs="*", default=[], help="d_sae values to retrain at")
    p.add_argument("--width-tokens", type=int, default=2_048_000, help="training tokens per width")
    p.add_argument("--width-runs", type=Path, default=REPO_ROOT / "runs/sae-width")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    saes = {a.old.name: a.old, a.new.name: a.new}
    general = general_stage(saes, a.out)
    heldout = heldout_stage(saes, a.corpus, a.heldout_cache, a.out)
    curve = curve_stage(a.new, a.heldout_cache, a.out, a.curve_tokens, a.curve_general)
    plot_curve(curve, a.out)
    names = {a.old.name: f"`{a.old.name}` (first)", a.new.name: f"`{a.new.name}` (broad)"}
    (a.out / "table.md").write_text(table(general, heldout, names), encoding="utf-8")
    print((a.out / "table.md").read_text())
    if a.widths:
        width = width_stage(
            a.new,
            a.train_cache,
            a.heldout_cache,
            a.width_runs,
            a.out,
            a.widths,
            a.width_tokens,
            a.curve_tokens,
            a.curve_general,
        )
        print(width.to_string(index=False))
    print(json.dumps({"curve": curve.to_dict(orient="records")}, indent=1, default=str))


if __name__ == "__main__":
    main()
