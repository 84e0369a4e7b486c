#!/usr/bin/env bash
# CI lane: build a wheel from the repository, install it in a fresh virtual environment (a regular
# install, not editable) and run `featvis demo` from outside the source tree.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
. "$work/venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip wheel -q --no-deps -w "$work/dist" "$repo"
wheel="$(ls "$work"/dist/featvis_fast-*.whl)"
echo "wheel lane: built $(basename "$wheel")"
pip install -q torch==2.13.0 "$wheel"
cd "$work"
python - <<'PY'
import featvis_fast, os, sys
here = os.path.dirname(featvis_fast.__file__)
assert "site-packages" in here, f"featvis_fast imported from {here}, not the installed wheel"
import featvis_fast.kernels, featvis_fast.csrc, featvis_fast.dissection, featvis_fast.engine  # noqa: F401
print("wheel lane: featvis_fast imports from", here)
PY
TORCH_EXTENSIONS_DIR="$work/ext" featvis demo --out "$work/demo"
test -n "$(find "$work/demo" -name '*.png' | head -1)" || { echo "wheel lane: the demo wrote no PNG"; exit 1; }
echo "wheel lane: featvis demo ran from the installed wheel ($(find "$work/demo" -type f | wc -l) files)"
