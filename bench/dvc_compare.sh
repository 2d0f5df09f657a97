#!/usr/bin/env bash
# umdflow vs DVC on a 100-stage chain of trivial commands; run from anywhere in the repository:
#
#   bench/dvc_compare.sh [--reps 3]
#
# Installs DVC (dvc==3.67.*, or the newest 3.x if that is unavailable; override with DVC_SPEC)
# into the git-ignored venv bench/out/dvc-venv on first use, builds the umdflow release binary
# (or uses $UMDFLOW_BIN), then runs bench/dvc_compare.py. Rerunning reuses the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=bench/out/dvc-venv
spec="${DVC_SPEC:-dvc==3.67.*}"
if [ ! -x "$venv/bin/dvc" ]; then
    echo "installing $spec into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" ||
        "$venv/bin/pip" install --quiet --disable-pip-version-check 'dvc>=3,<4'
fi
echo "DVC used: $("$venv/bin/dvc" --version)" >&2
exec python3 bench/dvc_compare.py --dvc "$venv/bin/dvc" "$@"
