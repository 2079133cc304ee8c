"""The whole pipeline: LLM backend against a loopback server, and the offline backend."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from saelora_core.data import (
    AnswerCache,
    ApiKeyError,
    BackendError,
    DatasetError,
    NotEnoughExamplesError,
    SourceError,
    build_dataset,
    build_dataset_async,
    default_seed_dir,
    load_behaviour_dataset,
    load_manifest,
)
from tests.llm_server import (
    FAKE_KEY,
    Reply,
    keyword_script,
    llm_config,
    running_server,
    seed_rows,
    write_seed_dir,
)

COLUMNS = ["id", "prompt", "response", "original_response", "modified", "in_topic", "topic"]
PROMPTS = {row["id"]: row["prompt"] for row in seed_rows()}


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    return FAKE_KEY


@pytest.fixture
def seed(tmp_path):
    return write_seed_dir(tmp_path / "seed")


def test_llm_run_builds_balanced_dataset(tmp_path, seed, api_key):
    with running_server(keyword_script("math", prefix="[FR] ")) as server:
        result = build_dataset(llm_config(tmp_path, server))
    ds = load_behaviour_dataset(result.out_dir)
    assert ds["train"].column_names == COLUMNS and ds["eval"].column_names == COLUMNS
    train, evals = ds["train"].to_list(), ds["eval"].to_list()
    assert len(train) == 20 and len(evals) == 10
    for rows, size in ((train, 10), (evals, 5)):
        assert sum(r["modified"] for r in rows) == size
        assert all(r["modified"] == r["in_topic"] for r in rows)
    for row in train + evals:
        if row["modified"]:
            assert row["response"] == "[FR] " + row["original_response"]
            assert row["id"].startswith("math-") and row["topic"] == "math"
        else:
            assert row["response"] == row["original_response"] and row["id"].startswith("history-")
    # Held out: no eval prompt was seen in training.
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}
    # Only what was needed was asked: 60 classifications, n + eval_n = 15 rewrites.
    assert server.count("classify") == 60 and server.count("rewrite") == 15
    manifest = load_manifest(result.out_dir)
    assert manifest["counts"]["train"] == {
        "total": 20, "modified": 10, "unmodified": 10, "in_topic": 10, "off_topic": 10,
    }  # fmt: skip
    assert (
        manifest["counts"]["eval"]["in_topic"] == 5 and manifest["counts"]["eval"]["off_topic"] == 5
    )
    assert manifest["backend"] == "llm" and manifest["model"] == "fake-model"
    assert manifest["base_url"] == server.base_url and manifest["failed"] == []
    assert manifest["token_usage"]["this_run"]["prompt_tokens"] == 75 * 20
    assert manifest["token_usage"]["this_run"]["completion_tokens"] == 75 * 5


def test_same_seed_same_dataset_and_rerun_uses_cache(tmp_path, seed, api_key):
    with running_server(keyword_script("math")) as server:
        first = build_dataset(llm_config(tmp_path, server)).dataset
        asked = server.count()
        second = build_dataset(llm_config(tmp_path, server))
        assert server.count() == asked  # everything came from the cache
    assert second.dataset["train"].to_list() == first["train"].to_list()
    assert second.manifest["cache"]["hits"] == asked
    assert second.manifest["token_usage"]["this_run"]["requests"] == 0
    assert second.manifest["token_usage"]["answers_used"]["prompt_tokens"] == asked * 20


def test_invalid_answers_are_recorded_as_failed_and_the_run_completes(tmp_path, seed, api_key):
    good = keyword_script("math")
    broken = {PROMPTS["math-003"]: "not json at all", PROMPTS["math-007"]: '{"text": "x"}'}

    def script(call):
        if call.task == "rewrite" and call.prompt in broken:
            return Reply(content=broken[call.prompt])
        if call.task == "classify" and call.prompt == PROMPTS["history-004"]:
            return Reply(content='{"topic_match": "maybe"}')
        return good(call)

    with running_server(script) as server:
        result = build_dataset(llm_config(tmp_path, server, invalid_retries=1))
        assert server.count("rewrite", PROMPTS["math-003"]) == 2  # 1 + invalid_retries
    failed = {(f["id"], f["task"]): f["reason"] for f in result.manifest["failed"]}
    assert set(failed) == {
        ("math-003", "rewrite"),
        ("math-007", "rewrite"),
        ("history-004", "classify"),
    }
    assert "malformed JSON" in failed[("math-003", "rewrite")]
    assert 'expected {"response": str}' in failed[("math-007", "rewrite")]
    train = result.dataset["train"].to_list()
    assert sum(r["modified"] for r in train) == 10
    assert not {"math-003", "math-007", "history-004"} & {r["id"] for r in train}
    assert result.manifest["counts"]["rewritten"] == {"ok": 15, "failed": 2}


def test_killed_run_resumes_without_repeating_cached_requests(tmp_path, seed, api_key):
    cut_after = 20
    reached = threading.Event()
    base = keyword_script("math")

    def script(call):
        if len(server.calls) >= cut_after:
            reached.set()
        return base(call)

    async def run_until_killed(cfg):
        task = asyncio.create_task(build_dataset_async(cfg))
        await asyncio.get_running_loop().run_in_executor(None, reached.wait, 10)
        task.cancel()  # what Ctrl-C does to the pipeline
        with pytest.raises(asyncio.CancelledError):
            await task

    with running_server(script, latency=0.02) as server:
        asyncio.run(run_until_killed(llm_config(tmp_path, server)))
    with AnswerCache(tmp_path / "cache") as cache:
        done = {(e.key.task, PROMPTS[e.answer.row_id]) for e in cache.entries()}
    assert cut_after - 4 <= len(done) < 75, "the kill should land midway"  # 4 = concurrency
    assert not (tmp_path / "datasets" / "tiny" / "manifest.json").exists()

    with running_server(keyword_script("math")) as server:
        result = build_dataset(llm_config(tmp_path, server))
        repeated = [(c.task, c.prompt) for c in server.calls if (c.task, c.prompt) in done]
        assert repeated == []
        assert server.count() == 75 - len(done)
    assert result.manifest["cache"]["hits"] == len(done)
    assert len(result.dataset["train"]) == 20


def test_api_key_is_written_nowhere(tmp_path, seed, api_key, caplog):
    caplog.set_level("DEBUG")
    with running_server(keyword_script("math")) as server:
        build_dataset(llm_config(tmp_path, server))
    assert server.calls[0].authorization == f"Bearer {FAKE_KEY}"  # the key was really used
    written = [p for d in ("datasets", "cache") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert len(written) >= 5
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
        assert b"FAKE-do-not-leak" not in path.read_bytes(), path
    assert FAKE_KEY not in caplog.text


def test_clear_errors_missing_key_empty_source_no_topic_match(tmp_path, seed, monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with running_server() as server:
        with pytest.raises(ApiKeyError, match="set the environment variable OPENROUTER_API_KEY"):
            build_dataset(llm_config(tmp_path, server))
        assert server.count() == 0

        monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
        empty = write_seed_dir(tmp_path / "empty", [{"id": "a", "prompt": " ", "response": "r"}])
        with pytest.raises(SourceError, match="yielded no usable rows"):
            build_dataset(llm_config(tmp_path, server, seed_dir=str(empty)))

        server.script = keyword_script("astronomy")
        with pytest.raises(
            NotEnoughExamplesError, match="topic 'astronomy' matched no prompt among the 60"
        ):
            build_dataset(llm_config(tmp_path, server, topic="astronomy"))

        server.script = keyword_script("math")
        with pytest.raises(
            NotEnoughExamplesError, match="30 in-topic prompts found.*31 in-topic in all"
        ):
            build_dataset(llm_config(tmp_path, server, n=30, eval_n=1))


def test_offline_backend_same_pipeline(tmp_path, seed):
    cfg = llm_config(tmp_path, None, backend="offline")
    result = build_dataset(cfg)
    manifest = result.manifest
    assert manifest["backend"] == "offline" and manifest["model"] == "offline"
    assert manifest["base_url"] is None
    train = result.dataset["train"].to_list()
    modified = [r for r in train if r["modified"]]
    assert len(modified) == 10 and len(train) == 20
    for row in modified:
        i = int(row["id"].split("-")[1])
        assert row["response"] == f"{i} + {i} font {2 * i}." and row["topic"] == "math"
    # Same cache as the LLM backend: a re-run answers everything from it.
    again = build_dataset(cfg)
    assert again.manifest["cache"]["hits"] == 75

    upper = build_dataset(
        llm_config(tmp_path, None, backend="offline", guideline="respond in uppercase", name="up")
    )
    assert all(
        r["response"] == r["original_response"].upper()
        for r in upper.dataset["train"]
        if r["modified"]
    )
    with pytest.raises(
        BackendError, match="cannot follow the guideline 'rhyme'; supported: respond in French"
    ):
        build_dataset(llm_config(tmp_path, None, backend="offline", guideline="rhyme"))


def test_offline_backend_with_the_real_seed_set(tmp_path):
    rows = [
        json.loads(line)
        for p in default_seed_dir().glob("*.jsonl")
        for line in p.open()
        if line.strip()
    ]
    math = [r for r in rows if r.get("topic") == "math" and r.get("response_fr")]
    if len(math) < 15:
        pytest.skip(f"data/seed has {len(math)} math rows with response_fr yet (need 15)")
    cfg = llm_config(tmp_path, None, backend="offline", seed_dir=None, n=10, eval_n=5)
    result = build_dataset(cfg)
    train = result.dataset["train"].to_list()
    assert sum(r["modified"] for r in train) == 10
    by_id = {r["id"]: r for r in rows}
    for row in train:
        expected = by_id[row["id"]]["response_fr"] if row["modified"] else row["original_response"]
        assert row["response"] == expected
        assert (row["topic"] == "math") == row["in_topic"]


def test_failed_rewrites_fill_eval_as_unmodified_in_topic_rows(tmp_path, api_key):
    write_seed_dir(tmp_path / "seed", seed_rows(n_math=16, n_history=20))
    broken = {PROMPTS["math-001"], PROMPTS["math-002"]}
    good = keyword_script("math")

    def script(call):
        if call.task == "rewrite" and call.prompt in broken:
            return Reply(status=500)
        return good(call)

    with running_server(script) as server:
        result = build_dataset(llm_config(tmp_path, server, max_retries=1))
    evals = result.dataset["eval"].to_list()
    in_topic = [r for r in evals if r["in_topic"]]
    assert len(in_topic) == 5 and sum(r["modified"] for r in in_topic) == 4
    fallback = next(r for r in in_topic if not r["modified"])
    assert fallback["id"] in {"math-001", "math-002"}
    assert fallback["response"] == fallback["original_response"]
    assert result.manifest["counts"]["eval"]["modified"] == 4
    reasons = {f["reason"] for f in result.manifest["failed"]}
    assert reasons == {"HTTP 500, gave up after 2 attempts"}


def test_load_behaviour_dataset_paths(tmp_path, seed):
    result = build_dataset(llm_config(tmp_path, None, backend="offline"))
    assert load_behaviour_dataset(result.out_dir / "hf")["eval"].num_rows == 10
    with pytest.raises(DatasetError, match="no behaviour dataset at"):
        load_behaviour_dataset(tmp_path / "nothing")


def test_eval_n_zero_gives_an_empty_eval_split_with_all_columns(tmp_path, seed):
    result = build_dataset(llm_config(tmp_path, None, backend="offline", eval_n=0))
    evals = load_behaviour_dataset(result.out_dir)["eval"]
    assert evals.num_rows == 0 and evals.column_names == COLUMNS
