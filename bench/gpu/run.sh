#!/usr/bin/env bash
# One lent GPU session's checks, as one script (device time is short): smoke tests, the engine
# benchmark on the GPU, then three training runs side by side on the GPU for the same wall clock:
#   scratch  - SpiralNet from scratch, the v5 data recipe (HeLa 0-13 + 48 synthetic, zoom 0.5-1.33)
#   finetune - the shipped model fine-tuned on the same data
#   unet32   - the U-Net-32 baseline from scratch on the same data (equal budget to "scratch")
# Usage (repo root; .hela holding HeLa's images.tif and labels.tif): OUT=/tmp/o bash bench/gpu/run.sh
# Parts: SMOKE=1 ENGINE=1 TRAIN=1 COMPARE=0 (compare: `bench compare` on the GPU, bench/weights/unet32 needed).
# A CPU dry run: DEVICE=cpu MIN_SCO=0.1 MIN_SEG=0.1 WORKERS=1 ENGINE=0
# Rejoin the U-Net here: python bench/gpu/unet_parts.py join OUT_DIR bench/weights/unet32 CONFIG
set -u -o pipefail  # a failing benchmark must not hide behind `| tail`
DEVICE=${DEVICE:-cuda}
HELA=${HELA:-.hela}
OUT=${OUT:?set OUT}
MIN_SCO=${MIN_SCO:-1.5}
MIN_SEG=${MIN_SEG:-4}
WORKERS=${WORKERS:-3}
W=/tmp/spiralray_gpu
source bench/gpu/session.sh
python3 -c "import torch, numpy, scipy, skimage; print('torch', torch.__version__, 'numpy', numpy.__version__)"
if [ "${SMOKE:-1}" = 1 ]; then
    timeout 120 python3 bench/gpu/smoke.py "$DEVICE" || { echo "SMOKE FAILED"; exit 1; }
fi
date
if [ "${ENGINE:-1}" = 1 ]; then
    timeout 200 python3 -m spiralray bench engine --device "$DEVICE" --json --data "$HELA" --results "$OUT" \
        --threads 8 | tail -c 1500 || echo "ENGINE BENCH FAILED"
fi
date
if [ "${TRAIN:-1}" = 1 ]; then
minutes=$(python3 -c "print($MIN_SCO + $MIN_SEG)")
limit=$(python3 -c "print(int(($MIN_SCO + $MIN_SEG) * 60 + 180))")  # budget + data preparation and saving
data=(--synthetic 48 --scales 0.5,0.75,1.0,1.33 --device "$DEVICE" --threads 3)
timeout $limit python3 bench/train_default.py --hela "$HELA" --out $W/scratch "${data[@]}" --score-label centred \
    --scorer-minutes "$MIN_SCO" --segmenter-minutes "$MIN_SEG" --loader-workers "$WORKERS" >$W/scratch.log 2>&1 &
pids=($!)
timeout $limit python3 bench/train_default.py --hela "$HELA" --out $W/finetune "${data[@]}" --init spiralray/weights/spiralnet \
    --lr 3e-4 --scorer-minutes "$MIN_SCO" --segmenter-minutes "$MIN_SEG" --loader-workers "$WORKERS" \
    >$W/finetune.log 2>&1 &
pids+=($!)
timeout $limit python3 bench/train_baselines.py --data "$HELA" --weights $W --base 32 --minutes "$minutes" "${data[@]}" \
    >$W/unet.log 2>&1 &
pids+=($!)
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null
for p in "${pids[@]}"; do  # each by pid: a bare wait would also wait for the tee above
    wait "$p" || echo "TRAINING FAILED: pid $p exit $?"
done
date
tail -n 3 $W/scratch.log $W/finetune.log $W/unet.log
# Bring back: small models in one tar; the U-Net (31 MB) in parts under 12 MB (16 MiB per file).
tar -C $W -cf "$OUT/spiralnets.tar" scratch finetune unet32/config.json scratch.log finetune.log unet.log
python3 bench/gpu/unet_parts.py split "$W/unet32/model.safetensors" "$OUT"
fi
if [ "${COMPARE:-0}" = 1 ]; then  # needs bench/weights/unet32 carried
    timeout 300 python3 -m spiralray bench compare --device "$DEVICE" --json --data "$HELA" \
        --results "$OUT" --unets 32 --baseline-minutes 0 | tail -c 1500 || echo "COMPARE FAILED"
fi
ls -la "$OUT"
