"""Pipeline faults against the loopback server: every one ends retried, recorded or explained.

A closed port, two runs writing the same output, throttling that must show up in the log and
the progress bar, and a runaway "rewrite" far longer than its original.
"""

from __future__ import annotations

import json
import logging
import socket
import threading

import pytest

from saelora_core.cli.app import main
from saelora_core.data import (
    AnswerCache,
    NotEnoughExamplesError,
    OutputLockedError,
    RequestsFailedError,
    build_dataset,
    load_behaviour_dataset,
    load_manifest,
)
from saelora_core.data.lock import output_lock
from tests.llm_server import (
    FAKE_KEY,
    Reply,
    answer_json,
    keyword_script,
    llm_config,
    running_server,
    seed_rows,
    write_seed_dir,
)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", FAKE_KEY)
    return FAKE_KEY


@pytest.fixture
def seed(tmp_path):
    return write_seed_dir(tmp_path / "seed")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    return f"http://127.0.0.1:{port}/v1"


def assert_no_key_in(directory):
    for path in directory.rglob("*"):
        if path.is_file():
            assert b"FAKE-do-not-leak" not in path.read_bytes(), path


def test_closed_port_says_what_happened_and_records_each_failure(tmp_path, seed, api_key):
    url = closed_port_url()
    cfg = llm_config(tmp_path, None, base_url=url, max_retries=1)
    with pytest.raises(RequestsFailedError) as err:
        build_dataset(cfg)
    message = str(err.value)
    # Not "matched no prompt": the 60 classifications all failed, and the message says so.
    assert message.startswith(
        f"60 of 60 requests failed at {url}: 60 x connection error (connection refused). "
        "Is the server running, and is --base-url right?"
    ), message
    report_path = cfg.out_dir / "failure.json"
    assert f"Each failure is listed in {report_path}" in message
    report = json.loads(report_path.read_text())
    assert report["error"] == message and report["error_type"] == "RequestsFailedError"
    assert report["failure_reasons"] == {"connection error (connection refused)": 60}
    assert len(report["failed"]) == 60 and report["failed"][0]["task"] == "classify"
    assert report["failed"][0]["reason"].endswith("gave up after 2 attempts")
    assert report["token_usage"]["this_run"]["retries"] == 60
    assert report["token_usage"]["this_run"]["retry_reasons"] == {"connection error": 60}
    assert not (cfg.out_dir / "manifest.json").exists()
    assert_no_key_in(tmp_path / "datasets")
    with AnswerCache(cfg.cache_dir) as cache:  # and the cache has them too, marked failed
        assert sum(not e.answer.ok for e in cache.entries()) == 60

    # Once the server is up, the same command builds the dataset and drops the stale report.
    with running_server(keyword_script("math")) as server:
        result = build_dataset(llm_config(tmp_path, server))
    assert result.manifest["failed"] == [] and not report_path.exists()


def test_a_big_source_on_a_dead_server_stops_after_the_first_chunk(tmp_path, api_key):
    write_seed_dir(tmp_path / "seed", seed_rows(n_math=100, n_history=100))
    url = closed_port_url()
    with pytest.raises(RequestsFailedError, match=f"^64 of 64 requests failed at {url}: "):
        build_dataset(llm_config(tmp_path, None, base_url=url, max_retries=0))


def test_the_cli_exits_2_with_the_explanation(tmp_path, seed, api_key, caplog):
    url = closed_port_url()
    argv = ["dataset", "make", "--backend", "llm", "--base-url", url, "--seed-dir", str(seed)]
    argv += ["--out", str(tmp_path / "ds"), "--cache-dir", str(tmp_path / "cache"), "--name", "x"]
    argv += ["--n", "5", "--eval-n", "1", "--max-retries", "0", "--no-progress"]
    assert main(argv) == 2
    expected = f"60 of 60 requests failed at {url}: 60 x connection error (connection refused)"
    assert expected in caplog.text
    assert (tmp_path / "ds" / "x" / "failure.json").is_file()


def test_too_few_rewrites_counts_the_failed_requests(tmp_path, seed, api_key):
    good = keyword_script("math")

    def script(call):
        return Reply(status=500) if call.task == "rewrite" else good(call)

    with running_server(script) as server:
        cfg = llm_config(tmp_path, server, max_retries=0)
        with pytest.raises(NotEnoughExamplesError) as err:
            build_dataset(cfg)
    message = str(err.value)
    assert "30 in-topic prompts found, 0 rewritten successfully" in message
    assert "30 of 90 requests failed at" in message and "30 x HTTP 500. The server is" in message
    report = json.loads((cfg.out_dir / "failure.json").read_text())
    assert report["counts"]["rewritten"] == {"ok": 0, "failed": 30}
    assert report["counts"]["classified"]["in_topic"] == 30


def test_a_second_run_on_the_same_output_is_told_plainly(tmp_path, seed, api_key):
    cfg = llm_config(tmp_path, None, backend="offline")
    with output_lock(cfg.out_dir), pytest.raises(OutputLockedError) as err:
        build_dataset(cfg)
    assert str(err.value).startswith(f"another run (pid {__import__('os').getpid()} on ")
    assert f"is writing {cfg.out_dir}; wait for it to finish, or choose another --name" in str(
        err.value
    )
    assert not (cfg.out_dir / "hf").exists()
    # The lock goes with its holder: the next run proceeds.
    assert len(build_dataset(cfg).dataset["train"]) == 20


