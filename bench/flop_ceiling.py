"""The most tunesmith's skipped head can buy over LLaMA-Factory on the same model: a ratio of multiply-adds.

    python bench/flop_ceiling.py MODEL_DIR --metrics RUN/metrics.jsonl   # or --target-fraction 0.84

Both frameworks run the same decoder on the same rows, so their arithmetic differs only in the output head:
LLaMA-Factory computes the logits (and their backward) at every position, tunesmith at target positions only.
Per token, in multiply-adds (forward F; a frozen weight's backward costs F for the input gradient, a trained
weight's 2F for input and weight gradients; LoRA's rank-8 adapters are left out, they are ~1% of a layer):

    decoder  D = layers * (q, k, v, o projections + 3 MLP matrices) + attention scores (2 * row length * hidden)
    head     V = hidden * vocab
    LoRA:  LF = 2D + 2V          tunesmith = 2D + 2Vf
    full:  LF = 3D + 3V          tunesmith = 3D + 3Vf        (f: target tokens over all tokens)

(train/fused_head.py computes the input gradient in the forward pass, two products per token for a frozen head,
and for sft's summed loss a trained head's weight gradient there too, three; other stages' trained heads
recompute the logits in backward, four.)

Attention's backward (about twice its forward) is counted once per pass as the weights are: that understates
both sides' shared work, so the ratio below is if anything too high.
LF / tunesmith is the ceiling of the target-token throughput ratio at equal arithmetic speed; a measured ratio
above it comes from overheads (allocator, masks, framework), not from arithmetic. The target fraction is read
from a packed tunesmith run's metrics.jsonl (`units` over the `tokens` count) or given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def target_fraction(metrics: Path) -> float:
    steps = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [step for step in steps if "units" in step]
    return sum(step["units"] for step in steps) / steps[-1]["tokens"]  # `tokens` counts up over the run


def per_token_macs(config: dict, row_length: int) -> tuple[float, float]:
    """(decoder, head) multiply-adds of one token's forward pass."""
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    kv = config.get("num_key_value_heads", config["num_attention_heads"]) * head_dim
    projections = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * config["intermediate_size"]
    return layers * (projections + 2 * row_length * hidden), hidden * config["vocab_size"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--metrics", type=Path, help="a packed tunesmith run's metrics.jsonl")
    source.add_argument("--target-fraction", type=float)
    parser.add_argument("--row-length", type=int, default=256, help="attention's key length (packed rows)")
    args = parser.parse_args()
    fraction = args.target_fraction if args.metrics is None else target_fraction(args.metrics)
    decoder, head = per_token_macs(json.loads((args.model_dir / "config.json").read_text()), args.row_length)
    print(f"{args.model_dir.name}: decoder {decoder / 1e6:.1f}M, head {head / 1e6:.1f}M multiply-adds per token; "
          f"target fraction {fraction:.3f}")
    for method, passes in (("lora", 2), ("full", 3)):
        llamafactory, tunesmith = passes * (decoder + head), passes * (decoder + head * fraction)
        print(f"{method}: ceiling of tunesmith / LLaMA-Factory target tokens/s = {llamafactory / tunesmith:.3f}")


if __name__ == "__main__":
    main()
