"""The LLM client against a real HTTP server on loopback: retries, Retry-After, timeouts,
schema checks, token usage and API-key handling."""

from __future__ import annotations

import asyncio
import socket

import pytest

from saelora_core.data import ApiKeyError, LlmClient, resolve_api_key
from saelora_core.data.llm import retry_after_seconds
from saelora_core.data.prompts import classify_messages, parse_classification, parse_rewrite
from tests.llm_server import FAKE_KEY, Reply, answer_json, keyword_script, running_server

MESSAGES = classify_messages("mathematics", "math question: 2 + 2?")


def ask(server, parse=parse_classification, messages=MESSAGES, **settings):
    """Run one `complete_json` call against `server`; returns (result, client)."""
    options = {"max_retries": 3, "invalid_retries": 1, "backoff_base": 0.001, "backoff_max": 0.01}
    options.update(settings)

    async def go():
        client = LlmClient(api_key=FAKE_KEY, base_url=server.base_url, model="m", **options)
        try:
            return await client.complete_json(messages, parse), client
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_answer_is_parsed_and_tokens_are_counted():
    with running_server(keyword_script("math")) as server:
        result, client = ask(server)
    assert result.ok and result.value is True and result.attempts == 1
    assert (client.usage.requests, client.usage.prompt_tokens, client.usage.completion_tokens) == (
        1,
        20,
        5,
    )
    call = server.calls[0]
    assert call.authorization == f"Bearer {FAKE_KEY}"
    assert call.body["response_format"] == {"type": "json_object"}
    assert call.body["model"] == "m" and call.task == "classify" and call.param == "mathematics"


def test_429_retry_after_is_honoured():
    def script(call):
        if call.attempt == 1:
            return Reply(status=429, content="slow down", headers={"Retry-After": "1"})
        return answer_json({"topic_match": False})

    with running_server(script) as server:
        result, client = ask(server, backoff_base=0.001)
    assert result.ok and result.value is False and server.count() == 2
    waited = server.calls[1].time - server.calls[0].time
    # The computed backoff would be ~1 ms; only the header explains a wait of a second.
    assert 0.95 <= waited < 3.0, waited
    assert client.usage.retries == 1


def test_500_then_success_and_give_up_after_max_retries():
    def flaky(call):
        return Reply(status=500) if call.attempt <= 2 else answer_json({"topic_match": True})

    with running_server(flaky) as server:
        result, client = ask(server)
    assert result.ok and result.attempts == 3 and server.count() == 3

    with running_server(lambda call: Reply(status=503)) as server:
        result, _ = ask(server, max_retries=2)
    assert not result.ok and result.reason == "HTTP 503, gave up after 3 attempts"
    assert server.count() == 3


def test_slow_answer_times_out_and_is_retried():
    def slow_first(call):
        return answer_json({"topic_match": True}, delay=2.0 if call.attempt == 1 else 0.0)

    with running_server(slow_first) as server:
        result, client = ask(server, timeout=0.3)
    assert result.ok and server.count() == 2 and client.usage.retries == 1


def test_connection_errors_are_retried_then_fail():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed

    class Closed:
        base_url = f"http://127.0.0.1:{port}/v1"

    result, client = ask(Closed(), max_retries=2)
    assert not result.ok and result.reason.startswith("connection error")
    assert client.usage.requests == 3


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("this is not json {", "malformed JSON"),
        ('{"label": "math"}', 'expected {"topic_match": bool}'),
        ('{"topic_match": "yes"}', 'expected {"topic_match": bool}'),
        ("", "empty answer"),
    ],
)
def test_invalid_answers_are_retried_then_fail(content, reason):
    with running_server(lambda call: Reply(content=content)) as server:
        result, client = ask(server, invalid_retries=2)
    assert not result.ok and "invalid answer after 3 attempts" in result.reason
    assert reason in result.reason
    assert server.count() == 3 and client.usage.invalid_answers == 3
    assert client.usage.prompt_tokens == 60  # tokens of invalid answers are paid for too


def test_invalid_then_valid_and_fenced_json():
    def script(call):
        if call.attempt == 1:
            return Reply(content='{"respon": "x"}')
        return Reply(content='```json\n{"response": "Bonjour"}\n```')

    with running_server(script) as server:
        result, _ = ask(server, parse=parse_rewrite)
    assert result.ok and result.value == "Bonjour" and server.count() == 2


def test_refused_key_stops_with_a_clear_error_without_the_key():
    refuse = lambda call: Reply(status=401, content=f"bad key {FAKE_KEY}")  # noqa: E731
    refused = pytest.raises(ApiKeyError, match="refused the API key from \\$OPENROUTER_API_KEY")
    with running_server(refuse) as server, refused as err:
        ask(server)
    assert FAKE_KEY not in str(err.value) and server.count() == 1


def test_missing_key_names_the_env_var(monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(
        ApiKeyError, match="set the environment variable OPENROUTER_API_KEY or OPENAI_API_KEY"
    ):
        resolve_api_key()
    monkeypatch.setenv("OPENAI_API_KEY", "k-openai")
    assert resolve_api_key() == "k-openai"
    # A custom variable does not fall back: the OpenAI key must not go to another server.
    with pytest.raises(ApiKeyError, match="set the environment variable MY_LLM_KEY \\("):
        resolve_api_key("MY_LLM_KEY")
    monkeypatch.setenv("MY_LLM_KEY", "k-mine")
    assert resolve_api_key("MY_LLM_KEY") == "k-mine"


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


@pytest.mark.parametrize(
    ("raw", "content_type", "reason"),
    [
        (b"Expecting value", "application/json", "HTTP 200 reply that is not JSON"),
        (b"<html><body>502 Bad Gateway</body></html>", "text/html", "not a chat completion"),
    ],
)
def test_a_bad_http_200_body_is_retried_then_recorded_not_raised(raw, content_type, reason):
    def script(call):
        if call.attempt <= 2:
            return Reply(raw_body=raw, content_type=content_type)
        return answer_json({"topic_match": True})

    with running_server(script) as server:  # two bad bodies, then a good answer
        result, _ = ask(server, max_retries=3, invalid_retries=2)
    assert result.ok and result.value is True and result.attempts == 3
    with running_server(lambda call: Reply(raw_body=raw, content_type=content_type)) as server:
        result, _ = ask(server, max_retries=2, invalid_retries=1)  # never a good one
    assert not result.ok and reason in result.reason
