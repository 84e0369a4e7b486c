#!/usr/bin/env bash
# One device-machine call: install the carried wheels, build the CUDA kernels, run the needs_cuda
# tests and every GPU benchmark, and leave logs + results under $OUT (committed to bench/results/).
#   run(command="bash bench/gpu_session.sh", carry=[".whl"])
# The wheels (.whl/, ignored by git) are what the GPU image lacks: fastapi and its deps, uvicorn,
# websockets, expecttest, the efficientnet packages, captum (+ matplotlib, which captum.attr imports),
# scikit-learn (+ scipy, joblib, threadpoolctl) and scikit-image (+ its deps) for class-agnostic
# visualization and its benchmark baseline, a setuptools new enough for pyproject.toml.
set -uo pipefail
export PYTHONUNBUFFERED=1 MAX_JOBS=16 PIP_BREAK_SYSTEM_PACKAGES=1
OUT=${OUT:-/tmp/featvis-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import featvis_fast as fv; print(fv.backends())" 2>&1 | tee -a "$OUT/gpu.txt"
step() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; echo "== $name rc=${PIPESTATUS[0]}"; }
step tests 240 python3 -m pytest -q -m needs_cuda -p no:cacheprovider
step bench-similarity 200 python3 bench/similarity.py --device cuda --repeats 20
step bench-viewer 150 python3 bench/viewer.py --device cuda --clients socket --moves 200
step bench-backprop 300 python3 bench/backprop.py --device cuda --repeats 5
step bench-perturbation 300 python3 bench/perturbation.py --device cuda --repeats 3
step bench-dissection 200 python3 bench/dissection.py --device cuda --images 4000 --numpy-images 50
step bench-reconstruction 300 python3 bench/reconstruction.py --device cuda --batches 64 256 --steps 10
cp bench/results/*cuda* "$OUT/" 2>/dev/null
ls -la "$OUT"
