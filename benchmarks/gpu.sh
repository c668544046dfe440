#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md as one command, for a machine with an NVIDIA GPU and JAX but no
# TensorFlow (the device machines here). Run from the repository root:
#
#     bash benchmarks/gpu.sh [OUT_DIR]
#
# Needs: the Fashion-MNIST IDX folder (Debian's dataset-fashion-mnist; its gz files can be copied next to
# the repo as .gl-data/fashion-mnist/), and the wheels of keras, namex, optree and mlxtend in .whl/ when
# they are not installed (see the device README). Writes its logs to OUT_DIR (default: gpu-results/).
set -euo pipefail
out=${1:-gpu-results}
mkdir -p "$out"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
idx=/usr/share/datasets/fashion-mnist
[ -d "$idx" ] || idx=.gl-data/fashion-mnist
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m ensemble.cli --home "$out/home" data idx "$idx" --out "$out/home/data" | tee "$out/data.log"

# 1. Throughput, A (seed recipe: legacy generator, float32) vs B (ensemble defaults), alternating.
python3 benchmarks/train_throughput.py --data "$out/home/data" --epochs 3 --repeats 3 \
  --variants A,B,B-float32 --json "$out/throughput.json" | tee "$out/throughput.log"

# 2. Members per hour on one GPU with --per-gpu 1, 2, 4 (8 members x 2 epochs on the 42000 rows), with
#    nvidia-smi's utilisation sampled each second. The runner sizes JAX's memory per member itself
#    (0.9/K preallocated), so the global no-preallocation setting above is dropped for it.
env -u XLA_PYTHON_CLIENT_PREALLOCATE python3 benchmarks/workers.py --data "$out/home/data" --per-gpu 1,2,4 \
  --members 8 --epochs 2 --repeats 1 --json "$out/per_gpu.json" | tee "$out/per_gpu.log"

# 3. The default recipe end to end: 10 cnn11 members (one-cycle, 12 epochs) on 42000 rows, then the blend.
start=$(date +%s)
python3 -m ensemble.cli --home "$out/home" train --n 10 --job full --data "$out/home/data" | tee "$out/full.log"
python3 -m ensemble.cli --home "$out/home" blend --job full | tee -a "$out/full.log"
echo "default recipe wall seconds: $(( $(date +%s) - start ))" | tee -a "$out/full.log"

# 4. Accuracy per GPU time: seed 002 (A) vs the fast recipes at A's wall time for 8 epochs, 42000 rows.
env -u XLA_PYTHON_CLIENT_PREALLOCATE python3 benchmarks/budget.py --data "$out/home/data" --rows 42000 \
  --gpus 0 --out "$out/budget" --variants A,B,C-onecycle,C-onecycle-6ep,C-snapshots,C-deotte-onecycle \
  | tee "$out/budget.log"

# 5. Warm workers: what an extra member costs beyond its training and predictions (one slot, 1 epoch each).
python3 benchmarks/member_cost.py --data "$out/home/data" --members 4 --repeats 2 --extra "--gpus 0" \
  | tee "$out/member_cost.log"

# 6. The levers on a GPU, 3 seeds each: a larger batch with a linearly scaled rate (256 at 4x the default
#    peak of 2e-3), and label smoothing; same 12000 rows and holdout as the CPU tables.
python3 benchmarks/levers.py --data "$out/home/data" --rows 12000 --seeds 3 --out "$out/levers-batch" \
  --common "--no-tta --gpus 0" --lever "--batch 256 --lr 8e-3" | tee "$out/levers_batch.log"
python3 benchmarks/levers.py --data "$out/home/data" --rows 12000 --seeds 3 --out "$out/levers-smoothing" \
  --common "--no-tta --gpus 0" --lever "--label-smoothing 0.1" | tee "$out/levers_smoothing.log"
python3 benchmarks/levers.py --data "$out/home/data" --rows 12000 --seeds 3 --out "$out/levers-ema" \
  --common "--no-tta --gpus 0" --lever "--ema 0.99" | tee "$out/levers_ema.log"

# 7. K-fold members against the shared split (5 members each), and a pseudo-label round (3 paired seeds,
#    a test file of Digit Recognizer's ratio to the training rows).
python3 benchmarks/folds.py --data "$out/home/data" --rows 12000 --members 5 --epochs 12 --out "$out/folds" \
  --common "--no-tta --gpus 0" | tee "$out/folds.log"
python3 benchmarks/pseudo.py --data "$out/home/data" --rows 12000 --test-rows 8000 --seeds 3 --threshold 0.99 \
  --common "--no-tta --gpus 0 --epochs 12" --out "$out/pseudo" | tee "$out/pseudo.log"

# 8. The net's width on a GPU, where it is unmeasured and --width auto keeps the published net: the default
#    against half the filters under the same time limit, 2 paired job seeds, 42000 rows, 5 minutes each.
python3 benchmarks/members_vs_epochs.py --data "$out/home/data" --rows 42000 --budget 300 --seeds 0,1 --roots . \
  --gpus 0 --lever "--width 0.5" --out "$out/width" | tee "$out/width.log"
