"""The GPU suite: tunesmith's training fast paths against TRL's SFTTrainer, in one table.

    python bench/gpu_suite.py                 # on one GPU (H100 / H200: within 8 minutes)
    python bench/gpu_suite.py --smoke         # the same code on CPU with a tiny model (seconds)

Models are random-initialised from real configurations (nothing is downloaded; the folder is written once to
--work): full fine-tuning of the Llama-3.2-1B shape in bf16 with packed rows, LoRA and QLoRA on the Qwen2.5-7B
shape, each as is, with train.kernels: liger and with train.compile: true, and TRL's SFTTrainer on the same
model, data and batch. Every tunesmith case goes through the training command's own model preparation and
loop (train/model_setup.py, train/loop.py) and first prints the dtypes of all and of the trainable parameters,
the precision plan (autocast), the attention implementation and whether the optimizer is fused; after its
steps at lr 1e-5 it checks that every trainable weight moved (16-bit weights would round such steps away).

Columns: target-side throughput in real (non-padding) input tokens per second over the steps after the
warm-up; MFU = model FLOPs per second / the chip's dense bf16 peak, with model FLOPs per token 6N (full) or
4N + 6N_trainable (LoRA: frozen weights need no weight gradients), N the matmul parameters, plus PaLM's
attention term 12 * layers * heads * head_dim * T (T: the tokens a sample attends over, no causal halving);
peak VRAM = torch.cuda.max_memory_allocated; estimate = `tunesmith estimate` for the same config.
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TOKENIZERS = REPO.parent / "shared" / "assets" / "tokenizers"
SHAPES = {  # config.json fields of the real models (hub ids meta-llama/Llama-3.2-1B, Qwen/Qwen2.5-7B)
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         rope_theta=500000.0, max_position_embeddings=131072, tie_word_embeddings=True),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, rope_theta=1000000.0,
                       max_position_embeddings=32768, tie_word_embeddings=False),
    "tiny-llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
}
TOKENIZER_OF = {"llama-3.2-1b": "llama3_1", "qwen2.5-7b": "qwen3", "tiny-llama": "llama2"}
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # dense, SXM parts
LR = 1e-5


@dataclass(frozen=True)
class Case:
    shape: str
    method: str  # full | lora | qlora
    batch: int
    length: int
    packed: bool = True
    kernels: str = "none"
    compile: bool = False
    peer: str = "tunesmith"  # or "trl"

    @property
    def name(self) -> str:
        extras = [x for x, on in (("liger", self.kernels == "liger"), ("compile", self.compile)) if on]
        return f"{self.peer} {self.shape} {self.method}{' packed' if self.packed else ''} {'+'.join(extras)}".strip()


def cases(smoke: bool) -> list[Case]:
    full = Case("tiny-llama", "full", 4, 64) if smoke else Case("llama-3.2-1b", "full", 4, 2048)
    lora = Case("tiny-llama", "lora", 4, 64) if smoke else Case("qwen2.5-7b", "lora", 2, 2048)
    result = []
    for base in (full, lora, replace(lora, method="qlora")):
        variants = [base, replace(base, kernels="liger")] + ([] if smoke else [replace(base, compile=True)])
        result += variants + ([replace(base, peer="trl")] if base.method != "qlora" else [])
    return result


def synthetic_samples(case: Case, vocab: int, count: int):
    """Random token rows of varied length, the first third of each a prompt without targets."""
    from tunesmith.data.packing import pack_samples
    from tunesmith.data.records import Encoded
    from tunesmith.data.template import IGNORE

    rng = random.Random(0)
    samples = []
    for _ in range(count):
        ids = [rng.randrange(3, vocab) for _ in range(rng.randint(case.length // 4, case.length))]
        samples.append(Encoded(ids, [IGNORE] * (len(ids) // 3) + ids[len(ids) // 3:]))
    return pack_samples(samples, case.length) if case.packed else samples


def model_folder(shape: str, work: Path, device: str) -> Path:
    """A random-initialised model of `shape`, written once (bf16 on a GPU) so every case loads the same one."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = work / shape
    if not (folder / "config.json").is_file():
        config = AutoConfig.for_model(**SHAPES[shape])
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else None)
        model.save_pretrained(folder)
        del model
    return folder


