#!/usr/bin/env bash
# Prepare a training run on a lent GPU machine, which cannot reach the internet: its image has Python 3.12, torch and
# numpy but not fastai, so the training extra's pure-Python remainder goes with the run as wheels (.whl/), and the
# dataset's four IDX files as .fmnist/ (both git-ignored). It ends by printing the command to run on the GPU machine
# with those two paths carried (its options go to scripts/train_candidates.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TARGET=${TARGET_PYTHON:-3.12}
DATA=${FASHIONCAT_DATA:-/usr/share/datasets/fashion-mnist}

# fastprogress 1.0.3, not the venv's 1.1.x: 1.1 pulls in python-fasthtml and its web stack, which training never uses.
pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
names = ["fastai", "fastcore", "fastdownload", "fasttransform", "plum-dispatch", "beartype", "pydantic", "pydantic-core",
         "pydantic-settings", "python-dotenv", "annotated-types", "typing-inspection", "typing-extensions"]
print(" ".join(f"{n}=={version(n)}" for n in names), "fastprogress==1.0.3")
PYEOF
)
rm -rf .whl .fmnist && mkdir -p .whl .fmnist
# shellcheck disable=SC2086  # $pins is a list of requirements
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET" --implementation cp \
  --abi "cp${TARGET/./}" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl $pins 2>&1 | grep -v "is ignored: it is neither" || true
echo "gpu_stage: $(ls .whl | wc -l) wheels in .whl/"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  # .gz or not, in the folder or torchvision's FashionMNIST/raw, as fashioncat.data reads it; carried compressed
  for src in "$DATA/$f.gz" "$DATA/$f" "$DATA/FashionMNIST/raw/$f.gz" "$DATA/FashionMNIST/raw/$f" ""; do [ -z "$src" ] || [ -f "$src" ] && break; done
  [ -n "$src" ] || { echo "gpu_stage: $f(.gz) not found in $DATA: set FASHIONCAT_DATA (make data installs it)"; exit 1; }
  case "$src" in *.gz) cp "$src" .fmnist/ ;; *) gzip -c "$src" >".fmnist/$f.gz" ;; esac
done
# What a call sends: the tracked and the untracked-but-not-ignored files, and the carried .whl and .fmnist. A call takes
# 64 MiB at most, and this comes near it (the fourth GPU session: 65.4 MB of 67.1), so say how near before a lease.
"$PY" - <<'PYEOF'
import os, subprocess
out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], capture_output=True, text=True, check=True).stdout
n = sum(os.path.getsize(f) for f in out.split("\0") if f and os.path.isfile(f))
n += sum(os.path.getsize(os.path.join(r, f)) for d in (".whl", ".fmnist") for r, _, fs in os.walk(d) for f in fs)
left = 64 * 2**20 - n
print(f"gpu_stage: a call carrying .whl and .fmnist sends {n / 2**20:.1f} MiB of the 64 MiB it may"
      + ("" if left > 0 else ": TOO MUCH, the call will be refused; carry less or track less (teachers/README.md)"))
PYEOF
git diff --quiet HEAD -- fashioncat scripts configs 2>/dev/null ||
  echo "gpu_stage: fashioncat/, scripts/ or configs/ has uncommitted changes: commit them first, so the runs record what ran"
echo "gpu_stage: dataset in .fmnist/; on the GPU machine, carrying .whl and .fmnist:"
echo "  FASHIONCAT_COMMIT=$(git rev-parse HEAD) bash scripts/gpu_train.sh --budget-s 430 --deadline-s 545"
