#!/usr/bin/env bash
# One command from a fresh clone to a trained Bayesian CNN on real data (scikit-learn's digits, offline):
#   bash quickstart.sh [extra `autobayes train` flags]
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
exec .venv/bin/autobayes train --out runs/quickstart "$@"
