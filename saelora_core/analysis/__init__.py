"""Analysis of a trained adapter: feature tables, logit attribution, activation examples,
sparsity statistics and behaviour evaluation. Every function returns a DataFrame, a dataclass of
DataFrames, or a plotly Figure.

- ``features``: :func:`top_feats_summary`, :func:`per_token_reads_writes`, Neuronpedia links
- ``logits``: :func:`top_toks_table`, :func:`edit_logit_attribution` (direct-path / causal),
  :func:`prompt_logit_attribution` and :func:`topic_logit_attribution` (per prompt, per topic)
- ``activations``: :func:`latent_activations`, :func:`max_activating_examples`,
  :func:`latent_dashboard`, :func:`load_texts`
- ``sparsity``: :func:`adapter_sparsity`, :func:`sorted_weight_curves` and the noise baseline
- ``behaviour``: :func:`evaluate_behaviour`, detectors, :func:`response_ce`
- ``playground``: :func:`try_adapter` (base vs adapter answers, the edit token by token),
  :func:`behaviour_rate` (the rate on a handful of fresh prompts), :func:`playground_text`
"""

from saelora_core.analysis.activations import (
    LatentDashboard,
    TokenActs,
    dashboard_html,
    dataset_rows,
    latent_activations,
    latent_dashboard,
    load_texts,
    max_activating_examples,
)
from saelora_core.analysis.behaviour import (
    DETECTORS,
    BehaviourResult,
    ResponseCe,
    behaviour_metadata,
    detect_french,
    detect_uppercase,
    effect_retained,
    evaluate_behaviour,
    response_ce,
    wilson_interval,
)
from saelora_core.analysis.features import (
    latent_fire_freq,
    neuronpedia_id_for,
    per_token_reads_writes,
    top_feats_summary,
)
from saelora_core.analysis.logits import (
    edit_logit_attribution,
    edit_logit_diff,
    edit_logit_diffs,
    latent_logits,
    prompt_logit_attribution,
    top_changed_tokens,
    top_toks_table,
    topic_logit_attribution,
    unembed_scores,
)
from saelora_core.analysis.playground import (
    Playground,
    PlaygroundAnswer,
    behaviour_rate,
    playground_html,
    playground_text,
    rate_line,
    try_adapter,
)
from saelora_core.analysis.sparsity import (
    adapter_sparsity,
    noise_baseline_closed_form,
    random_unit_vectors,
    sorted_weight_curves,
    vector_sparsity,
)

__all__ = [
    "DETECTORS",
    "BehaviourResult",
    "LatentDashboard",
    "Playground",
    "PlaygroundAnswer",
    "ResponseCe",
    "TokenActs",
    "adapter_sparsity",
    "behaviour_metadata",
    "behaviour_rate",
    "dashboard_html",
    "dataset_rows",
    "detect_french",
    "detect_uppercase",
    "edit_logit_attribution",
    "edit_logit_diff",
    "edit_logit_diffs",
    "prompt_logit_attribution",
    "top_changed_tokens",
    "topic_logit_attribution",
    "effect_retained",
    "wilson_interval",
    "evaluate_behaviour",
    "response_ce",
    "latent_activations",
    "latent_dashboard",
    "latent_fire_freq",
    "latent_logits",
    "load_texts",
    "max_activating_examples",
    "neuronpedia_id_for",
    "noise_baseline_closed_form",
    "per_token_reads_writes",
    "playground_html",
    "playground_text",
    "rate_line",
    "random_unit_vectors",
    "sorted_weight_curves",
    "top_feats_summary",
    "top_toks_table",
    "try_adapter",
    "unembed_scores",
    "vector_sparsity",
]
