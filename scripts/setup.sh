#!/usr/bin/env bash
# Create (or reuse) .venv in the repository root and install samscope into it, editable, with
# its dev tools. torch is installed first and pinned to 2.13.0 so that pip never picks another
# (an unpinned torch on Linux pulls gigabytes of CUDA libraries).
#
#   bash scripts/setup.sh
#
# Environment:
#   PYTHON            interpreter for a new venv (default: python3.11, else python3; >= 3.10)
#   TORCH_INDEX_URL   extra index for torch, e.g. https://download.pytorch.org/whl/cpu for a
#                     CPU-only build where no local torch wheel is configured in pip
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TORCH_VERSION=2.13.0
VENV=.venv

usable() {  # usable PYTHON: runs and is Python >= 3.10
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
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
        echo "setup: no Python >= 3.10 found (tried ${PYTHON:-python3.11, python3})" >&2
        exit 1
    fi
    if [ -e "$VENV" ]; then
        echo "setup: $VENV exists but has no working Python >= 3.10; recreating it"
        rm -rf "$VENV"
    fi
    echo "setup: creating $VENV with $python ($("$python" --version))"
    "$python" -m venv "$VENV"
fi

pip=("$VENV/bin/python" -m pip)
"${pip[@]}" install --upgrade pip

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$TORCH_VERSION" >"$constraints"

torch_args=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then torch_args=(--extra-index-url "$TORCH_INDEX_URL"); fi
"${pip[@]}" install ${torch_args[@]+"${torch_args[@]}"} "torch==$TORCH_VERSION"
"${pip[@]}" install -c "$constraints" -e ".[all]"

echo "setup: done. $("$VENV/bin/python" -c 'import sam_core, torch; print(f"sam_core {sam_core.__version__}, torch {torch.__version__}")')"
