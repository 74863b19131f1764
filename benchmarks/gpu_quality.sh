#!/usr/bin/env bash
# What compute buys on a GPU, in one call of at most 9 minutes: benchmarks/long_curve.py with
# fresh operators on CUDA (the best candidate so far, hybrid: the θ-generated stack beside the
# U-AFNO, whose CPU curve still rose at 5k updates where the U-AFNO's was flat; MODEL names another), its
# held-out curve to as many updates as fit in MINUTES (default 7.5; the data and the CUDA
# start-up come on top), then its summary (curve, seconds per update, the replay's share) as
# JSON in $OUT/gpu_quality.json (default benchmarks/.work/), printed as well. The run's folder
# (RUN_DIR, default /tmp/noa-gpu-quality-$MODEL) is kept outside $OUT: a second call on the same
# machine continues that curve instead of starting over.
#
#   bash benchmarks/gpu_quality.sh                       # on the GPU machine, from the repository root
#   MODEL=uafno-local MINUTES=5 bash benchmarks/gpu_quality.sh
#   MODEL=oracle LR=1e-2 bash benchmarks/gpu_quality.sh      # LR: long_curve's --lr (default its 1e-3)
#   bash benchmarks/gpu_quality.sh --smoke               # or SMOKE=1: seconds on a CPU, the plumbing only
#
# For machines that cannot reach a package index: wheels of the pure-Python dependencies in
# .whl/ are installed to /tmp/site (as gpu_check.sh does).
set -euo pipefail
SMOKE=${SMOKE:-0}
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; fi
MODEL=${MODEL:-hybrid}
PYTHON=${PYTHON:-python3}  # the interpreter with torch (the suite passes its own)
DEST=${OUT:-benchmarks/.work}
mkdir -p "$DEST"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

if [[ "$SMOKE" == 1 ]]; then
    SCRATCH=$(mktemp -d)
    trap 'rm -r "$SCRATCH"' EXIT
    RUN="$SCRATCH/run"
    NAME=gpu_quality_smoke.json
    FLAGS=(--device cpu --threads 1 --grid 16 --timesteps 4 --n-test 4 --skill-per-rule 4 --batch-size 4 --updates 3)
    LIMIT=120
else
    RUN=${RUN_DIR:-/tmp/noa-gpu-quality-$MODEL}
    NAME=gpu_quality.json
    FLAGS=(--device cuda --threads 4 --updates "${UPDATES:-1000000}" --minutes "${MINUTES:-7.5}" ${LR:+--lr "$LR"})
    LIMIT=${LIMIT_S:-540}
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

# SIGTERM at the limit: long_curve.py finishes its update, saves and writes its summary.
status=0
timeout -s TERM "$LIMIT" "$PYTHON" benchmarks/long_curve.py --model "$MODEL" --data fresh --out "$RUN" "${FLAGS[@]}" \
    || status=$?
echo "long_curve exit: $status"
cp "$RUN/summary.json" "$DEST/$NAME"
cp "$RUN/curve.jsonl" "$DEST/${NAME%.json}_curve.jsonl"
cat "$DEST/$NAME"
echo "written: $DEST/$NAME"
exit "$status"