def test_concurrent_runs_with_one_name_never_crash_or_leave_temp_folders(tmp_path, seed, api_key):
    cfg_dir = tmp_path / "datasets" / "tiny"
    cfg_dir.mkdir(parents=True)
    (cfg_dir / ".hf.999999.tmp").mkdir()  # left by a run killed mid-save
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def run(server):
        start.wait()
        try:
            outcomes.append(build_dataset(llm_config(tmp_path, server)))
        except OutputLockedError as err:
            outcomes.append(err)

    with running_server(keyword_script("math"), latency=0.01) as server:
        threads = [threading.Thread(target=run, args=(server,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    kinds = sorted(type(o).__name__ for o in outcomes)
    assert kinds == ["BuildResult", "OutputLockedError"], outcomes
    assert sorted(p.name for p in cfg_dir.iterdir()) == [".lock", "hf", "manifest.json"]
    assert len(load_behaviour_dataset(cfg_dir)["train"]) == 20


def throttled(call):
    if call.attempt == 1 and call.task == "classify" and call.prompt.startswith("math question 1"):
        return Reply(status=429, headers={"retry-after-ms": "1"})
    if call.attempt == 1 and call.task == "rewrite" and call.prompt.startswith("math question 2"):
        return Reply(status=503)
    return keyword_script("math")(call)


def test_retries_are_logged_counted_and_shown_on_the_bar(tmp_path, seed, api_key, caplog, capsys):
    caplog.set_level(logging.INFO, logger="saelora_core.data.llm")
    with running_server(throttled) as server:
        result = build_dataset(llm_config(tmp_path, server, progress=True))
    usage = result.manifest["token_usage"]["this_run"]
    # 11 classify prompts start with "math question 1" (1, 10-19); math-002 and 20-29 are
    # rewritten only when drawn, so count the 503s from the server's log.
    rewrites_503 = sum(
        c.attempt == 1 and c.task == "rewrite" and c.prompt.startswith("math question 2")
        for c in server.calls
    )
    assert usage["retry_reasons"] == {"HTTP 429": 11, "HTTP 503": rewrites_503}
    assert usage["retries"] == 11 + rewrites_503 and result.manifest["failed"] == []
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retry ")]
    assert len(retries) == usage["retries"]
    assert f"retry 1/3 in 0.00 s after HTTP 429 from {server.base_url}" in retries
    bars = capsys.readouterr().err
    assert "retries=11" in bars and "classify" in bars


def test_verbose_shows_retries_even_when_logging_is_already_configured(
    tmp_path, seed, api_key, caplog, capsys, monkeypatch
):
    # With OPENAI_LOG set, the SDK calls logging.basicConfig at import, so the CLI's own
    # basicConfig does nothing; pytest's handlers on the root logger put us in the same state.
    monkeypatch.setenv("OPENAI_LOG", "debug")
    root, sdk = logging.getLogger(), logging.getLogger("openai")
    level, sdk_level = root.level, sdk.level
    sdk.setLevel(logging.DEBUG)  # what the SDK does for OPENAI_LOG=debug
    with running_server(throttled) as server:
        argv = ["-v", "dataset", "make", "--backend", "llm", "--base-url", server.base_url]
        argv += ["--seed-dir", str(seed), "--out", str(tmp_path / "ds"), "--name", "v"]
        argv += ["--cache-dir", str(tmp_path / "cache"), "--n", "5", "--eval-n", "1"]
        argv += ["--backoff-base", "0.001", "--no-progress"]
        try:
            assert main(argv) == 0
            # OPENAI_LOG asked for the SDK's own logs; the CLI does not turn them down.
            assert sdk.level == logging.DEBUG
        finally:
            root.setLevel(level)
            sdk.setLevel(sdk_level)
    assert "after HTTP 429 from" in caplog.text


def is_long(prompt: str) -> bool:
    """A third of the math prompts ("math question <i>: ...", i % 3 == 0) get runaway rewrites."""
    return prompt.startswith("math question ") and int(prompt.split()[2][:-1]) % 3 == 0


def long_rewrites(call):
    if call.task == "rewrite" and is_long(call.prompt):
        return answer_json({"response": "x" * 200_000})
    return keyword_script("math")(call)


def test_a_runaway_rewrite_is_asked_again_then_recorded_as_malformed(tmp_path, seed, api_key):
    with running_server(long_rewrites) as server:
        result = build_dataset(llm_config(tmp_path, server, invalid_retries=1))
        long_asked = [c.prompt for c in server.calls if c.task == "rewrite" and is_long(c.prompt)]
    failed = {f["id"]: f["reason"] for f in result.manifest["failed"]}
    assert failed and len(long_asked) == 2 * len(failed)  # 1 + invalid_retries each
    for reason in failed.values():
        assert reason.startswith("invalid answer after 2 attempts: rewrite of 200000 characters")
        assert "longer than the limit of 200 (5 x the original's" in reason
    for row in result.dataset["train"].to_list() + result.dataset["eval"].to_list():
        assert len(row["response"]) < 1000
    assert result.manifest["config"]["max_rewrite_ratio"] == 5.0


def test_a_cached_runaway_rewrite_is_checked_again_under_a_stricter_ratio(tmp_path, seed, api_key):
    with running_server(long_rewrites) as server:
        loose = build_dataset(llm_config(tmp_path, server, max_rewrite_ratio=None))
        long_ids = [
            r["id"] for r in loose.dataset["train"].to_list() if len(r["response"]) == 200_000
        ]
        assert long_ids, "the loose run should have accepted a long rewrite"
        before = server.count("rewrite")
        strict = build_dataset(llm_config(tmp_path, server, max_rewrite_ratio=5.0))
        # The cached long answers are rejected, so they are asked again (and fail again).
        assert server.count("rewrite") - before >= 2 * len(long_ids)
    assert {f["id"] for f in strict.manifest["failed"]} >= set(long_ids)
    assert all(len(r["response"]) < 1000 for r in strict.dataset["train"].to_list())
    assert load_manifest(strict.out_dir)["failed"]
