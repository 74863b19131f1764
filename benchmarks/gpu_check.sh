#!/usr/bin/env bash
# One GPU session, prepared here and run there in a single call: the guide preset's tables
# (benchmarks/train_step.py --preset guide), then the CUDA tests. Logs go to $OUT (default
# /tmp/noa-gpu). Run from the repository root on a machine with torch and CUDA.
#
#   BENCH_S=300 TEST_S=150 ROWS=modes,sweep,memory bash benchmarks/gpu_check.sh
#
# The benchmark measures eager rows first: compiling the guide's model took over 3 minutes on an
# H100 machine (2026-11-27), so a short BENCH_S cuts the compiled rows, not the eager ones.
# For machines that cannot reach a package index: wheels of the pure-Python dependencies in
# .whl/ are installed to /tmp/site.
set -uo pipefail
OUT=${OUT:-/tmp/noa-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"

timeout "${BENCH_S:-300}" python3 benchmarks/train_step.py --preset guide --device cuda --rows "${ROWS:-modes,sweep,memory}" \
    ${EXECUTION:+--execution "$EXECUTION"} --budget-s "$(( ${BENCH_S:-300} - 60 ))" --results "$OUT/guide.jsonl" 2>&1 | tee "$OUT/guide.log"
echo "benchmark exit: ${PIPESTATUS[0]}"

timeout "${TEST_S:-150}" python3 -m pytest -q -m cuda -p no:cacheprovider -rs tests 2>&1 | tee "$OUT/cuda_tests.log"
echo "tests exit: ${PIPESTATUS[0]}"
