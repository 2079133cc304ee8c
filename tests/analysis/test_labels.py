"""Latent labels: the offline rule is deterministic; the LLM labeller, against a real HTTP
server on loopback, caches its answers, never writes the key, and survives 429s and malformed
answers."""

from __future__ import annotations

import json
import re

from saelora_core.analysis.labels import (
    LatentEvidence,
    LlmLabeller,
    label_latents,
    label_prompt,
    rule_label,
)
from tests.llm_server import FAKE_KEY, Reply, answer_json, running_server


def evidence(latent: int) -> LatentEvidence:
    return LatentEvidence(
        latent,
        snippets=[
            [(" solve", 0.5), (" the", 0.0), (" equation", 3.0)],
            [(" an", 0.0), (" equation", 2.0)],
            [(" x", 1.5), ("=", 0.2)],
        ],
        promoted=[" la", " le", " des", " un"],
    )


def test_rule_label_is_deterministic_and_built_from_the_evidence():
    ev = evidence(5)
    first = rule_label(ev)
    assert first == rule_label(evidence(5))
    assert first == 'fires on "equation", "x" · promotes "la", "le", "des"'
    assert label_latents([ev])[5].source == "rule"
    assert rule_label(LatentEvidence(9)) == "latent 9 (no activations found)"
    # The LLM's prompt marks the activating tokens.
    assert "<<equation>>[3.0]" in label_prompt(ev)


def test_llm_labeller_caches_survives_429_and_malformed_answers_and_never_writes_the_key(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SAELORA_TEST_LABEL_KEY", FAKE_KEY)
    seen: dict[int, int] = {}

    def script(call) -> Reply:
        user = call.body["messages"][-1]["content"]
        latent = int(re.match(r"Feature (\d+)\.", user).group(1))  # type: ignore[union-attr]
        seen[latent] = seen.get(latent, 0) + 1
        n = seen[latent]
        if latent == 1 and n == 1:
            return Reply(status=429, headers={"Retry-After": "0"}, content="slow down")
        if latent == 2 and n == 1:
            return Reply(content="{not json")
        if latent == 3:
            return Reply(content=json.dumps({"name": "wrong schema"}))
        return answer_json({"label": f"  math   feature {latent} "})

    labeller_kw = dict(
        model="label-model",
        cache_dir=tmp_path / "cache",
        sae_key="sae-hash-123",
        api_key_env="SAELORA_TEST_LABEL_KEY",
        max_retries=3,
        invalid_retries=1,
        backoff_base=0.001,
        backoff_max=0.01,
    )
    evs = [evidence(i) for i in (1, 2, 3, 4)]
    with running_server(script) as server:
        labeller = LlmLabeller(base_url=server.base_url, **labeller_kw)
        labels = labeller.label_all(evs)
        n_calls = len(server.calls)
        assert all(c.authorization == f"Bearer {FAKE_KEY}" for c in server.calls)
        again = labeller.label_all(evs)
        assert len(server.calls) == n_calls  # every answer came from the cache, failures too
    assert labels[1].text == "math feature 1" and labels[1].source == "llm"  # after a 429
    assert labels[2].text == "math feature 2" and labels[2].source == "llm"  # after bad JSON
    assert labels[4].source == "llm"
    # Always off-schema: the rule label, saying why.
    assert labels[3].text == rule_label(evs[2])
    assert labels[3].source.startswith("rule (LLM failed: invalid answer")
    assert {k: (v.text, v.source) for k, v in again.items()} == {
        k: (v.text, v.source) for k, v in labels.items()
    }
    assert seen == {1: 2, 2: 2, 3: 2, 4: 1}
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f
    # Another SAE is another question: not served from this cache.
    with running_server(script) as server:
        LlmLabeller(base_url=server.base_url, **(labeller_kw | {"sae_key": "other"})).label_all(
            evs[3:]
        )
        assert len(server.calls) == 1
