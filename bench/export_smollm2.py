"""Export time and sizes for SmolLM2-135M-Instruct after a short quickstart-like LoRA run.

    python bench/export_smollm2.py [--steps 4] [--work /tmp/export-bench]

Trains examples/quickstart.yaml for a few steps, then exports merged f32 (with GGUF f32 and q8_0) and merged
bf16 (with GGUF f16), printing wall time per step, file sizes, and how far each GGUF's logits are from the
merged model's (max abs difference, and agreement of the next-token prediction).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tunesmith-export-bench")
    args = parser.parse_args()
    from tunesmith.config import load_config
    from tunesmith.config.schema import ExportConfig
    from tunesmith.export.pipeline import export_run
    from tunesmith.train.run import train

    shutil.rmtree(args.work, ignore_errors=True)
    overrides = [f"train.output_dir={args.work / 'run'}", f"train.max_steps={args.steps}",
                 f"data.dataset_dir={REPO / 'examples' / 'data'}", "train.batch_size=4"]
    run_dir = train(load_config(REPO / "examples" / "quickstart.yaml", overrides))
    exports = {"f32": ("fp32", ["f32", "q8_0"]), "bf16": ("bf16", ["f16"])}
    for label, (dtype, kinds) in exports.items():
        report = export_run(run_dir, ExportConfig(out=str(args.work / label), dtype=dtype, gguf=kinds))
        print(f"\n== merged {label}: {report.summary()}")
        weights = sum(size for name, size in report.files.items() if name.endswith(".safetensors"))
        print(f"   safetensors total {weights / 1e6:.1f} MB")
        for name, size in sorted(report.files.items()):
            if name.endswith(".gguf"):
                print(f"   {name}: {size / 1e6:.1f} MB")
    reference = args.work / "f32"
    for kind in ("f32", "q8_0"):
        difference, agreement = compare_logits(reference, reference / "gguf" / f"model-{kind}.gguf")
        print(f"GGUF {kind} vs merged f32: max abs logit difference {difference:.4g}, "
              f"next-token agreement {agreement:.1%}")


def compare_logits(hf_folder: Path, gguf: Path) -> tuple[float, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you, and who made you?"}],
                                         tokenize=False, add_generation_prompt=True) + "I am"
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32)(ids).logits
        restored = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)(ids).logits
    agreement = (merged.argmax(-1) == restored.argmax(-1)).float().mean().item()
    return (merged - restored).abs().max().item(), agreement


if __name__ == "__main__":
    main()
