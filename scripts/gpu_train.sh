#!/usr/bin/env bash
# On a lent GPU machine (see scripts/gpu_stage.sh): install the carried wheels beside the image's torch, train the
# candidates of scripts/train_candidates.py (its options pass through), and put each run's logs and model folders in
# $OUT (one archive per run, since few files come back) or ./runs/gpu when $OUT is not set.
#   --resume CONFIG [SECONDS]   instead: carry on a run of CONFIG started elsewhere (carry its models_dir, which holds
#                     the checkpoint) on the GPU, stop it after SECONDS (default 480; what it finished stays in its
#                     checkpoint), and archive its log and models dirs as run.tgz.
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
mkdir -p "$OUTDIR"
if [ "${1:-}" = "--resume" ]; then
  CONFIG=${2:?gpu_train: --resume needs a config, e.g. configs/long.yaml}
  DIRS=$(python3 -c "import sys; from fashioncat.training import load_config; l = load_config(sys.argv[1]).logging; print(l.log_dir, l.models_dir)" "$CONFIG")
  # fashioncat_train itself (the console script is not installed here); the config's training.device should be auto
  timeout --signal=INT "${3:-480}" python3 -c "import sys; from fashioncat.training import main; main(sys.argv[1], resume=True, quiet=True)" "$CONFIG" \
    2>&1 | tee "$OUTDIR/driver.log" ||
    echo "gpu_train: stopped (time limit or error, see driver.log); the checkpoint keeps the finished epochs"
  # shellcheck disable=SC2086  # $DIRS is the two folders
  tar -czf "$OUTDIR/run.tgz" $DIRS
  ls -la "$OUTDIR"
  exit
fi
RUNS=$(mktemp -d)
python3 scripts/train_candidates.py --out "$RUNS" --device cuda "$@" | tee "$OUTDIR/driver.log" ||
  echo "gpu_train: train_candidates.py failed (see driver.log); archiving what the runs left"
cp "$RUNS/summary.json" "$OUTDIR/" 2>/dev/null || true
# Teacher runs (t-*): their best model goes to .teachers/<name>, where a second call in the same lease distils from it
# (train_candidates' kd-*-t5), and is archived as fp16, since a 4.9 M-parameter model in fp32 passes the 16 MiB limit.
for d in "$RUNS"/t-*/models/best_model; do
  [ -d "$d" ] || continue
  n=$(basename "$(dirname "$(dirname "$d")")")
  rm -rf ".teachers/$n" && mkdir -p .teachers && cp -r "$d" ".teachers/$n"
  python3 -c "import sys; from safetensors.torch import load_file, save_file; f = sys.argv[1]; save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(f).items()}, f)" "$d/model.safetensors"
done
for d in "$RUNS"/*/; do
  n=$(basename "$d")
  # best_model only: a wide run's final_model and a stopped run's checkpoint would pass the 16 MiB a returned file may have
  [ "$n" = calibration ] || tar --exclude=final_model --exclude=checkpoint.pth -czf "$OUTDIR/$n.tgz" -C "$RUNS" "$n"
done
ls -la "$OUTDIR"
