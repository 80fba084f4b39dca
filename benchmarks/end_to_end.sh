#!/usr/bin/env bash
# A default pipeline end to end at one or more commits, on this machine: the classifier's as `dvc repro` runs it,
# or with OBJECTIVE=contrastive the CLIP one as `winnow pipeline --objective contrastive` runs it (one process):
# for each REV (in a shuffled order), a fresh clone at REV with this checkout's data/synthetic (the same data.dvc),
# its own locked environment (uv sync --frozen), an empty decoded cache, and every stage rerun
# (`dvc repro -f`, WINNOW_NO_CACHE=1 so no Prefect cache hit skips a stage's work). Timed from the first stage to the
# last; the environment's set-up is not included. Appends one JSON line per run to OUT.
#   OBJECTIVE=contrastive bash benchmarks/end_to_end.sh metrics/synthetic/bench/end_to_end_contrastive.jsonl b6a1254 HEAD
# With KEEP=DIR, each run's metrics/synthetic/<objective> folder is kept as DIR/<commit> (to compare the curves of two
# commits run on one machine: a CPU of another type rounds differently).
# A REV may carry settings after a +, comma-separated: HEAD+train.parallel_arms=2 runs HEAD with --set train.parallel_arms=2
# (winnow pipeline only; with RUNNER=pipeline the classifier runs as `winnow pipeline` too, not `dvc repro`).
# Usage: bash benchmarks/end_to_end.sh OUT REV [REV ...]
#   e.g. bash benchmarks/end_to_end.sh metrics/synthetic/bench/end_to_end.jsonl b6a1254 HEAD   (about 30 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "$1"); shift
REPO=$(pwd)
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 WINNOW_NO_CACHE=1
OBJECTIVE=${OBJECTIVE:-classification}
mkdir -p "$(dirname "$OUT")"
for SPEC in $(printf '%s\n' "$@" | shuf); do
  REV=${SPEC%%+*}
  SETS=(); if [ "$SPEC" != "$REV" ]; then IFS=, read -ra PAIRS <<< "${SPEC#*+}"; for P in "${PAIRS[@]}"; do SETS+=(--set "$P"); done; fi
  if [ "$OBJECTIVE" = classification ] && [ "${RUNNER:-dvc}" = dvc ]; then
    [ ${#SETS[@]} -eq 0 ] || { echo "settings ($SPEC) need RUNNER=pipeline: dvc repro reads params.yaml" >&2; exit 2; }
    RUN=(dvc repro -f)
  else
    RUN=(winnow pipeline --objective "$OBJECTIVE" "${SETS[@]}")
  fi
  COMMIT=$(git rev-parse "$REV")
  WORK=$(mktemp -d)
  git clone -q "$REPO" "$WORK/repo"
  git -C "$WORK/repo" checkout -q "$COMMIT"
  mkdir -p "$WORK/repo/data" && cp -r data/synthetic "$WORK/repo/data/"
  (cd "$WORK/repo" && uv sync --frozen -q)
  START=$(date +%s.%N)
  (cd "$WORK/repo" && WINNOW_DECODED_CACHE="$WORK/decoded" uv run --frozen "${RUN[@]}" > "$WORK/repro.log" 2>&1)
  END=$(date +%s.%N)
  python3 - "$OUT" "$SPEC" "$COMMIT" "$START" "$END" "${RUN[*]}" <<'EOF'
import json, os, platform, sys, datetime
out, rev, commit, start, end, run = sys.argv[1:]
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
row = {"rev": rev, "commit": commit, "seconds": round(float(end) - float(start), 1), "machine": f"{model}, {os.cpu_count()} CPUs",
       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "command": f"WINNOW_NO_CACHE=1 {run} (a fresh clone, an empty decoded cache)"}
open(out, "a").write(json.dumps(row) + "\n")
print(json.dumps(row))
EOF
  # kept as KEEP/<commit>[+settings]: two runs of one commit with different settings keep apart
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$WORK/repo/metrics/synthetic/$OBJECTIVE" "$KEEP/$COMMIT${SPEC#"$REV"}"; fi
  rm -rf "$WORK"
done
