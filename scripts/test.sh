#!/usr/bin/env bash
# The test suite, from a fresh checkout: installs what it needs (at the tested versions), then runs pytest
# offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# The web UI's browser tests drive Debian's chromium (never a downloaded browser); the font draws the 中文 page.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-wqy-microhei >/dev/null
fi
# llama.cpp judges the GGUF exports: node-llama-cpp's prebuilt CPU binary, installed once inside the venv
# (never a home cache) and named to tests/llama_cpp_judge.py by TUNESMITH_NODE_LLAMA_CPP. npm must reach
# its registry; a failure stops here.
if ! command -v npm >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
export TUNESMITH_NODE_LLAMA_CPP="${TUNESMITH_NODE_LLAMA_CPP:-$(cd "${TUNESMITH_VENV:-.venv}" && pwd)/node-llama-cpp-3.21.1}"
[ -f "$TUNESMITH_NODE_LLAMA_CPP/node_modules/node-llama-cpp/package.json" ] ||
  npm install --prefix "$TUNESMITH_NODE_LLAMA_CPP" --cache "$TUNESMITH_NODE_LLAMA_CPP/npm-cache" \
    -E node-llama-cpp@3.21.1 --no-audit --no-fund
. "${TUNESMITH_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
