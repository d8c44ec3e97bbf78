"""LLaMA-Factory 0.9.5's side of bench/vision_throughput.py, run with the python of its own venv:

    /work/lf-venv/bin/python bench/lf_vision_side.py MODEL DATASET_JSON --batch 4 --steps 3 --threads 2

Encodes the records with its qwen2_vl template and multimodal plugin (the plugin runs the image processor to
count each image's tokens), collates batches with its MultiModalDataCollatorForSeq2Seq (pixels and M-RoPE
position ids), and trains LoRA steps on the model LLaMA-Factory loads and adapts (lora_target all, vision
tower and projector frozen: its defaults). Prints one JSON line of timings (wall and process CPU seconds).

The processor is the image processor alone (Qwen2VLImageProcessorPil) with the model folder's settings, as
LLaMA-Factory's plugin uses it: transformers' Qwen2-VL processor class insists on a video processor that needs
torchvision. The bench's LLaMA-Factory setup (bench/data_preprocess.py) has no torchvision and a stub
torchaudio; a venv where they are installed but do not load with torch 2.13 is put in that same state here,
for this process only.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import sys
import time
import types
from pathlib import Path


def _as_in_the_bench_setup() -> None:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        sys.modules["torchvision"] = None  # absent: transformers takes its PIL image path
    try:
        import torchaudio  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        stub = types.ModuleType("torchaudio")  # LLaMA-Factory imports it at start-up, for audio data only
        stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stub


class ImageOnlyProcessor:
    """What LLaMA-Factory's Qwen2-VL plugin reads from a processor, around the image processor alone."""

    model_input_names = ["input_ids", "attention_mask", "pixel_values", "image_grid_thw"]

    def __init__(self, image_processor, model_args):
        self.image_processor = image_processor
        # LLaMA-Factory resizes each image into these bounds (its defaults: 32^2 to 768^2 pixels) before the
        # processor resizes it into its own (4 to 16 merged patches here), as its patch_processor sets them.
        self.image_max_pixels = model_args.image_max_pixels
        self.image_min_pixels = model_args.image_min_pixels


def clock() -> tuple[float, float]:
    """(wall, this process's CPU) seconds: on a shared machine the CPU time measures the work, the wall time
    the neighbours too."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> dict:
    wall, cpu = clock()
    return {"wall": wall - start[0], "cpu": cpu - start[1]}


def _examples(records: list[dict], folder: Path) -> dict:
    """The records in LLaMA-Factory's aligned form (its converter's output): prompt turns and one response,
    image paths made absolute from the dataset's folder."""
    columns = {key: [] for key in ("_prompt", "_response", "_system", "_tools", "_images", "_videos", "_audios")}
    for record in records:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        columns["_prompt"].append(messages[:-1])
        columns["_response"].append(messages[-1:])
        columns["_system"].append("")
        columns["_tools"].append("")
        columns["_images"].append([str(folder / name) for name in record["images"]])
        columns["_videos"].append(None)
        columns["_audios"].append(None)
    return columns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data", help="a JSON file of sharegpt records, image paths relative to its folder")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    _as_in_the_bench_setup()

    import torch
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.data.collator import MultiModalDataCollatorForSeq2Seq
    from llamafactory.data.processor import SupervisedDatasetProcessor
    from llamafactory.extras.constants import IGNORE_INDEX
    from llamafactory.hparams import DataArguments, FinetuningArguments, ModelArguments
    from llamafactory.model import load_model
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.data, encoding="utf-8") as handle:
        records = json.load(handle)
    images = sum(len(record["images"]) for record in records)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    # No gradient checkpointing (LLaMA-Factory's default turns it on; tunesmith's is off): the same compute.
    model_args = ModelArguments(model_name_or_path=args.model, disable_gradient_checkpointing=True)
    processor = ImageOnlyProcessor(Qwen2VLImageProcessorPil.from_pretrained(args.model), model_args)
    data_args = DataArguments(template="qwen2_vl", cutoff_len=8192)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    encoder = SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=processor,
                                         data_args=data_args)
    examples = _examples(records, Path(args.data).parent)

    start = clock()
    encoded = encoder.preprocess_dataset(examples)
    encode = since(start)
    samples = [{key: encoded[key][i] for key in encoded} for i in range(len(encoded["input_ids"]))]

    model_args.compute_dtype = torch.float32
    model_args.device_map = {"": "cpu"}
    finetuning = FinetuningArguments(finetuning_type="lora", lora_target=["all"])
    model = load_model(tokenizer, model_args, finetuning, is_trainable=True)
    collator = MultiModalDataCollatorForSeq2Seq(template=template, processor=processor, model=model,
                                                tokenizer=tokenizer, label_pad_token_id=IGNORE_INDEX)
    batches = [samples[i: i + args.batch] for i in range(0, len(samples), args.batch)]
    batch_images = [sum(len(sample["images"]) for sample in batch) for batch in batches]  # the collator pops them
    start = clock()
    collated = [collator(batch) for batch in batches]
    collate = since(start)

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    steps = []
    for batch, count in zip(collated[: args.steps + 1], batch_images):
        start = clock()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps.append({**since(start), "images": count})
    image_token = tokenizer.convert_tokens_to_ids(template.mm_plugin.image_token)
    image_tokens = sum(ids.count(image_token) for ids in encoded["input_ids"])
    print(json.dumps({"side": "llamafactory", "images": images, "records": len(samples), "encode": encode,
                      "collate": collate, "steps": steps[1:], "image_tokens": image_tokens,
                      "tokens": sum(len(ids) for ids in encoded["input_ids"]),
                      "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}))


if __name__ == "__main__":
    main()
