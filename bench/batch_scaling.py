"""Scaling of `fashioncat_predict` over cores: the same catalogue with 1 worker and with 2 (and more), in one run.

    .venv/bin/python bench/batch_scaling.py                    # 1,500 photos, workers 1 and 2, 3 rounds
    .venv/bin/python bench/batch_scaling.py --n 600 --rounds 1 --workers 1 2 --json /tmp/scaling.json

The photos are made by the catalogue renderer (`fashioncat.photos.catalogue_photo`, from real Fashion-MNIST test
images), then resized to a long side drawn log-uniformly from 100-2,400 px (median ~490: thumbnails to zoom views)
and saved as JPEG, PNG or WebP (a third each), in a temporary folder (or `--folder`, kept and reused). Each round runs the real command (`fashioncat_predict FOLDER --out X.jsonl --workers N`) once
per worker count, alternating, and times it from start to exit (pool start-up and output included); the outputs of
every run must be identical, byte for byte. The machine's load average is recorded before each run: on a shared
machine, compare the best round and look at the spread. The CPU time of each run (the command and its pool, from
getrusage) per photo shows the work the pool adds, whatever else the machine is doing, and CPU time over wall time
the cores the run actually got: when other work holds the cores, more workers cannot get more of them.
"""

import argparse
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fashioncat.photos import catalogue_photo

KINDS = ("jpeg", "png", "webp")
SAVE = {"jpeg": ("JPEG", {"quality": 85}), "png": ("PNG", {}), "webp": ("WEBP", {"quality": 80})}
CLI = "from fashioncat.batch import predict_main\npredict_main()\n"  # what the console script runs


def test_images(n: int) -> np.ndarray:
    "n Fashion-MNIST test images (uint8 28x28), read with the serving stack only (no torch)."
    import gzip

    for d in [os.environ.get("FASHIONCAT_DATA"), ROOT / "data", "/usr/share/datasets/fashion-mnist"]:
        for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
            p = Path(d or "/nonexistent") / name
            if p.exists():
                raw = (gzip.open if name.endswith(".gz") else open)(p, "rb").read()
                return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    sys.exit("Fashion-MNIST test images not found (FASHIONCAT_DATA, ./data or /usr/share/datasets/fashion-mnist)")


def make_photo(x: np.ndarray, k: int, lo: int = 100, hi: int = 2400) -> tuple[bytes, str, int]:
    "A catalogue photo of `x` resized to a long side log-uniform in [lo, hi], in one of `KINDS`: (bytes, kind, side)."
    rng = np.random.default_rng(k)
    kind, side = KINDS[k % 3], round(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    im = Image.open(io.BytesIO(catalogue_photo(x, "png", seed=k)))
    s = side / max(im.size)
    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.BILINEAR)
    fmt, kw = SAVE[kind]
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue(), kind, side


def make_catalogue(folder: Path, n: int, **kw) -> dict:
    "n photos in `folder` (100 a sub-folder); returns what was made."
    xs = test_images(min(n, 10_000))
    sizes, nbytes = [], 0
    for k in range(n):
        data, kind, side = make_photo(xs[k % len(xs)], k, **kw)
        p = folder / f"{k // 100:04d}" / f"{k:06d}.{kind}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        sizes.append(side)
        nbytes += len(data)
    return {
        "photos": n,
        "long_side_px": [min(sizes), int(np.median(sizes)), max(sizes)],
        "mb": round(nbytes / 2**20, 1),
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run_cli(folder: Path, out: Path, workers: int, batch_size: int, model: str | None) -> tuple[float, float]:
    "Wall time and CPU time (the process and its pool) of one `fashioncat_predict` run (a fresh output)."
    out.unlink(missing_ok=True)
    script = out.parent / "fashioncat_predict"
    script.write_text(CLI)
    cmd = [sys.executable, str(script), str(folder), "--out", str(out), "--workers", str(workers)]
    cmd += ["--batch_size", str(batch_size), "--quiet"] + (["--model", model] if model else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    t0, ru = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=3600)
    dt, ru2 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode:
        sys.exit(f"fashioncat_predict failed:\n{r.stderr[-3000:]}")
    return dt, ru2.ru_utime + ru2.ru_stime - ru.ru_utime - ru.ru_stime


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1500, help="photos in the catalogue")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3, help="runs per worker count (alternating)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--model", help="ONNX model (default: the committed INT8 model)")
    p.add_argument("--folder", help="keep the catalogue here and reuse it on the next run (default: a temporary one)")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "batch_scaling.json"))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fashioncat-scaling-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        photos = Path(a.folder) if a.folder else tmp / "photos"
        stamp = photos / "catalogue.json"
        if stamp.exists() and json.loads(stamp.read_text())["photos"] == a.n:
            made = json.loads(stamp.read_text())
        else:
            made = make_catalogue(photos, a.n)
            stamp.write_text(json.dumps(made))
        print(
            f"catalogue: {made['photos']} photos (JPEG/PNG/WebP, long side {made['long_side_px'][0]}-"
            f"{made['long_side_px'][2]} px, median {made['long_side_px'][1]}), {made['mb']} MB, "
            f"made in {time.perf_counter() - t0:.0f} s"
        )
        runs, first = {w: [] for w in a.workers}, None
        for rnd in range(a.rounds):
            for w in a.workers:
                la = loadavg()
                dt, cpu = run_cli(photos, tmp / f"out{w}.jsonl", w, a.batch_size, a.model)
                text = (tmp / f"out{w}.jsonl").read_bytes()
                first = first or text
                if text != first:
                    sys.exit(f"the output with {w} workers differs from the first run's")
                runs[w].append(
                    {
                        "seconds": round(dt, 3),
                        "photos_per_s": round(a.n / dt, 1),
                        "cpu_ms_per_photo": round(1000 * cpu / a.n, 2),
                        "cores_used": round(cpu / dt, 2),
                        "loadavg_before": la,
                    }
                )
                print(
                    f"round {rnd + 1}, {w} worker(s): {dt:.2f} s, {a.n / dt:.1f} photos/s, {1000 * cpu / a.n:.2f} CPU ms/photo, "
                    f"{cpu / dt:.2f} cores used "
                    f"(load average before: {la[0]:.2f})"
                )
    best = {w: max(r["photos_per_s"] for r in rs) for w, rs in runs.items()}
    spread = {w: [min(r["photos_per_s"] for r in rs), max(r["photos_per_s"] for r in rs)] for w, rs in runs.items()}
    base = best[a.workers[0]]
    res = {
        "what": "fashioncat_predict FOLDER --out X.jsonl --workers N, wall time from start to exit",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "catalogue": made,
        "batch_size": a.batch_size,
        "outputs_identical": True,
        "runs": {str(w): rs for w, rs in runs.items()},
        "best_photos_per_s": {str(w): v for w, v in best.items()},
        "spread_photos_per_s": {str(w): v for w, v in spread.items()},
        "speedup_best": {str(w): round(v / base, 2) for w, v in best.items()},
    }
    for w in a.workers:
        print(
            f"{w} worker(s): best {best[w]:.1f} photos/s (spread {spread[w][0]:.1f}-{spread[w][1]:.1f}), "
            f"{best[w] / base:.2f}x"
        )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"written: {a.json}")
    return res


if __name__ == "__main__":
    main()
