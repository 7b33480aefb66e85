"""Latency of `prepare` on 1-megapixel shop-photo JPEGs, this tree's beside another commit's, in one run on one core.

    OMP_NUM_THREADS=1 .venv/bin/python bench/prepare_latency.py              # this tree against the prepare before shop-photo extraction
    .venv/bin/python bench/prepare_latency.py --ref HEAD~3 --n 300 --json /tmp/latency.json

The photos are `fashioncat.catalogue` shop photos of test images (every kind in turn), resized to about one megapixel
(1155x866) and saved as JPEG quality 90. The two versions of `prepare` take turns on the same photos, so the machine's
load weighs on both alike. Each call is timed twice: its CPU time (`time.process_time`, this process on one core:
what a call costs, whatever else the machine runs) and its wall-clock time; p50, p95 and max in milliseconds.
"""

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from catalogue_benchmark import prepare_at

from fashioncat.catalogue import SHOP_KINDS, shop_photo
from fashioncat.data import load_split


def megapixel_jpeg(x, kind: str, seed: int) -> bytes:
    im = ImageOps.exif_transpose(Image.open(io.BytesIO(shop_photo(x, kind, seed)))).convert("RGB").resize((1155, 866))
    b = io.BytesIO()
    im.save(b, "JPEG", quality=90)
    return b.getvalue()


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--ref",
        default="547d33d",
        help="the other commit whose fashioncat/photos.py is timed (default: main before shop-photo extraction was merged)",
    )
    p.add_argument("--n", type=int, default=200, help="photos (each timed once per version)")
    p.add_argument("--json", default=str(ROOT / "results/prepare_latency.json"))
    a = p.parse_args(argv)
    x, _ = load_split("test")
    photos = [megapixel_jpeg(x[i], SHOP_KINDS[i % len(SHOP_KINDS)], i) for i in range(a.n)]
    preps = {a.ref: prepare_at(a.ref), "this tree": prepare_at("here")}
    for f in preps.values():
        f(photos[0])  # imports and first-call costs
    ms = {k: [] for k in preps}
    cpu = {k: [] for k in preps}
    for ph in photos:
        for k, f in preps.items():
            c0, t0 = time.process_time(), time.perf_counter()
            f(ph)
            ms[k].append(1000 * (time.perf_counter() - t0))
            cpu[k].append(1000 * (time.process_time() - c0))
    load = os.getloadavg()[0]

    def pct(v):
        return {
            "p50": round(float(np.percentile(v, 50)), 2),
            "p95": round(float(np.percentile(v, 95)), 2),
            "max": round(max(v), 2),
        }

    out = {
        "n": a.n,
        "photo": "1155x866 JPEG q90",
        "threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "load_average_1min": round(load, 2),
        "cpu_ms": {k: pct(v) for k, v in cpu.items()},
        "wall_ms": {k: pct(v) for k, v in ms.items()},
    }
    print(f"prepare on {a.n} one-megapixel JPEGs (load average {load:.1f} on {os.cpu_count()} cores)\n")
    print("| prepare | CPU p50 (ms) | CPU p95 (ms) | wall p50 (ms) | wall p95 (ms) |\n|---|---|---|---|---|")
    for k in preps:
        c, w = out["cpu_ms"][k], out["wall_ms"][k]
        print(f"| {k} | {c['p50']} | {c['p95']} | {w['p50']} | {w['p95']} |")
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwritten: {a.json}")
    return out


if __name__ == "__main__":
    main()
