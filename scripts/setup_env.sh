#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install autobayes into it.
#   scripts/setup_env.sh            # runtime dependencies
#   scripts/setup_env.sh dev        # plus the test dependencies (pytest, scipy, the docs tools)
#   scripts/setup_env.sh docs       # plus the documentation tools (MkDocs Material, mkdocstrings)
# torch / torchvision are pinned to the releases this machine keeps on disk (a bare `torch` would download a
# newer multi-GB CUDA build); pyproject.toml accepts any torch in [2.4, 2.14.1].
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "^WARNING: Location" || true
fi
extra=""
case "${1:-}" in
    dev) extra="[dev]" ;;
    docs) extra="[docs]" ;;
esac
PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e ".${extra}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import autobayes, torch; print(f'autobayes {autobayes.__version__} ready (torch {torch.__version__})')"
