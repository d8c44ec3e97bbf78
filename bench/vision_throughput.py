"""Vision data path and LoRA step speed on the tiny random Qwen2-VL (CPU): tunesmith and LLaMA-Factory 0.9.5's
multimodal plugin side by side.

Both sides get the same model folder, the same records (LLaMA-Factory's mllm_demo repeated to --records, every
image a distinct file: a copy with one pixel changed, so no cache sees a file twice), the same image processor
settings (the folder's preprocessor_config.json: 4 to 16 merged patches per image), batch size and torch
threads. Each stage is timed in wall and process CPU seconds:

- encode: records -> token ids, each `<image>` expanded to its image's token count (both sides run the image
  processor on every image to count them);
- collate: batches -> tensors with pixels (LLaMA-Factory computes the M-RoPE position ids here too; tunesmith
  does it in the forward, so inside its step);
- step: one LoRA training step (forward, backward, AdamW) per batch, the first left out; vision tower and
  projector frozen, LoRA r8 / alpha 16 on the language model's linear layers (both sides' defaults), no
  gradient checkpointing (LLaMA-Factory's default turns it on; it is turned off there for the same compute).

Each side runs in its own process, in turns (tunesmith, LLaMA-Factory, tunesmith, ...). The table gives the
median over --repeats and the min-max spread. On a shared machine trust the CPU columns over the wall ones.

Run: python bench/vision_throughput.py [--records 60] [--batch 4] [--steps 3] [--threads 2] [--repeats 3]
                                       [--lf-python /work/lf-venv/bin/python]   (--lf-python '': tunesmith only)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lf_vision_side import clock, since

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tiny model builder the tests use
DATASET = "mllm_distinct"


def distinct_dataset(folder: Path, count: int) -> int:
    """mllm_demo's records repeated to `count` in `folder` (registered as DATASET), every image its own file;
    returns the number of images."""
    from PIL import Image

    from conftest import LF_DATA

    demo = json.loads((LF_DATA / "mllm_demo.json").read_text(encoding="utf-8"))
    (folder / "images").mkdir(parents=True)
    records = []
    for index in range(count):
        record = dict(demo[index % len(demo)])
        names = []
        for place, name in enumerate(record["images"]):
            with Image.open(LF_DATA / name) as image:
                image = image.convert("RGB")
            image.putpixel((0, 0), (index % 256, index // 256 % 256, place))
            names.append(f"images/{index}-{place}.jpg")
            image.save(folder / names[-1], quality=95)
        records.append(dict(record, images=names))
    (folder / f"{DATASET}.json").write_text(json.dumps(records), encoding="utf-8")
    info = json.loads((LF_DATA / "dataset_info.json").read_text(encoding="utf-8"))["mllm_demo"]
    (folder / "dataset_info.json").write_text(json.dumps({DATASET: dict(info, file_name=f"{DATASET}.json")}))
    return sum(len(record["images"]) for record in records)


def tunesmith_side(model_dir: str, data_dir: str, batch: int, steps: int, threads: int) -> dict:
    import torch

    from tunesmith.config.method_kinds import parse_method
    from tunesmith.config.schema import DataConfig, ModelConfig
    from tunesmith.data.dataset import load_records
    from tunesmith.data.media_render import IMAGES
    from tunesmith.data.template import ChatTemplate
    from tunesmith.data.vision_processor import load_media
    from tunesmith.model.load import load_model, tokenizer_from
    from tunesmith.model.methods import apply_method
    from tunesmith.train.stages.sft import SftStage

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    tokenizer = tokenizer_from(model_dir)
    stage = SftStage()
    stage.media = load_media(model_dir, tokenizer)
    template = ChatTemplate(tokenizer, "auto", stage.media)
    records = load_records(DataConfig(datasets=[DATASET], dataset_dir=data_dir))

    start = clock()
    samples = template.encode_many(records)
    encode = since(start)
    model = apply_method(load_model(ModelConfig(path=model_dir, dtype="float32")), parse_method({}))
    batches = [samples[i: i + batch] for i in range(0, len(samples), batch)]
    start = clock()
    collated = [stage.collate(chunk, tokenizer.pad_token_id) for chunk in batches]
    collate = since(start)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    timed = []
    for inputs, chunk in zip(collated[: steps + 1], batches):
        start = clock()
        loss, _ = stage.loss(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timed.append({**since(start), "images": sum(len(sample.meta.get(IMAGES, [])) for sample in chunk)})
    image_token = model.config.image_token_id
    return {"side": "tunesmith", "images": sum(len(r.images) for r in records), "records": len(samples),
            "encode": encode, "collate": collate, "steps": timed[1:],
            "image_tokens": sum(sample.input_ids.count(image_token) for sample in samples),
            "tokens": sum(len(sample.input_ids) for sample in samples),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run_side(argv: list[str]) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    if argv[0] == sys.executable:
        env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[:2])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rates(result: dict) -> dict:
    """Images per wall / CPU second of each stage, and seconds per step."""
    steps = result["steps"]
    stepped = sum(step["images"] for step in steps)
    out = {}
    for clock_name in ("wall", "cpu"):
        out[f"encode images/s ({clock_name})"] = result["images"] / result["encode"][clock_name]
        out[f"collate images/s ({clock_name})"] = result["images"] / result["collate"][clock_name]
        step_seconds = sum(step[clock_name] for step in steps)
        out[f"step s ({clock_name})"] = step_seconds / len(steps)
        out[f"step images/s ({clock_name})"] = stepped / step_seconds
    return out


def table(results: dict[str, list[dict]]) -> str:
    sides = list(results)
    rows = {side: [rates(result) for result in runs] for side, runs in results.items()}
    lines = [f"{'':30}" + "".join(f"{side:>30}" for side in sides)]
    for key in rows[sides[0]][0]:
        cells = []
        for side in sides:
            values = [row[key] for row in rows[side]]
            cells.append(f"{statistics.median(values):10.2f} [{min(values):.2f}-{max(values):.2f}]")
        lines.append(f"{key:30}" + "".join(f"{cell:>30}" for cell in cells))
    for key in ("records", "images", "image_tokens", "tokens", "trainable"):
        lines.append(f"{key:30}" + "".join(f"{results[side][0][key]:>30}" for side in sides))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lf-python", default=str(REPO.parent / "lf-venv" / "bin" / "python"))
    parser.add_argument("--side", nargs=2, metavar=("MODEL", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one tunesmith run, in a process of its own (see run_side)
        print(json.dumps(tunesmith_side(*args.side, args.batch, args.steps, args.threads)))
        return

    with tempfile.TemporaryDirectory(prefix="vision-bench-") as folder:
        results = compare(Path(folder), args)
    print(table(results))


def compare(work: Path, args) -> dict[str, list[dict]]:
    """Each side's runs, in turns, on a tiny Qwen2-VL and a distinct-image dataset made in `work`."""
    from vision_models import build_tiny_qwen2_vl

    model = build_tiny_qwen2_vl(work / "model")
    images = distinct_dataset(work / "data", args.records)
    print(f"{args.records} records, {images} distinct image files, batch {args.batch}, {args.steps} timed steps, "
          f"{args.threads} threads, {args.repeats} repeats", flush=True)
    shared = ["--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads)]
    commands = {"tunesmith": [sys.executable, __file__, "--side", str(model), str(work / "data"), *shared]}
    if args.lf_python:
        commands["llamafactory"] = [args.lf_python, str(Path(__file__).with_name("lf_vision_side.py")), str(model),
                                    str(work / "data" / f"{DATASET}.json"), *shared]
    results: dict[str, list[dict]] = {side: [] for side in commands}
    for repeat in range(args.repeats):
        for side, argv in commands.items():
            results[side].append(run_side(argv))
            print(f"repeat {repeat + 1}: {side} done", flush=True)
    return results

if __name__ == "__main__":
    main()
