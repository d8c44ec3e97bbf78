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
. "${TUNESMITH_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1
exec python -m pytest -q "$@"
