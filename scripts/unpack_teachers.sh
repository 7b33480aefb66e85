#!/usr/bin/env bash
# After a lent GPU machine's first call (scripts/gpu_train.sh --only t-64 t-deep ...): unpack each returned t-*.tgz's
# best model (fp16) into .teachers/<name>, the path the kd-*-t5 students name, and into teachers/<name>, to commit
# (teachers/README.md: mind the 64 MiB a call carries), so that later checkouts keep it.
#   bash scripts/unpack_teachers.sh FOLDER   # FOLDER: where the call's files came back (its files_at)
set -euo pipefail
cd "$(dirname "$0")/.."
FROM=$(realpath "${1:?unpack_teachers: name the folder holding the returned t-*.tgz files}")
cd "${TEACHERS_ROOT:-.}"  # where .teachers/ and teachers/ are (the repository; tests set another)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
found=0
for f in "$FROM"/t-*.tgz; do
  [ -e "$f" ] || continue
  n=$(basename "$f" .tgz)
  tar -xzf "$f" -C "$tmp" "$n/models/best_model"
  for dest in ".teachers/$n" "teachers/$n"; do
    rm -rf "$dest" && mkdir -p "$(dirname "$dest")" && cp -r "$tmp/$n/models/best_model" "$dest"
  done
  echo "unpack_teachers: $n -> .teachers/$n and teachers/$n ($(du -sh "teachers/$n" | cut -f1))"
  found=$((found + 1))
done
[ "$found" -gt 0 ] || { echo "unpack_teachers: no t-*.tgz in $FROM"; exit 1; }