def run_config(case: Case, folder: Path, work: Path):
    from tunesmith.config import validate_config

    quantized = {"quantization_bit": 4} if case.method == "qlora" else {}
    return validate_config({
        "model": {"path": str(folder), **quantized},
        "method": {"kind": case.method, **({} if case.method == "full" else {"rank": 16, "alpha": 32})},
        "data": {"datasets": ["synthetic"], "max_length": case.length, "packing": case.packed},
        "train": {"output_dir": str(work / "run"), "batch_size": case.batch, "lr": LR, "scheduler": "constant",
                  "kernels": case.kernels, "compile": case.compile, "max_grad_norm": 1.0},
    })


def describe(model, plan, optimizer) -> str:
    """What decides correctness and speed: dtypes, autocast, attention kernel, fused optimizer."""
    def dtypes(params):
        counts: dict[str, int] = {}
        for p in params:
            counts[str(p.dtype).removeprefix("torch.")] = counts.get(str(p.dtype).removeprefix("torch."), 0) + p.numel()
        return ", ".join(f"{name} {count / 1e6:.1f}M" for name, count in sorted(counts.items()))

    inner = getattr(optimizer, "optimizer", optimizer)
    return (f"  all params: {dtypes(model.parameters())}\n"
            f"  trainable: {dtypes(p for p in model.parameters() if p.requires_grad)}\n"
            f"  {plan.describe()}\n  attention: {model.config._attn_implementation}; optimizer "
            f"{type(inner).__name__} fused={inner.defaults.get('fused')}")


def flops_per_token(case: Case, trainable: int, samples) -> float:
    shape = SHAPES[case.shape]
    h, layers, heads = shape["hidden_size"], shape["num_hidden_layers"], shape["num_attention_heads"]
    head_dim = shape.get("head_dim", h // heads)
    kv = shape["num_key_value_heads"] * head_dim
    matmul = layers * (2 * h * heads * head_dim + 2 * h * kv + 3 * h * shape["intermediate_size"])
    matmul += shape["vocab_size"] * h
    lengths = [len(sample.input_ids) for sample in samples]  # packed rows: each sample attends over itself
    if case.packed:
        lengths = [n for row in samples for n in _sample_lengths(row)]
    attended = sum(n * n for n in lengths) / sum(lengths)
    dense = 6 * matmul if case.method == "full" else 4 * matmul + 6 * trainable
    return dense + 12 * layers * heads * head_dim * attended


def _sample_lengths(row) -> list[int]:
    from tunesmith.data.packing import POSITION_IDS

    starts = [i for i, position in enumerate(row.meta[POSITION_IDS]) if position == 0] + [len(row.input_ids)]
    return [end - start for start, end in zip(starts, starts[1:])]


@dataclass
class Row:
    case: Case
    tokens_per_s: float = 0.0
    mfu: float | None = None
    peak_gib: float | None = None
    estimate_gib: float | None = None
    moved: str = ""
    note: str = ""


def run_tunesmith(case: Case, folder: Path, work: Path, accelerator, steps: int, warmup: int) -> Row:
    from tunesmith.errors import TunesmithError
    from tunesmith.model.estimate import estimate_memory
    from tunesmith.model.precision import training_plan
    from tunesmith.train.batches import BatchStream
    from tunesmith.train.loop import Trainer
    from tunesmith.train.model_setup import prepare_model
    from tunesmith.train.stages import get_stage

    config = run_config(case, folder, work)
    cuda = accelerator.device.type == "cuda"
    _reset_peak(cuda)
    try:
        model = prepare_model(config, accelerator)
    except TunesmithError as err:
        return Row(case, note=f"refused: {err}")
    stage = get_stage("sft", config.stage)
    samples = synthetic_samples(case, SHAPES[case.shape]["vocab_size"], 4 * case.batch * steps)
    stream = BatchStream(samples, case.batch, partial(stage.collate, pad_id=0), seed=0, prefetch=cuda, pin=cuda)
    trainer = Trainer(accelerator, model, stage, config.train, stream, [], work / "run")
    print(f"{case.name}\n{describe(model, training_plan(config, accelerator.device.type), trainer.optimizer)}",
          flush=True)
    # Kept in CPU memory, so the snapshot does not count in the peak VRAM.
    before = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}
    tokens, started = 0, None
    for step in range(steps):
        if step == warmup:
            _sync(cuda)
            started, tokens = time.perf_counter(), 0
        tokens += trainer.train_step().input_tokens
    _sync(cuda)
    speed = tokens / (time.perf_counter() - started)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    stuck = [name for name, p in trainable.items() if torch.equal(p.detach().cpu(), before[name])]
    half = [name for name, p in trainable.items() if p.dtype != torch.float32]
    moved = "ok" if not stuck and not half else f"FAIL {len(stuck)} unchanged, {len(half)} not float32"
    row = Row(case, speed, moved=moved, estimate_gib=estimate_memory(config).peak / 2**30)
    _finish_row(row, cuda, flops_per_token(case, sum(p.numel() for p in trainable.values()), samples))
    accelerator.free_memory()
    return row


