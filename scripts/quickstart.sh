#!/usr/bin/env bash
# The quick start: set up .venv (scripts/setup.sh), then
#  1. `samscope demo`: MobileSAM (vit_t, downloaded once into the cache folder, see
#     `samscope models`) segments a few coins of scikit-image's bundled `coins` image with one
#     click each, then everything in it automatically; masks, label image, overlays and a
#     summary go to demo_out/;
#  2. `python -m samscope_fiftyone.quickstart`: three bundled sample images, written as local
#     files, become a persistent FiftyOne dataset (FiftyOne's bundled database) with automatic
#     masks in the field `sam_auto`, ready to open in the App.
# Extra arguments go to `samscope demo` (e.g. --out DIR, --objects 8, --sample cell).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/samscope demo "$@"
FIFTYONE_DO_NOT_TRACK=${FIFTYONE_DO_NOT_TRACK:-true} .venv/bin/python -m samscope_fiftyone.quickstart
