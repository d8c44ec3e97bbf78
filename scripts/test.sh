#!/usr/bin/env bash
# The test suite, from a fresh checkout: installs what it needs, then runs pytest offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