def run_trl(case: Case, folder: Path, work: Path, steps: int, warmup: int) -> Row:
    """TRL's SFTTrainer on the same model folder, samples and batch, with its own defaults otherwise."""
    try:
        from datasets import Dataset
        from transformers import AutoTokenizer, TrainerCallback
        from trl import SFTConfig, SFTTrainer
    except ImportError as err:
        return Row(case, note=f"skipped: {err}")
    cuda = torch.cuda.is_available()
    samples = synthetic_samples(replace(case, packed=False), SHAPES[case.shape]["vocab_size"], 4 * case.batch * steps)
    ticks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            _sync(cuda)
            ticks.append(time.perf_counter())

    peft = None
    if case.method == "lora":
        from peft import LoraConfig

        peft = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=case.batch, max_steps=steps,
                     learning_rate=LR, lr_scheduler_type="constant", max_length=case.length, packing=case.packed,
                     bf16=cuda, use_cpu=not cuda, report_to=[], save_strategy="no", logging_steps=steps)
    _reset_peak(cuda)
    trainer = SFTTrainer(model=str(folder), args=args, peft_config=peft, callbacks=[Clock()],
                         processing_class=AutoTokenizer.from_pretrained(TOKENIZERS / TOKENIZER_OF[case.shape]),
                         train_dataset=Dataset.from_dict({"input_ids": [s.input_ids for s in samples]}))
    trainer.train()
    timed = ticks[warmup:]
    # Real tokens per step taken as tunesmith's rows of the same samples hold (TRL packs them alike, best-fit).
    rows = synthetic_samples(case, SHAPES[case.shape]["vocab_size"], 4 * case.batch * steps)
    per_step = case.batch * sum(len(row.input_ids) for row in rows) / len(rows)
    row = Row(case, per_step * (len(timed) - 1) / max(timed[-1] - timed[0], 1e-9), moved="-")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    _finish_row(row, cuda, flops_per_token(case, trainable, rows))
    return row


def _finish_row(row: Row, cuda: bool, flops: float) -> None:
    if not cuda:
        return
    row.peak_gib = torch.cuda.max_memory_allocated() / 2**30
    name = torch.cuda.get_device_name()
    peak = next((tflops for chip, tflops in PEAK_BF16_TFLOPS.items() if chip in name), None)
    row.mfu = row.tokens_per_s * flops / (peak * 1e12) if peak else None


def _reset_peak(cuda: bool) -> None:
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def table(rows: list[Row]) -> str:
    fmt = lambda value, spec: "n/a" if value is None else format(value, spec)  # noqa: E731
    lines = ["| case | tokens/s | MFU | peak VRAM GiB | estimate GiB | weights moved | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.case.name} | {r.tokens_per_s:,.0f} | {fmt(r.mfu, '.3f')} | {fmt(r.peak_gib, '.2f')} | "
                     f"{fmt(r.estimate_gib, '.2f')} | {r.moved} | {r.note[:120]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model: checks the suite itself")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per case (20: the lr 1e-5 check)")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timing")
    parser.add_argument("--work", default=None, help="folder for the random-init models (default: a temp folder)")
    args = parser.parse_args(argv)
    from tunesmith.dist.accelerator import make_accelerator

    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-suite-"))
    rows, accelerator = [], None
    for case in cases(args.smoke):
        folder = model_folder(case.shape, work, device)
        if case.peer == "trl":
            rows.append(run_trl(case, folder, work, args.steps, args.warmup))
            continue
        accelerator = accelerator or make_accelerator(run_config(case, folder, work))  # one per process
        rows.append(run_tunesmith(case, folder, work, accelerator, args.steps, args.warmup))
    result = table(rows)
    print(result, flush=True)
    return result


if __name__ == "__main__":
    main()
