#!/usr/bin/env bash
# On a lent GPU machine (see scripts/gpu_stage.sh): install the carried wheels beside the image's torch, train the
# candidates of scripts/train_candidates.py (its options pass through), and put each run's logs and model folders in
# $OUT (one archive per run, since few files come back) or ./runs/gpu when $OUT is not set.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=${SITE:-/tmp/site}
OUTDIR=${OUT:-runs/gpu}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
# The machine's copy of the tree may carry a stale .git, so the commit the runs record comes from FASHIONCAT_COMMIT
# (scripts/gpu_stage.sh prints the command with it set).
if [ -z "${FASHIONCAT_COMMIT:-}" ]; then
  FASHIONCAT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  echo "gpu_train: FASHIONCAT_COMMIT not set; recording $FASHIONCAT_COMMIT from this copy's .git, which may be stale"
fi
export PYTHONPATH="$PWD:$SITE" FASHIONCAT_DATA="$PWD/.fmnist" FASHIONCAT_COMMIT PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
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
