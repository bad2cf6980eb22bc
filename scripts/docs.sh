#!/usr/bin/env bash
# Build the documentation site, offline, from a fresh clone:   bash scripts/docs.sh
# Creates (or reuses) .venv, installs autobayes with its `docs` extra (MkDocs Material, mkdocstrings) and builds
# the site with `mkdocs build --strict` (a broken link, a missing reference or a warning fails) into site/.
# Open site/index.html in a browser: the pages need no server and fetch nothing from the network (the search box
# runs in a web worker, which browsers allow only from a server: python -m http.server -d site).
set -euo pipefail
export NO_MKDOCS_2_WARNING=1   # mkdocs-material prints a banner about MkDocs 2.0 otherwise
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh docs
.venv/bin/python -m mkdocs build --strict --site-dir site "$@"
echo "built: $(pwd)/site/index.html"
