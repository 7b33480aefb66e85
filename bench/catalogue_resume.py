"""A whole synthetic catalogue categorised, interrupted twice (kill -9, then Ctrl-C) and resumed: nothing lost, nothing doubled.

    .venv/bin/python bench/catalogue_resume.py                       # 100,000 photos in /tmp/catalogue
    .venv/bin/python bench/catalogue_resume.py --n 2000 --json /tmp/resume.json

1. Makes `--n` small catalogue photos (the catalogue renderer, `fashioncat.photos.catalogue_photo`, from real
   Fashion-MNIST test images, each with its own seed; JPEG/PNG/WebP in turn, the renderer's own sizes, ~70-770 px) in
   `--folder` (kept: a rerun reuses it).
2. Runs `fashioncat_predict FOLDER --out results.jsonl --workers W` and kills it with SIGKILL once about a third of the
   photos have rows; runs the same command again and stops it with SIGINT (Ctrl-C) at about two thirds; runs it a
   third time to the end.
3. Checks the results: one row per photo, no path twice, every photo of the folder there, and 500 random rows equal
   to what the engine answers for those photos in this process. Prints and writes counts and rates (JSON).
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch_scaling import CLI, KINDS, loadavg, test_images

from fashioncat.batch import categorise, find_images, read_results
from fashioncat.photos import catalogue_photo
from fashioncat.serving import Engine, Settings

# Ctrl-C's KeyboardInterrupt even when this script runs in the background, where the shell makes children ignore SIGINT
SIGINT_AS_A_TERMINAL = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


def _make(args) -> int:
    folder, ks, xs = args
    for k in ks:
        kind = KINDS[k % 3]
        data = catalogue_photo(xs[k % len(xs)], kind, seed=k)
        p = folder / f"{k // 1000:03d}" / f"{k:06d}.{kind}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return len(ks)


def make_catalogue(folder: Path, n: int, procs: int) -> float:
    "The catalogue in `folder` (reused when its stamp says it has `n` photos); seconds spent making it."
    stamp = folder / "catalogue.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("photos") == n:
        return 0.0
    t0, xs = time.perf_counter(), test_images(10_000)
    parts = [(folder, range(i, min(n, i + 1000)), xs) for i in range(0, n, 1000)]
    with ProcessPoolExecutor(procs) as ex:
        done = sum(ex.map(_make, parts))
    stamp.write_text(json.dumps({"photos": done}))
    return time.perf_counter() - t0


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run(folder: Path, out: Path, workers: int, stop_at: int | None, sig: int | None) -> dict:
    "One run of the command; with `stop_at`, send `sig` once the output has that many rows."
    script = out.parent / "fashioncat_predict"
    script.write_text(SIGINT_AS_A_TERMINAL + CLI)
    cmd = [sys.executable, str(script), str(folder), "--out", str(out), "--workers", str(workers), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    before, la, t0 = lines(out), loadavg(), time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while stop_at and proc.poll() is None and lines(out) < stop_at:
            time.sleep(0.2)
        if stop_at and proc.poll() is None:
            proc.send_signal(sig)
        err = proc.communicate(timeout=7200)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    dt = time.perf_counter() - t0
    after = lines(out)
    time.sleep(1)  # the kernel kills the pool's workers with their parent (PR_SET_PDEATHSIG): check none is left
    orphans = [p for p in Path("/proc").glob("[0-9]*") if _is_worker_of(p, script)]
    summary = err.strip().splitlines()[-1] if err.strip() else ""
    return {
        "signal": signal.Signals(sig).name if stop_at else None,
        "returncode": proc.returncode,
        "rows_before": before,
        "rows_after": after,
        "new_rows": after - before,
        "seconds": round(dt, 2),
        "rows_per_s": round((after - before) / dt, 1),
        "loadavg_before": la,
        "orphan_workers": len(orphans),
        "last_line": summary,
    }


def _is_worker_of(proc: Path, script: Path) -> bool:
    try:
        return str(script) in proc.joinpath("cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--folder", default="/tmp/catalogue")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--check", type=int, default=500, help="random rows compared with the engine's own answer")
    p.add_argument("--json", default=str(ROOT / "bench" / "results" / "catalogue_resume.json"))
    a = p.parse_args(argv)
    folder, work = Path(a.folder), Path(a.folder + "-run")
    folder.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    made = make_catalogue(folder, a.n, a.workers)
    files = find_images([folder])
    assert len(files) == a.n, f"{folder} holds {len(files)} photos, not {a.n}: remove it and rerun"
    print(f"catalogue: {a.n} photos in {folder}" + (f" (made in {made:.0f} s)" if made else " (reused)"))
    out = work / "results.jsonl"
    out.unlink(missing_ok=True)
    runs = [
        run(folder, out, a.workers, a.n // 3, signal.SIGKILL),
        run(folder, out, a.workers, 2 * a.n // 3, signal.SIGINT),
        run(folder, out, a.workers, None, None),
    ]
    for r in runs:
        print(
            f"run ({r['signal'] or 'to the end'}): {r['new_rows']} new rows in {r['seconds']} s ({r['rows_per_s']}/s), "
            f"exit {r['returncode']}, orphan workers {r['orphan_workers']}; {r['last_line']}"
        )
    rows = list(read_results(out))
    paths = [r["path"] for r in rows]
    engine = Engine.from_settings(Settings())
    sample = random.Random(0).sample(rows, min(a.check, len(rows)))
    fresh = categorise(engine, [r["path"] for r in sample])
    same = sum(json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True) for x, y in zip(sample, fresh))
    res = {
        "photos": a.n,
        "workers": a.workers,
        "catalogue_made_s": round(made, 1),
        "runs": runs,
        "rows": len(rows),
        "unique_paths": len(set(paths)),
        "missing": len(set(files) - set(paths)),
        "errors": sum("error" in r for r in rows),
        "needs_review": sum(bool(r.get("needs_review")) for r in rows),
        "sample_checked": len(sample),
        "sample_identical": same,
        "model_version": rows[0]["model_version"] if rows else None,
        "categorised_after_kill_s": round(sum(r["seconds"] for r in runs), 1),
    }
    ok = res["rows"] == res["unique_paths"] == a.n and not res["missing"] and same == len(sample)
    res["nothing_lost_or_doubled"] = ok
    print(
        f"results: {res['rows']} rows, {res['unique_paths']} photos, {res['missing']} missing, {res['errors']} errors; "
        f"{same}/{len(sample)} sampled rows identical to a fresh answer -> {'OK' if ok else 'FAILED'}"
    )
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
        print(f"written: {a.json}")
    if not ok:
        sys.exit(1)
    return res


if __name__ == "__main__":
    main()
