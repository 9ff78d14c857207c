# Sourced by the device scripts (run.sh, train11.sh) after they set W and OUT: a clean work
# directory, everything from here on logged to $OUT/log.txt, and the device named in the log.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
rm -rf "$W"  # never bring back an earlier run's models
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
date
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
