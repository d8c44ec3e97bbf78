"""Vision data path and training step speed on the tiny random Qwen2-VL (CPU).

Prints images per second through: encoding (placeholders expanded to the processor's token count; the
image processor runs once per distinct file), collating (pixels made from the files for every batch), and
one LoRA training step (forward and backward through tower, projector and language model) on batches of
LLaMA-Factory's mllm_demo records. Timings on a shared machine are noisy: compare runs made side by side.

Run: python bench/vision_throughput.py [--records 60] [--batch 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tiny model builder the tests use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    import torch

    from conftest import LF_DATA
    from tunesmith.config.method_kinds import parse_method
    from tunesmith.config.schema import DataConfig, ModelConfig
    from tunesmith.data.dataset import load_records
    from tunesmith.data.media_render import IMAGES
    from tunesmith.data.template import ChatTemplate
    from tunesmith.data.vision_processor import load_media
    from tunesmith.model.load import load_model, tokenizer_from
    from tunesmith.model.methods import apply_method
    from tunesmith.train.stages.sft import SftStage
    from vision_models import build_tiny_qwen2_vl

    folder = build_tiny_qwen2_vl(Path(tempfile.mkdtemp()))
    tokenizer = tokenizer_from(folder)
    stage = SftStage()
    stage.media = load_media(folder, tokenizer)
    template = ChatTemplate(tokenizer, "auto", stage.media)
    demo = load_records(DataConfig(datasets=["mllm_demo"], dataset_dir=str(LF_DATA)))
    records = (demo * (args.records // len(demo) + 1))[: args.records]
    images = sum(len(record.images) for record in records)

    start = time.perf_counter()
    samples = template.encode_many(records)
    encode_s = time.perf_counter() - start
    batches = [samples[i : i + args.batch] for i in range(0, len(samples), args.batch)]
    start = time.perf_counter()
    collated = [stage.collate(batch, tokenizer.pad_token_id) for batch in batches]
    collate_s = time.perf_counter() - start
    print(f"encode:  {images / encode_s:8.1f} images/s ({len(records)} records, {images} images)")
    print(f"collate: {images / collate_s:8.1f} images/s (pixels for every batch of {args.batch})")

    model = apply_method(load_model(ModelConfig(path=str(folder), dtype="float32")), parse_method({}))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for batch, encoded in zip(collated[: args.steps + 1], batches):
        start = time.perf_counter()
        loss, _ = stage.loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append((time.perf_counter() - start, sum(len(s.meta.get(IMAGES, [])) for s in encoded)))
    steady = times[1:] or times  # the first step warms up
    print(f"train step (LoRA, batch {args.batch}): {sum(t for t, _ in steady) / len(steady):.3f} s/step, "
          f"{sum(n for _, n in steady) / sum(t for t, _ in steady):.1f} images/s")


if __name__ == "__main__":
    main()
