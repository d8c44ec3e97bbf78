#!/usr/bin/env bash
# Move the tested versions forward (not part of CI): install the newest release of every dependency into a
# separate venv (.venv-latest), run the whole suite there, and only if it passes write those versions to
# constraints/tested.txt. Review the diff of that file and commit it. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .venv-latest
TUNESMITH_VENV=.venv-latest TUNESMITH_LATEST=1 bash scripts/test.sh "$@"
. .venv-latest/bin/activate
{
  echo "# The versions the test suite last passed with (written by scripts/update_pins.sh on $(date -u +%F))."
  echo "# setup.sh installs through this file, so a new upstream release cannot change a fresh install."
  # The editable tunesmith itself is no pin; a local build tag such as torch's +cpu is left to cpu.txt.
  python -m pip freeze --exclude-editable | sed -E 's/^([A-Za-z0-9_.-]+==[^+ ]+)\+[A-Za-z0-9.]+$/\1/'
} > constraints/tested.txt
echo "constraints/tested.txt updated; the suite passed with these versions"
