#!/usr/bin/env bash
# The GPU check: run it whenever a GPU machine is at hand, and commit what it prints (it also writes it to
# benchmarks/gpu-<date>.txt). The test suite never needs it.
#   1. the device tests (tests/test_devices.py: on CUDA, the whole chain in bf16 autocast);
#   2. the default pipeline on the GPU, timed, its outputs in a folder of their own (the committed CPU run is
#      left as it is);
#   3. scoring throughput of a ViT-B/32 open_clip model at 224 px on generated images, against its bare forward
#      (benchmarks/scoring_throughput.py);
#   4. the data path at 224 px (benchmarks/data_path.py): decode workers, scoring and a selecting step's data wait,
#      the scorer and the learner on the GPU.
# Usage: bash benchmarks/gpu.sh [--dry-run]
#   --dry-run: the same three steps on the CPU, small (a tiny pool, a small CLIP at 64 px), to check the script runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1
DRY=""
[ "${1:-}" = "--dry-run" ] && DRY=1
WORK=$(mktemp -d -t winnow-gpu-XXXX)
OUT=${GPU_OUT:-benchmarks/gpu-$(date +%Y-%m-%d)${DRY:+-dry-run}.txt}
[ -n "$DRY" ] && OUT=${GPU_OUT:-$WORK/gpu-dry-run.txt}
{
  echo "# winnow GPU check, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${DRY:+ (dry run, CPU)}"
  uv run --frozen python -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

  echo "## 1. device tests"
  uv run --frozen pytest -q tests/test_devices.py 2>&1 | tail -3

  echo "## 2. the default pipeline on the device"
  if [ -n "$DRY" ]; then
    SETS=(--set device=cpu --set "data.root=$WORK/data" --set data.num_pool=1200 --set data.num_curated=300
      --set data.num_test=200 --set data.num_val=200 --set data.num_transfer=240 --set data.shard_size=300
      --set data.duplicate_sources=10 --set reference.steps=40 --set train.steps=30 --set train.eval_every=10
      --set train.warmup_steps=5 --set evaluate.probe_steps=30 --set "train.policies=[uniform,learnability]")
  else
    SETS=(--set device=cuda)
  fi
  FOLDERS=(--set "artifacts=$WORK/artifacts" --set "metrics=$WORK/metrics" --set "plots=$WORK/plots" --set "reports=$WORK/reports")
  START=$(date +%s)
  uv run --frozen winnow pipeline "${SETS[@]}" "${FOLDERS[@]}" 2>&1 | grep -v "^[0-9-]* [0-9:,]* INFO" | tail -25
  echo "pipeline: $(($(date +%s) - START)) s end to end (data generated when absent, every stage, every arm)"

  echo "## 3. scoring throughput against the bare forward"
  if [ -n "$DRY" ]; then
    uv run --frozen python benchmarks/scoring_throughput.py --model clip-pico --size 64 --rows 256 --batch 64 --device cpu --repeats 1
  else
    uv run --frozen python benchmarks/scoring_throughput.py --model clip-vit-b-32 --size 224 --rows 4096 --batch 256 --device cuda
  fi

  echo "## 4. the data path at 224 px"
  if [ -n "$DRY" ]; then
    uv run --frozen python benchmarks/data_path.py --rows 400 --shard-rows 200 --sample 40 --shards 2 --repeats 1 \
      --train-steps 3 --warmup 1 --pool "$WORK/jpegs" | tail -30
  else
    uv run --frozen python benchmarks/data_path.py --device cuda --pool "$WORK/jpegs" --out "$WORK/data_path.json" | tail -60
  fi
} 2>&1 | tee "$OUT"
echo "written to $OUT"
