#!/usr/bin/env bash
# Issue 11's device session, as one script: segmenter fine-tunes of the shipped model on the GPU,
# side by side for the same wall clock, on v11's recipe (BBBC039 train + HeLa 0-13 conformed at
# 0.5 / 2 passes + 64 diverse synthetic frames, zoom 0.5-1.33, contact weight 4 / fraction 0.5,
# lr 3e-4 on a cosine). Runs: "ctl" (the network as shipped) and "wN" (skip modules grown to N
# inner channels first, train.widen). The models come back in $OUT/models11.tar; they are
# calibrated and chosen here, on validation (bench/calibrate.py), never on the device.
# Here:   python bench/gpu/pack_data.py       (.gpu_data: 50 MiB; carry it)
# There:  OUT=$OUT bash bench/gpu/train11.sh  (MIN=6 minutes per run, RUNS="ctl w48", SMOKE=1)
# A CPU dry run: DEVICE=cpu MIN=0.2 WORKERS=0 THREADS=1 SMOKE=0 OUT=/tmp/dry bash bench/gpu/train11.sh
set -u -o pipefail  # a failing run must not hide behind `| tail`
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-.gpu_data}
OUT=${OUT:?set OUT}
MIN=${MIN:-6}
RUNS=${RUNS:-ctl w48}
WORKERS=${WORKERS:-3}
THREADS=${THREADS:-3}
PY=${PY:-python3}
W=/tmp/spiralray_gpu11
source bench/gpu/session.sh
$PY -c "import torch, numpy, scipy, skimage, tifffile; print('torch', torch.__version__)" || { echo "IMPORTS FAILED"; exit 1; }
[ -f "$DATA/bbbc039_train/images.tif" ] && [ -f "$DATA/hela/images.tif" ] || { echo "NO DATA in $DATA"; exit 1; }
if [ "${SMOKE:-1}" = 1 ]; then
    timeout 120 $PY bench/gpu/smoke.py "$DEVICE" || { echo "SMOKE FAILED"; exit 1; }
fi
limit=$($PY -c "print(int($MIN * 60 + 240))")  # budget + data preparation (the conform) and saving
pids=()
for run in $RUNS; do
    extra=()
    case $run in w*) extra=(--skip-inner "${run#w}") ;; esac
    timeout $limit $PY bench/train_default.py --init spiralray/weights/spiralnet --out "$W/$run" \
        --scorer-minutes 0 --segmenter-minutes "$MIN" --data "$DATA/bbbc039_train" --data "$DATA/hela" \
        --conform-outlines "$DATA/hela" --conform-level 0.5 --conform-passes 2 --synthetic 64 \
        --synthetic-preset diverse --scales 0.5,0.75,1.0,1.33 --lr 3e-4 --contact-weight 4 \
        --contact-fraction 0.5 --device "$DEVICE" --threads "$THREADS" --loader-workers "$WORKERS" \
        --checkpoint-minutes 1 "${extra[@]}" >"$W/$run.log" 2>&1 &
    pids+=($!)
done
sleep 30; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null
fail=0
for p in "${pids[@]}"; do  # each by pid: a bare wait would also wait for the tee above
    wait "$p" || { echo "TRAINING FAILED: pid $p exit $?"; fail=1; }
done
date
for run in $RUNS; do tail -n 2 "$W/$run.log"; done
# A run killed by its timeout leaves RUN.partial (weights every minute): it comes back too.
(cd $W && tar -cf "$OUT/models11.tar" $(ls -d */ *.partial *.log 2>/dev/null | tr -d /))
tar -tf "$OUT/models11.tar"
exit $fail
