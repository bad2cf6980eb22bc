#!/usr/bin/env bash
# One command from a fresh clone to a trained Bayesian CNN on real data (scikit-learn's digits, offline):
#   bash quickstart.sh [extra `autobayes train` flags]
# Each run gets its own folder (runs/quickstart, then runs/quickstart_2, ...): a finished run is never replaced.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
out=runs/quickstart
n=1
while [ -e "$out" ]; do n=$((n + 1)); out="runs/quickstart_$n"; done
exec .venv/bin/autobayes train --out "$out" "$@"
