#!/usr/bin/env bash
# The quick start: set up .venv (scripts/setup.sh), then run the demo, which segments a few
# coins of scikit-image's bundled `coins` image with MobileSAM (vit_t, downloaded once into the
# cache folder, see `samscope models`) and writes masks, an overlay and a summary to demo_out/.
# Extra arguments go to `samscope demo` (e.g. --out DIR, --objects 8, --sample cell).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/samscope demo "$@"
