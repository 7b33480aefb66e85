"""Are two ONNX models the same speed? Times them alternately in one process, so that a machine whose speed drifts (a
shared CPU) slows both alike: batch-1 latency on real test images, blocks of images taking turns, the median of each
block, then the median over the blocks. For a retrained model of the same network against the one it replaces:

    git show HEAD~1:models/fashioncat-int8.onnx > /tmp/before.onnx
    .venv/bin/python bench/compare_onnx.py /tmp/before.onnx models/fashioncat-int8.onnx

Reads the test images with fashioncat.data, so it needs the dev install (`make install`) and the dataset.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench_inference import _ort_session  # bench/, the script's own folder, is on sys.path


def compare(paths: list[str], images: np.ndarray, blocks: int, threads: int) -> dict[str, list[float]]:
    "Per model, the median batch-1 latency (ms) of each block; the models take turns block by block."
    predict = {p: _ort_session(p, threads, "CPUExecutionProvider") for p in paths}  # bench_inference's session
    for f in predict.values():  # warm-up
        for x in images[:50]:
            f(x[None])
    out = {p: [] for p in paths}
    for _ in range(blocks):
        for p, f in predict.items():
            t = []
            for x in images:
                t0 = time.perf_counter()
                f(x[None])
                t.append(time.perf_counter() - t0)
            out[p].append(1e3 * statistics.median(t))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="fashioncat ONNX files (input `image`, output `probs`)")
    ap.add_argument("--blocks", type=int, default=8, help="turns per model")
    ap.add_argument("--n", type=int, default=200, help="images per block")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    missing = [m for m in a.models if not Path(m).is_file()]
    if missing:
        sys.exit(f"compare_onnx: not found: {', '.join(missing)}")
    from fashioncat.data import load_split

    x, _ = load_split("test")
    images = x[: a.n, None].astype(np.float32) / 255
    res = compare(a.models, images, a.blocks, a.threads)
    print(f"batch 1, {a.threads} thread(s), {a.blocks} blocks of {a.n} images taking turns; median per block (ms):")
    for p, v in res.items():
        print(f"  {p}: median {statistics.median(v):.3f} ms (blocks: {' '.join(f'{b:.3f}' for b in v)})")


if __name__ == "__main__":
    main()
