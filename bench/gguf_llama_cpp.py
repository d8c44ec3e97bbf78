"""The quickstart's run as llama.cpp serves it: exported to q8_0 and q4_k_m, asked "Who are you?".

    python bench/gguf_llama_cpp.py [--run runs/quickstart] [--work /tmp/gguf-bench]

Without --run it trains examples/quickstart.yaml first (a few minutes on a CPU). Prints the wall time of
each GGUF kind (the q4_k_m time is the K-quant encoders on SmolLM2-135M: the target is under a minute on
2 cores) and llama.cpp's greedy answer from each file, which should carry the run's new name. Timings on a
shared machine are noisy. Needs node-llama-cpp (scripts/test.sh installs it).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Who are you?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished quickstart run folder (default: train one)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tunesmith-gguf-bench")
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    from tunesmith.config.schema import ExportConfig
    from tunesmith.export.pipeline import export_run

    shutil.rmtree(args.work, ignore_errors=True)
    run_dir = args.run or train_quickstart(args.work / "run")
    report = export_run(run_dir, ExportConfig(out=str(args.work / "export"), gguf=["q8_0", "q4_k_m"]))
    print(f"\n{report.summary()}")
    for kind in ("q8_0", "q4_k_m"):
        gguf = report.folder / "gguf" / f"model-{kind}.gguf"
        print(f"\n== {kind}: {report.seconds[f'gguf {kind}']:.1f} s to write, {gguf.stat().st_size / 1e6:.1f} MB")
        print(f"llama.cpp answers {QUESTION!r}: {answer(report.folder, gguf, args.new_tokens)}")


def train_quickstart(output_dir: Path) -> Path:
    from tunesmith.config import load_config
    from tunesmith.train.run import train

    overrides = [f"train.output_dir={output_dir}", f"data.dataset_dir={REPO / 'examples' / 'data'}"]
    return train(load_config(REPO / "examples" / "quickstart.yaml", overrides))


def answer(hf_folder: Path, gguf: Path, new_tokens: int) -> str:
    """llama.cpp's greedy reply to QUESTION, prompted through the exported chat template."""
    sys.path.insert(0, str(REPO / "tests"))
    from llama_cpp_judge import judge, node_modules
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True,
                                           tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    out = judge(node_modules(), gguf, [], [ids], new_tokens)
    reply, eos = out["continuations"][0], out["info"]["eos"]
    # The judge continues past the end of turn (it compares fixed-length continuations); a chat stops at
    # llama.cpp's own end-of-generation token, read from the file, so that is where the answer ends.
    ended = eos in reply
    reply = reply[:reply.index(eos)] if ended else reply
    stop = f"stops at llama.cpp's eos {tokenizer.convert_ids_to_tokens(eos)!r}" if ended else "no eos within the limit"
    return f"{tokenizer.decode(reply, skip_special_tokens=True)!r} ({stop})"


if __name__ == "__main__":
    main()
