"""An ipywidgets explorer of one adapter's latents (Jupyter; in marimo wrap it with
``mo.ui.anywidget`` or use the notebooks' own controls)."""

from __future__ import annotations

from pathlib import Path

import ipywidgets as widgets

from saelora_core.analysis import (
    LatentDashboard,
    latent_activations,
    latent_dashboard,
    top_feats_summary,
)
from saelora_core.models.presets import ModelAndSae
from saelora_core.reporting.adapter_report import load_adapter_and_model


def explore(
    lora_dir: str | Path,
    mas: ModelAndSae | None = None,
    texts: list[str] | None = None,
    *,
    k: int = 10,
) -> widgets.VBox:
    """A Dropdown of the adapter's top ``k`` read and write latents and an HTML pane with the
    chosen latent's dashboard (max-activating examples on ``texts``, logits, histogram).

    Activations of all listed latents are computed once; dashboards are cached per latent.
    ``box.children`` is ``[title (HTML), dropdown (Dropdown), dashboard pane (HTML)]``.
    """
    loaded, m = load_adapter_and_model(lora_dir, mas)
    feats = top_feats_summary(loaded.lora, k=k)
    options: list[tuple[str, int]] = []
    seen: set[int] = set()
    for r in feats.itertuples():
        if r.latent not in seen:
            seen.add(int(r.latent))
            options.append(
                (
                    f"{r.side} c{r.component} #{r.rank}: latent {r.latent} (w={r.weight:+.3f})",
                    int(r.latent),
                )
            )
    texts = texts or []
    acts = latent_activations(m, texts, latents=sorted(seen)) if texts and seen else None
    cache: dict[int, LatentDashboard] = {}

    def render(latent: int | None) -> str:
        if latent is None:
            return "<p><i>the adapter has no nonzero latents</i></p>"
        if latent not in cache:
            cache[latent] = latent_dashboard(m, latent, texts, acts=acts)
        return cache[latent].html

    dropdown = widgets.Dropdown(
        options=options, description="latent", layout=widgets.Layout(width="480px")
    )
    pane = widgets.HTML(value=render(dropdown.value))

    def on_change(change) -> None:
        pane.value = render(change["new"])

    dropdown.observe(on_change, names="value")
    box = widgets.VBox([widgets.HTML(f"<b>{Path(lora_dir).name}</b>: top latents"), dropdown, pane])
    return box
