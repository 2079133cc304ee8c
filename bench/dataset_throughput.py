"""Requests per second of the dataset pipeline's LLM path at concurrency 1 and 32.

Runs the real path (`answer_all` -> `LlmBackend` -> `openai.AsyncOpenAI` -> HTTP -> sqlite cache
commit per answer) against the loopback `FakeChatServer`, which waits a fixed latency per request
to stand in for an API. Each measurement uses a fresh cache, so every request goes to the server.

    .venv/bin/python bench/dataset_throughput.py [--latency 0.05] [--requests 64 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from saelora_core.data.backends import LlmBackend, PhaseProgress, TaskRequest, answer_all
from saelora_core.data.cache import AnswerCache
from saelora_core.data.fake_server import FakeChatServer, keyword_script
from saelora_core.data.llm import LlmClient
from saelora_core.data.sources import SourceRow


async def measure(base_url: str, concurrency: int, requests: int, tag: str) -> float:
    """Answer `requests` classification requests at `concurrency`; returns requests/s."""
    rows = [
        SourceRow(f"{tag}-{i}", f"{tag} math question {i}?", f"answer {i}") for i in range(requests)
    ]
    client = LlmClient(
        api_key="bench-key", base_url=base_url, model="bench", concurrency=concurrency
    )
    backend = LlmBackend(client)
    with tempfile.TemporaryDirectory() as tmp, AnswerCache(tmp) as cache:
        progress = PhaseProgress("bench", requests, backend, enabled=False)
        batch = [TaskRequest("classify", "mathematics", row) for row in rows]
        start = time.perf_counter()
        outcomes = await answer_all(backend, cache, batch, progress)
        elapsed = time.perf_counter() - start
    await backend.aclose()
    assert all(o.ok and not o.cached for o in outcomes) and client.usage.requests == requests
    return requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.05, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, nargs=2, default=[1, 32])
    parser.add_argument("--requests", type=int, nargs=2, default=[64, 1024], help="per measurement")
    args = parser.parse_args()
    with FakeChatServer(keyword_script("math"), latency=args.latency) as server:
        asyncio.run(measure(server.base_url, 4, 16, "warmup"))
        rates = [
            asyncio.run(measure(server.base_url, conc, n, f"c{conc}"))
            for conc, n in zip(args.concurrency, args.requests, strict=True)
        ]
    low, high = args.concurrency
    ideal = [min(c / args.latency, float("inf")) for c in args.concurrency]
    print(f"server latency {args.latency * 1000:.0f} ms per request")
    for conc, n, rate, best in zip(args.concurrency, args.requests, rates, ideal, strict=True):
        print(f"concurrency {conc:>3}: {rate:8.1f} req/s over {n} requests (ideal {best:.0f})")
    print(f"ratio {high}/{low}: {rates[1] / rates[0]:.1f}x")


if __name__ == "__main__":
    main()
