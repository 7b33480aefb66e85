#!/usr/bin/env bash
# On a lent GPU machine (see scripts/gpu_stage.sh): install the carried wheels beside the image's torch, train the
# candidates of scripts/train_candidates.py (its options pass through), and put each run's logs and model folders in
# $OUT (one archive per run, since few files come back) or ./runs/gpu when $OUT is not set.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
OUTDIR=${OUT:-runs/gpu}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
# The machine's copy of the tree may carry a stale .git, so the commit the runs record should come from
# FASHIONCAT_COMMIT (scripts/gpu_stage.sh prints the command with it set); without it, git_commit reads that .git.
[ -n "${FASHIONCAT_COMMIT:-}" ] || echo "gpu_train: FASHIONCAT_COMMIT not set; the runs record this copy's .git, which may be stale"
export PYTHONPATH="$PWD:$SITE" FASHIONCAT_DATA="$PWD/.fmnist" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
RUNS=$(mktemp -d)
mkdir -p "$OUTDIR"
python3 scripts/train_candidates.py --out "$RUNS" --device cuda "$@" | tee "$OUTDIR/driver.log" ||
  echo "gpu_train: train_candidates.py failed (see driver.log); archiving what the runs left"
cp "$RUNS/summary.json" "$OUTDIR/" 2>/dev/null || true
for d in "$RUNS"/*/; do
  n=$(basename "$d")
  [ "$n" = calibration ] || tar -czf "$OUTDIR/$n.tgz" -C "$RUNS" "$n"
done
ls -la "$OUTDIR"
