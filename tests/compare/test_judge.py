"""The AxBench-style judge against a real HTTP server on loopback: parsing, the harmonic mean,
the cache, 429 with Retry-After, malformed and out-of-range answers, and the key never written."""

from __future__ import annotations

import dataclasses
import json

import pytest

from saelora_core.compare.judge import (
    harmonic_mean,
    judge_from_env,
    parse_scores,
)
from saelora_core.data.config import ApiKeyError
from saelora_core.data.prompts import SchemaError
from tests.llm_server import FAKE_KEY, Reply, answer_json, running_server


def test_parse_scores_and_harmonic_mean():
    assert parse_scores({"concept": 2, "instruction": 1.0, "fluency": "2"}) == {
        "concept": 2,
        "instruction": 1,
        "fluency": 2,
    }
    for bad in (
        {"concept": 3, "instruction": 1, "fluency": 1},
        {"concept": -1, "instruction": 1, "fluency": 1},
        {"concept": 1.5, "instruction": 1, "fluency": 1},
        {"concept": True, "instruction": 1, "fluency": 1},
        {"concept": "high", "instruction": 1, "fluency": 1},
        {"concept": 1, "instruction": 1},
        [1, 1, 1],
    ):
        with pytest.raises(SchemaError):
            parse_scores(bad)
    assert harmonic_mean([2, 2, 2]) == 2
    assert harmonic_mean([2, 1, 2]) == pytest.approx(3 / (0.5 + 1 + 0.5))
    assert harmonic_mean([2, 0, 2]) == 0


QUESTIONS = {
    "q-429": {"concept": 2, "instruction": 2, "fluency": 2},
    "q-malformed": {"concept": 2, "instruction": 1, "fluency": 2},
    "q-out-of-range": None,
    "q-strings": {"concept": "1", "instruction": "2", "fluency": "2"},
    "q-zero": {"concept": 0, "instruction": 2, "fluency": 2},
}


def script(call) -> Reply:
    if call.prompt == "q-429" and call.attempt == 1:
        return Reply(status=429, headers={"Retry-After": "0"}, content="slow down")
    if call.prompt == "q-malformed" and call.attempt == 1:
        return Reply(content='{"concept": 2, "instruction"')
    if call.prompt == "q-out-of-range":
        return answer_json({"concept": 5, "instruction": 2, "fluency": 2})
    return answer_json(QUESTIONS[call.prompt])


def test_judge_on_loopback_caches_survives_faults_and_never_writes_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SAELORA_TEST_JUDGE_KEY", FAKE_KEY)
    monkeypatch.delenv("SAELORA_JUDGE_MODEL", raising=False)
    assert judge_from_env(tmp_path / "cache") is None  # offline: not judged
    items = [(q, f"answer to {q}") for q in QUESTIONS]
    with running_server(script) as server:
        judge = judge_from_env(
            tmp_path / "cache",
            model="judge-model",
            base_url=server.base_url,
            api_key_env="SAELORA_TEST_JUDGE_KEY",
        )
        assert judge is not None
        judge.cfg = dataclasses.replace(
            judge.cfg, backoff_base=0.001, backoff_max=0.01, invalid_retries=1, max_retries=3
        )
        scores = judge.score("the answer is written in French", items)
        n_first = len(server.calls)
        assert all(c.authorization == f"Bearer {FAKE_KEY}" for c in server.calls)
        assert server.count(prompt="q-429") == 2
        assert server.count(prompt="q-malformed") == 2
        assert server.count(prompt="q-out-of-range") == 2  # asked again once, then failed
        again = judge.score("the answer is written in French", items)
        # Every good answer came from the cache; the failed one is asked again (retry_failed).
        assert len(server.calls) == n_first + 2
        judge.cfg = dataclasses.replace(judge.cfg, retry_failed=False)
        judge.score("the answer is written in French", items)
        assert len(server.calls) == n_first + 2
        # Another behaviour is another question.
        judge.score("the answer is in upper case", items[:1])
        assert len(server.calls) == n_first + 3
    by = dict(zip(QUESTIONS, scores, strict=True))
    assert (by["q-429"].combined, by["q-429"].status) == (2.0, "ok")
    assert by["q-malformed"].instruction == 1
    assert by["q-malformed"].combined == pytest.approx(1.5)
    assert by["q-strings"].concept == 1
    assert by["q-zero"].combined == 0.0
    bad = by["q-out-of-range"]
    assert bad.status.startswith("failed: invalid answer") and "out of range" in bad.status
    assert bad.combined != bad.combined  # nan: left out of the means
    assert [s.combined for s in again][:2] == [2.0, pytest.approx(1.5)]
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert FAKE_KEY.encode() not in f.read_bytes(), f
    assert FAKE_KEY not in json.dumps(judge.cfg.to_dict())


def test_judge_without_a_key_says_which_variable_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("SAELORA_TEST_NO_KEY", raising=False)
    judge = judge_from_env(
        tmp_path, model="m", base_url="http://127.0.0.1:9/v1", api_key_env="SAELORA_TEST_NO_KEY"
    )
    assert judge is not None
    with pytest.raises(ApiKeyError, match="SAELORA_TEST_NO_KEY"):
        judge.score("behaviour", [("q", "a")])
