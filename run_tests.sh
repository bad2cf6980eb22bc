#!/usr/bin/env bash
# One command from a fresh clone to the full test suite:   bash run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh dev
exec .venv/bin/python -m pytest -q "$@"
